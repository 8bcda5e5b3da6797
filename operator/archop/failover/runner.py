"""The one monitor tick and the one phase runner. Used by the monitor daemon and, wired to loopback instances
or a model, by the tests.

`tick` is the sequence of one tick of handlers/monitor.py: decide, act (a failover through `run_failover`),
write the status. Its effects are injected, so the property test (tests/failover_model.py) runs this very
sequence over a simulated tier, not a copy of it.

`run_failover` writes the record to the status BEFORE each phase acts, so an operator killed mid-way resumes
at the same phase; every action is idempotent, so running a phase again is safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from archop.failover import decide as d
from archop.failover import report
from archop.failover.act import Executor, NothingListens
from archop.failover.lease import LeaseClock
from archop.health.model import DbObservation, Instance
from archop.spec import DatabaseSpec

log = logging.getLogger(__name__)

# A failure of these is collected and the phase goes on: fencing or detaching an instance that does not
# answer is expected in a failover, and a slot must never hold up a leader change. Everything else (a required
# Stop, Promote, SetSyncStandbys, labels) must succeed, or the phase raises and is run again on the next tick.
BEST_EFFORT: tuple[type, ...] = (d.Fence, d.Detach, d.Repoint, d.Unfence, *d.SLOT_ACTIONS)
# Steady-state upkeep whose failure is logged and retried next tick, without skipping the actions after it.
MAINTENANCE_BEST_EFFORT: tuple[type, ...] = (d.Fence, d.DeletePod, d.Repoint, d.Rebuild, *d.SLOT_ACTIONS)
# A wait this short (a lease running out) is slept through instead of ending the tick.
SLEEP_THROUGH = 8.0

Observe = Callable[[DbObservation, frozenset[str]], Awaitable[DbObservation]]
Persist = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Effects:
    """What the runner needs from the world. observe(previous, skip) re-observes the tier, keeping the
    previous probes of the pods in skip (an unreachable old leader would cost a connect timeout each time);
    persist(patch) merges into the Architecture's status."""

    observe: Observe
    persist: Persist
    executor: Executor
    emit: Callable[[d.Note], None]
    # The old leader's lease (failover/lease.py). None only where no leader holds a lease (a model).
    lease: LeaseClock | None
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)


@dataclass(frozen=True)
class Result:
    outcome: d.Outcome
    record: d.FailoverRecord  # the last record the runner worked on
    leader: str | None  # status.currentLeader afterwards
    message: str
    obs: DbObservation


async def run_failover(record: d.FailoverRecord, state: d.State, obs: DbObservation, spec: DatabaseSpec,
                       fx: Effects, clock: Callable[[], float] = time.time) -> Result:
    """Run the phases of `record` in order until it completes, is called off, or has to wait."""
    leader = state.current_leader
    current = record
    while True:
        now = clock()
        expiry = None
        if fx.lease is not None and current.phase is d.PROMOTING:
            expiry = fx.lease.expiry(current.from_, current.started_at, now)
        plan = d.phase_plan(current, obs, spec, state, now, expiry)
        if plan.outcome is d.Outcome.WAIT:
            for note in plan.notes:
                fx.emit(note)
            await fx.persist({"failover": current.to_status(), "targetLeader": current.to})
            if plan.retry_at is not None and plan.retry_at - now <= SLEEP_THROUGH:
                log.info("%s", plan.message)
                await fx.sleep(max(0.0, plan.retry_at - clock()))
                obs = await fx.observe(obs, frozenset({current.from_}))
                continue
            return Result(d.Outcome.WAIT, current, leader, plan.message, obs)
        # Persist first: the phase with its (possibly re-chosen) target, and what moves with it.
        if plan.before is not None:
            current = plan.before
        elif plan.after is not None:
            current = replace(current, to=plan.after.to)
        pre: dict[str, Any] = {"failover": current.to_status(), "targetLeader": current.to}
        if plan.current_leader:
            pre["currentLeader"] = leader = plan.current_leader
        if plan.last_seen is not None:
            pre["leaderLastSeen"] = plan.last_seen.to_status()
        await fx.persist(pre)
        detached: list[float] = []
        failed = await fx.executor.run_each(plan.actions, best_effort=BEST_EFFORT,
                                            done=_detach_timer(_lease_members(state, current.from_), detached,
                                                               clock))
        if failed:
            log.info("%s: best-effort actions failed: %s", current.phase, "; ".join(
                f"{type(a).__name__}({getattr(a, 'pod', '')}): {type(e).__name__}" for a, e in failed))
        if current.phase is d.FENCING and plan.after is not None:
            if fx.lease is not None:
                # The failsafe needs every follower of the lease streaming: it runs out from the moment the
                # first of them stopped replying for good, that is when its detach finished.
                fx.lease.mark_fenced(current.from_, current.started_at, detached[0] if detached else clock())
            tried = [a for a in plan.actions if isinstance(a, d.Stop) and a.pod == current.from_]
            stop_failed = [(a, e) for a, e in failed if isinstance(a, d.Stop)]
            if tried and (not stop_failed or all(_refused_and_proven(a, e, obs) for a, e in stop_failed)):
                plan = replace(plan, after=replace(plan.after, stopped=True))
        for note in plan.notes:
            fx.emit(note)
        if plan.outcome is d.Outcome.ABORTED:
            await fx.persist({"failover": None, "currentLeader": leader, "targetLeader": leader})
            obs = await fx.observe(obs, frozenset())
            return Result(d.Outcome.ABORTED, current, leader, plan.message, obs)
        if plan.outcome is d.Outcome.DONE:
            await fx.persist({"failover": None, "lastFailover": d.finished(current, clock()),
                              "currentLeader": current.to, "targetLeader": current.to})
            obs = await fx.observe(obs, frozenset({current.from_}))
            return Result(d.Outcome.DONE, current, current.to,
                          f"{current.reason}: {current.from_} -> {current.to} completed", obs)
        assert plan.after is not None
        current = plan.after
        # Fresh positions for the next phase (the followers are detached now); the old leader keeps its last
        # probe unless this is a planned switchover where it is alive.
        obs = await fx.observe(obs, frozenset() if current.planned else frozenset({current.from_}))


