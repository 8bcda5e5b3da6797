"""The one phase runner: persist the failover record, then act. Used by the monitor daemon and, wired to
loopback instances or a model, by the tests.

A record is written to the status BEFORE each phase acts, so an operator killed mid-way resumes at the same
phase; every action is idempotent, so running a phase again is safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from archop.failover import decide as d
from archop.failover.act import Executor
from archop.failover.lease import LeaseClock
from archop.health.model import DbObservation
from archop.spec import DatabaseSpec

log = logging.getLogger(__name__)

# A failure of these is collected and the phase goes on: fencing or detaching an instance that does not
# answer is expected in a failover, and a slot must never hold up a leader change. Everything else (a required
# Stop, Promote, SetSyncStandbys, labels) must succeed, or the phase raises and is run again on the next tick.
BEST_EFFORT: tuple[type, ...] = (d.Fence, d.Detach, d.Repoint, d.Unfence, *d.SLOT_ACTIONS)
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
        failed = await fx.executor.run_each(plan.actions, best_effort=BEST_EFFORT)
        if failed:
            log.info("%s: best-effort actions failed: %s", current.phase, "; ".join(
                f"{type(a).__name__}({getattr(a, 'pod', '')}): {type(e).__name__}" for a, e in failed))
        if current.phase is d.FENCING and plan.after is not None:
            if fx.lease is not None:
                fx.lease.mark_fenced(current.from_, current.started_at, clock())
            tried = [a for a in plan.actions if isinstance(a, d.Stop) and a.pod == current.from_]
            if tried and not any(isinstance(a, d.Stop) for a, _ in failed):
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