async def with_lease_session(obs: DbObservation, session_to: str | None, lease: LeaseClock,
                             renew: Callable[[str], Awaitable[bool]]) -> DbObservation:
    """The observation with what this process' lease session says (DbObservation.lease_session_lost).
    `session_to` is the pod the session holds an established connection to: when that pod refused the probe,
    or the API says its postgres is going or gone (the pod deleted or replaced, its container not running),
    the session is tried once more (a renewal over that very connection), so that the tick that sees it
    also knows whether the connection broke (decide.refusal_proves_down): a failover started by the pod's
    loss can then prove the postmaster dead at its Stop instead of waiting for the lease to run out. No new
    connection is opened for this: only an established one breaking is evidence. A pod whose node is
    NotReady is left alone: its session would only time out, which proves nothing and costs the tick."""
    if session_to is not None and _worth_a_try(obs.get(session_to)) and not lease.session_lost(session_to):
        await renew(session_to)
    lost = frozenset(n for n in obs.instances if lease.session_lost(n))
    return replace(obs, lease_session_lost=lost)


def _worth_a_try(inst: Instance | None) -> bool:
    """Whether the lease session to this instance may have broken since its last renewal: its probe was
    refused, or its pod is missing, being deleted, replaced (not Running yet) or its container is not
    running, on a node that is not known to be down."""
    if inst is None or inst.pod is None:
        return True
    if inst.probe.refused:
        return True
    pod = inst.pod
    return pod.node_ready is not False and (pod.deleting or pod.phase != "Running" or not pod.running)


def _refused_and_proven(stop: d.Action, error: BaseException, obs: DbObservation) -> bool:
    """A Stop refused at the old leader's address counts as stopped only when the followers bear it out (in
    the observation the phase was planned from, before they were detached)."""
    assert isinstance(stop, d.Stop)
    if not isinstance(error, NothingListens):
        return False
    inst = obs.get(stop.pod)
    address = stop.address or (inst.pod.ip if inst is not None and inst.pod is not None else None)
    return d.refusal_proves_down(obs, stop.pod, address)


def _detach_timer(members: frozenset[str], detached: list[float],
                  clock: Callable[[], float]) -> Callable[[d.Action], None]:
    """An Executor `done` hook that appends to `detached` when each detach of a lease member completes."""

    def done(action: d.Action) -> None:
        if isinstance(action, d.Detach) and action.pod in members:
            detached.append(clock())

    return done


def _lease_members(state: d.State, leader: str) -> frozenset[str]:
    """The followers the old leader's failsafe counts (archop.followers), as last seen healthy."""
    seen = state.seen(leader)
    return frozenset(seen.lease_members or ()) if seen is not None else frozenset()


# ---------------------------------------------------------------------------------------------- one tick


StatusFields = Callable[[DbObservation, str | None, str, d.FailoverRecord | None], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class TickEffects:
    """What one monitor tick needs from the world. handlers/monitor.py wires them to the cluster; the property
    test wires them to its model. What only the real monitor does (logs, events, metrics, its lease session)
    stays behind these effects, so that everything the decisions depend on runs here, once."""

    observe: Callable[[], Awaitable[DbObservation]]  # the whole tier, every instance probed
    reobserve: Observe  # between a failover's phases (Effects.observe)
    persist: Persist  # merge into the status (and into what the caller's next `status` overlays)
    executor: Executor
    emit: Callable[[d.Note], None]
    # Renew a pod's leader lease now (False: it could not); the caller keeps renewing it between ticks.
    vouch: Callable[[str], Awaitable[bool]]
    # Stop renewing every pod but this one (None: all), waiting out a renewal in flight.
    withdraw_unless: Callable[[str | None], Awaitable[None]]
    # Remove the one-shot switchover annotation: its target leads.
    drop_switchover: Callable[[], Awaitable[None]]
    # The rest of the last status write (conditions, other tiers), given (obs, leader, message, record of
    # the failover still in flight); merged over the database tier's fields.
    status_fields: StatusFields
    # Keep the in-process timers. Called as soon as decide() returns: a tick failing later (an action, a
    # status write) must still start the timers the next tick's decision counts on.
    remember: Callable[[d.Memory], None]
    # Before a failover's phases run; True: this tick starts it (the monitor ends its lease session then,
    # so the leader being replaced gets no more renewals), False: it resumes one in flight.
    failover_begins: Callable[[d.FailoverRecord, bool], Awaitable[None]]
    failover_done: Callable[[d.FailoverRecord], None]  # the leader change completed (events, metrics)
    maintenance_failed: Callable[[list[str]], None]  # best-effort upkeep that failed (retried next tick)
    lease: LeaseClock | None  # Effects.lease
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)
    clock: Callable[[], float] = field(default=time.time)


@dataclass(frozen=True)
class TickResult:
    step: d.Step
    leader: str | None  # status.currentLeader as written
    obs: DbObservation  # the last observation (after a failover: the one after its last phase)


def vouch_for(step: d.Step) -> str | None:
    """The pod whose lease may still be renewed after this decision: the healthy leader, or the target of a
    failover that already sent its Promote. Anything else (a failover starting, a leader in doubt) ends the
    renewals at once, before anything is acted on."""
    if step.kind is d.StepKind.STEADY:
        return step.current_leader
    if step.kind is d.StepKind.FAILOVER and step.record is not None and step.record.promote_sent:
        return step.record.to
    return None


async def tick(status: Mapping[str, Any], annotations: Mapping[str, str], spec: DatabaseSpec,
               memory: d.Memory, fx: TickEffects) -> TickResult:
    """One monitor tick: observe, decide, act, write the status.

    `status` is what this process knows of the Architecture's status: the live one overlaid with its own last
    writes (a status read back may lag behind them). Any exception ends the tick; the caller logs it and the
    next tick decides again from the status (a failover resumes at the phase its record names)."""
    state = d.State.from_status(dict(status), dict(annotations))
    obs = await fx.observe()
    step = d.decide(obs, state, spec, fx.clock(), memory)
    fx.remember(step.memory)
    await fx.withdraw_unless(vouch_for(step))
    for note in step.notes:
        fx.emit(note)
    leader, message = step.current_leader, step.message
    ran: Result | None = None
    if step.last_seen is not None and step.persist_first:
        # The widened synchronous guard is in the status before synchronous_standby_names changes.
        await fx.persist({"leaderLastSeen": step.last_seen.to_status()})
    if step.kind is d.StepKind.STEADY and leader is not None:
        await fx.vouch(leader)
    if step.kind is d.StepKind.BOOTSTRAP:
        await fx.persist({"currentLeader": leader, "targetLeader": leader})
        await fx.executor.run_all(step.actions)
    elif step.kind is d.StepKind.FAILOVER and step.record is not None:
        await fx.failover_begins(step.record, state.failover is None)
        phases = Effects(observe=fx.reobserve, persist=fx.persist, executor=fx.executor, emit=fx.emit,
                         lease=fx.lease, sleep=fx.sleep)
        ran = await run_failover(step.record, state, obs, spec, phases, clock=fx.clock)
        leader, message, obs = ran.leader, ran.message, ran.obs
        if ran.outcome is d.Outcome.DONE:
            fx.failover_done(ran.record)
    else:
        errors = await fx.executor.run_all(step.actions, best_effort=MAINTENANCE_BEST_EFFORT)
        if errors:
            fx.maintenance_failed(errors)
        if leader is not None and annotations.get(d.SWITCHOVER_ANNOTATION) == leader:
            await fx.drop_switchover()
    # run_failover writes status.failover on every way out: the record when it waits, None once the change
    # is done or called off. Without a failover step there is none in the status this process sees.
    in_flight = ran.record if ran is not None and ran.outcome is d.Outcome.WAIT else None
    # leaderLastSeen only from a tick that saw the leader healthy (report.database_status says why).
    last_seen = step.last_seen if step.kind is d.StepKind.STEADY else None
    patch = report.database_status(obs, leader, spec.instances, last_seen)
    patch["targetLeader"] = in_flight.to if in_flight is not None else leader
    patch.update(await fx.status_fields(obs, leader, message, in_flight))
    await fx.persist(patch)
    return TickResult(step, leader, obs)
