"""The failover decisions, as pure functions: observations + current status -> the next step.

No I/O here. health/ observes, failover/act.py performs the returned actions, handlers/monitor.py persists the
failover record BEFORE acting so a killed operator resumes at the same phase (each action is idempotent).
See docs/failover.md for the state machine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from archop import names, reasons
from archop.health.model import UNREACHABLE, DbObservation, Instance, Probe
from archop.spec import DatabaseSpec

# Phases of status.failover.phase.
FENCING, PROMOTING, REWIRING = "Fencing", "Promoting", "Rewiring"
PHASES = (FENCING, PROMOTING, REWIRING)
# Planned leader changes: the old leader is healthy, so we wait for the target to catch up instead of
# cutting the followers off.
SWITCHOVER_REASONS = (reasons.SWITCHOVER_REQUESTED, reasons.ROLLING_UPDATE, reasons.SCALE_DOWN)
# A follower that cannot follow the leader's timeline for this long is restarted (the start script rewinds).
STUCK_SECONDS = 10.0
# A non-leader whose postgres was killed (exit 137, OOM) after running at least this long and now waits in
# CrashLoopBackOff gets its pod deleted, which restarts it at once. Failing at start exits 1 and keeps the
# kubelet's back-off; so does a process killed again and again within seconds.
KILLED_AFTER_SECONDS = 10.0
SWITCHOVER_ANNOTATION = f"{names.GROUP}/switchover-to"


def iso(ts: float) -> str:
    """RFC 3339 with milliseconds: failover durations are about a second, so whole seconds would blur them."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------------------------------------- state


@dataclass(frozen=True)
class FailoverRecord:
    """status.failover: the in-flight failover or switchover."""

    phase: str
    from_: str
    to: str
    reason: str
    started_at: str

    @property
    def planned(self) -> bool:
        return self.reason in SWITCHOVER_REASONS

    def to_status(self) -> dict[str, str]:
        return {"phase": self.phase, "from": self.from_, "to": self.to, "reason": self.reason,
                "startedAt": self.started_at}

    @classmethod
    def from_status(cls, raw: dict | None) -> FailoverRecord | None:
        if not raw or raw.get("phase") not in PHASES or not raw.get("to"):
            return None
        return cls(phase=raw["phase"], from_=raw.get("from") or "", to=raw["to"],
                   reason=raw.get("reason") or reasons.LEADER_UNREACHABLE,
                   started_at=raw.get("startedAt") or "")


@dataclass(frozen=True)
class State:
    """What the Architecture's status (and metadata) says; the only state that survives a restart."""

    current_leader: str | None = None
    failover: FailoverRecord | None = None
    sync_members: tuple[str, ...] = ()  # followers that were sync/quorum at the last leader observation
    leader_lsn: int | None = None  # the leader's last known WAL position
    switchover_request: str | None = None  # the archop.io/switchover-to annotation

    @classmethod
    def from_status(cls, status: dict | None, annotations: dict | None = None) -> State:
        from archop.health.model import parse_lsn

        status = status or {}
        leader = status.get("currentLeader") or None
        members: list[str] = []
        leader_lsn = None
        for row in status.get("instances") or []:
            if row.get("syncState") in ("sync", "quorum"):
                members.append(row.get("name"))
            if row.get("name") == leader and row.get("role") == names.LEADER:
                leader_lsn = parse_lsn(row.get("receivedLsn"))
        return cls(
            current_leader=leader,
            failover=FailoverRecord.from_status(status.get("failover")),
            sync_members=tuple(sorted(m for m in members if m)),
            leader_lsn=leader_lsn,
            switchover_request=(annotations or {}).get(SWITCHOVER_ANNOTATION) or None,
        )


@dataclass(frozen=True)
class Memory:
    """In-process timers. Losing them (operator restart) only restarts the waits, which is safe."""

    leader_lost_since: float | None = None
    # The leader's pod as last seen healthy: (name, uid, postgres restarts). A new uid or more restarts
    # since then means its postmaster died, whatever the pod looks like now.
    leader_pod: tuple[str, str | None, int] | None = None
    # Set after taking over an expired operator Lease: the previous holder's last renewal. Until this
    # process has seen the leader healthy, the leader may have been lost at any moment since then, so the
    # wait for leaderTimeoutSeconds counts from there (the witness rule still applies).
    unwatched_since: float | None = None
    stuck_since: dict[str, float] = field(default_factory=dict)
    seen_markers: frozenset[str] = frozenset()


# ---------------------------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class SetRole:
    pod: str
    role: str


@dataclass(frozen=True)
class Fence:
    """Make a primary read-only and end its client sessions (checkpoint first when it is a clean demotion)."""

    pod: str
    checkpoint: bool = False


@dataclass(frozen=True)
class Unfence:
    pod: str


@dataclass(frozen=True)
class Detach:
    """primary_conninfo = '': stop the WAL receiver so the received LSN is final and the old leader loses
    its synchronous acknowledgements."""

    pod: str


@dataclass(frozen=True)
class Promote:
    pod: str


@dataclass(frozen=True)
class Repoint:
    pod: str
    leader: str


@dataclass(frozen=True)
class SetSyncStandbys:
    pod: str
    value: str


@dataclass(frozen=True)
class DeletePod:
    pod: str


Action = SetRole | Fence | Unfence | Detach | Promote | Repoint | SetSyncStandbys | DeletePod


@dataclass(frozen=True)
class Note:
    """An event to emit (reason from archop.reasons)."""

    reason: str
    message: str
    warning: bool = False


# ---------------------------------------------------------------------------------------------- leader health


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    failed: bool
    lost_since: float | None
    reason: str
    message: str


def pod_lost(inst: Instance | None, seen: tuple[str, str | None, int] | None) -> str | None:
    """Why this instance's postmaster is certainly down (the API server, the kubelet or the pod's own network
    stack says so), or None. A readiness failure or a timeout is not enough: a frozen postmaster fails
    pg_isready and times out while its sessions may live on."""
    pod = inst.pod if inst else None
    if inst is None or pod is None:
        return "its pod is gone"
    if pod.deleting:
        return "its pod is being deleted"
    if pod.node_ready is False:
        return f"its node {pod.node} is NotReady"
    if pod.phase != "Running":
        return f"its pod is {pod.phase or 'not running'}"
    if not pod.running:
        return "its postgres container is not running"
    if inst.probe.refused:
        return "nothing listens on its Postgres port (connection refused)"
    if seen is not None and seen[0] == inst.name:
        if seen[1] and pod.uid and pod.uid != seen[1]:
            return "its pod was replaced"
        if pod.restarts > seen[2]:
            return "its postgres container restarted"
    return None


def leader_verdict(obs: DbObservation, leader: str, timeout: float, now: float,
                   lost_since: float | None, pod_lost_timeout: float | None = None,
                   seen: tuple[str, str | None, int] | None = None) -> Verdict:
    """Is the leader FAILED? When it has been unreachable (or not a primary) and a witness agrees:
    - its pod is certainly down (pod_lost): after pod_lost_timeout (default: timeout);
    - otherwise after timeout, when it reports recovery itself or a reachable follower of it has lost its
      WAL stream."""
    inst = obs.get(leader)
    probe = inst.probe if inst else UNREACHABLE
    if probe.is_primary:
        return Verdict(True, False, None, reasons.TIER_READY, f"leader {leader} is a reachable primary")
    if not obs.reachable:
        # We cannot tell a dead leader from our own isolation: never act on that.
        return Verdict(False, False, None, reasons.OPERATOR_CUT_OFF,
                       "the operator reaches no database instance; not failing over")
    since = now if lost_since is None else lost_since
    waited = now - since
    what = "unreachable" if not probe.reachable else "answering but in recovery"
    reason = reasons.LEADER_NOT_PRIMARY if probe.reachable else reasons.LEADER_UNREACHABLE
    down = pod_lost(inst, seen)
    if down is not None:
        limit = timeout if pod_lost_timeout is None else min(timeout, pod_lost_timeout)
        if waited >= limit:
            return Verdict(False, True, since, reasons.LEADER_POD_LOST,
                           f"leader {leader} {what} for {waited:.1f}s and {down}")
    if waited < timeout:
        return Verdict(False, False, since, reason, f"leader {leader} {what} for {waited:.1f}s")
    witness = None
    if probe.reachable:
        witness = "it reports being in recovery"
    else:
        for f in _followers_of(obs, leader):
            age = f.probe.receiver_msg_age
            if f.probe.receiver_status != "streaming" or age is None or age >= timeout:
                witness = f"follower {f.name} lost its WAL stream"
                break
    if witness is None:
        return Verdict(False, False, since, reason,
                       f"leader {leader} {what} for {waited:.1f}s, but its followers still stream from it")
    return Verdict(False, True, since, reason, f"leader {leader} {what} for {waited:.1f}s and {witness}")


def _followers_of(obs: DbObservation, leader: str) -> list[Instance]:
    hosts = {obs.host(leader), obs.rw_host}
    return [i for i in obs.instances.values()
            if i.name != leader and i.probe.is_follower and i.probe.primary_host in hosts]


# ---------------------------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class Choice:
    name: str | None
    why: str


def _received(i: Instance) -> int:
    p = i.probe
    return p.received_lsn if p.received_lsn is not None else (p.replay_lsn or 0)


def choose_candidate(obs: DbObservation, exclude: Iterable[str], spec: DatabaseSpec, state: State) -> Choice:
    """The follower to promote: reachable, ready, highest received LSN, then replay LSN, then name.
    Refuses a candidate that may miss acknowledged commits (lag / synchronous quorum) unless allowDataLoss."""
    skip = set(exclude)
    eligible = [i for i in obs.instances.values()
                if i.name not in skip and i.probe.is_follower and i.pod is not None and not i.pod.gone
                and i.pod.ready]
    if not eligible:
        return Choice(None, "no reachable, ready follower to promote")
    best = sorted(eligible, key=lambda i: (-_received(i), -(i.probe.replay_lsn or 0), i.name))[0]
    if spec.failover.allow_data_loss:
        return Choice(best.name, f"{best.name} has the most WAL (allowDataLoss)")
    members = set(state.sync_members) - skip
    if spec.synchronous and members:
        # ANY k of n: every acknowledged commit is on k of the n; with n-k+1 of them reachable, one has it.
        k = max(1, min(spec.sync_replicas, len(members)))
        need = len(members) - k + 1
        have = [i for i in eligible if i.name in members]
        if len(have) < need:
            return Choice(None, f"synchronous mode: {len(have)} of {len(members)} sync followers "
                                f"reachable, {need} needed so one surely has every acknowledged commit")
        return Choice(best.name, f"{best.name} has the most WAL among {len(have)} synchronous followers")
    if state.leader_lsn is not None:
        lag = state.leader_lsn - _received(best)
        if lag > spec.failover.max_lag_bytes:
            return Choice(None, f"best follower {best.name} is {lag} bytes behind the leader's last known "
                                f"position (maxLagBytes {spec.failover.max_lag_bytes})")
    return Choice(best.name, f"{best.name} has the most WAL")


def sync_standby_names(streaming: Iterable[str], spec: DatabaseSpec) -> str:
    """synchronous_standby_names for the leader: only followers that stream now, so commits never wait for a
    standby that is not there; '' (asynchronous) when none streams or sync mode is off."""
    members = sorted(set(streaming))
    if not spec.synchronous or not members:
        return ""
    k = max(1, min(spec.sync_replicas, len(members)))
    return f"ANY {k} ({', '.join(chr(34) + m + chr(34) for m in members)})"


# ---------------------------------------------------------------------------------------------- the tick


@dataclass(frozen=True)
class Step:
    """What to do this tick. `record` is the failover record after the step (persist it before acting)."""

    kind: str  # bootstrap | steady | waiting | blocked | cutoff | failover
    current_leader: str | None
    record: FailoverRecord | None
    memory: Memory
    message: str
    actions: tuple[Action, ...] = ()
    notes: tuple[Note, ...] = ()


def decide(obs: DbObservation, state: State, spec: DatabaseSpec, now: float, memory: Memory) -> Step:
    """The next step for the whole tier. A failover in flight always resumes first."""
    if state.failover is not None:
        rec = state.failover
        return Step("failover", state.current_leader, rec, memory,
                    f"{rec.reason}: {rec.phase} {rec.from_} -> {rec.to}")
    if not state.current_leader:
        return _bootstrap(obs, memory)
    leader = state.current_leader
    lost_since = memory.leader_lost_since
    if lost_since is None and memory.leader_pod is None and memory.unwatched_since is not None:
        lost_since = min(now, memory.unwatched_since)
    verdict = leader_verdict(obs, leader, spec.failover.leader_timeout_seconds, now, lost_since,
                             spec.failover.pod_lost_timeout_seconds, memory.leader_pod)
    memory = replace(memory, leader_lost_since=verdict.lost_since)
    if verdict.healthy:
        pod = obs.instances[leader].pod
        if pod is not None:
            memory = replace(memory, leader_pod=(leader, pod.uid, pod.restarts))
        return _steady(obs, state, spec, now, memory)
    if verdict.reason == reasons.OPERATOR_CUT_OFF:
        return Step("cutoff", leader, None, memory, verdict.message)
    if not verdict.failed:
        return Step("waiting", leader, None, memory, verdict.message)
    notes = [Note(reasons.LEADER_UNREACHABLE, verdict.message, warning=True)]
    if not spec.failover.enabled:
        return Step("blocked", leader, None, memory, f"{verdict.message}; automatic failover is disabled",
                    notes=(*notes, Note(reasons.FAILOVER_BLOCKED, "automatic failover is disabled", True)))
    choice = choose_candidate(obs, {leader}, spec, state)
    if choice.name is None:
        msg = f"{verdict.message}; no failover: {choice.why}"
        return Step("blocked", leader, None, memory, msg,
                    notes=(*notes, Note(reasons.FAILOVER_BLOCKED, choice.why, True)))
    record = FailoverRecord(FENCING, leader, choice.name, verdict.reason, iso(now))
    notes.append(Note(reasons.FAILOVER_STARTED, f"failover {leader} -> {choice.name}: {choice.why}", True))
    return Step("failover", leader, record, replace(memory, leader_lost_since=None), verdict.message,
                notes=tuple(notes))


def _bootstrap(obs: DbObservation, memory: Memory) -> Step:
    """No leader recorded yet: adopt a running primary (status lost, volumes kept), else ordinal 0."""
    if not obs.instances:
        return Step("waiting", None, None, memory, "no database pod yet")
    primaries = sorted((i for i in obs.instances.values() if i.probe.is_primary),
                       key=lambda i: (-(i.probe.timeline or 0), -i.probe.position, i.name))
    if primaries:
        leader, why = primaries[0].name, "it is the running primary"
    else:
        leader, why = min(obs.instances.values(), key=lambda i: i.ordinal).name, "bootstrap leader"
    inst = obs.instances[leader]
    actions: tuple[Action, ...] = ()
    if inst.pod is not None and inst.pod.role != names.LEADER:
        actions = (SetRole(leader, names.LEADER),)
    return Step("bootstrap", leader, None, memory, f"{leader} chosen as leader: {why}", actions,
                (Note(reasons.LEADER_ELECTED, f"{leader} is the leader ({why})"),))


# ---------------------------------------------------------------------------------------------- steady state


def _steady(obs: DbObservation, state: State, spec: DatabaseSpec, now: float, memory: Memory) -> Step:
    """Healthy leader: keep labels, followers' upstream, synchronous_standby_names and rejoins right; start
    planned switchovers and rolling-update restarts."""
    leader_name = state.current_leader or ""
    leader = obs.instances[leader_name]
    actions: list[Action] = []
    notes: list[Note] = []
    if leader.pod is not None and leader.pod.role != names.LEADER:
        actions.append(SetRole(leader_name, names.LEADER))
    if leader.probe.read_only:
        actions.append(Unfence(leader_name))
        notes.append(Note(reasons.LEADER_UNFENCED, f"leader {leader_name} was read-only (fenced); lifted"))
    leader_host = obs.host(leader_name)
    leader_ip = leader.pod.ip if leader.pod is not None else None
    # Only our instances: pg_basebackup's WAL sender (application_name "pg_basebackup") streams too, and
    # naming it in synchronous_standby_names would hang every commit once the clone finishes.
    streaming_here = {r.name for r in leader.probe.replicas
                      if r.state == "streaming" and r.name in obs.instances}
    stuck = dict(memory.stuck_since)
    seen = set(memory.seen_markers)
    for inst in sorted(obs.instances.values(), key=lambda i: i.name):
        back_off = inst.pod.back_off_after_kill if inst.pod is not None and not inst.pod.deleting else None
        if inst.name != leader_name and back_off is not None and back_off >= KILLED_AFTER_SECONDS:
            # The kubelet doubles the back-off with every restart (10 s, 20 s, 40 s ...): an old leader
            # killed twice would rejoin minutes late. A new pod starts at once.
            actions.append(DeletePod(inst.name))
            notes.append(Note(reasons.RESTART_BACK_OFF_SKIPPED,
                              f"{inst.name}'s postgres was killed after running {back_off:.0f}s and waits in "
                              "CrashLoopBackOff; deleting the pod so it restarts now", True))
            continue
        if inst.name == leader_name or not inst.probe.reachable:
            continue
        p = inst.probe
        deleting = inst.pod is None or inst.pod.deleting
        if p.is_primary:
            # An old leader came back as a primary: keep it out of traffic, stop writes, restart it to rewind.
            if inst.pod is not None and inst.pod.role != names.FENCED:
                actions.append(SetRole(inst.name, names.FENCED))
            if not p.read_only:
                actions.append(Fence(inst.name))
            if not deleting:
                actions.append(DeletePod(inst.name))
                notes.append(Note(reasons.REJOIN_STARTED,
                                  f"{inst.name} answers as a primary but {leader_name} leads; restarting "
                                  "it to rejoin as a follower (pg_rewind)", True))
            continue
        is_streaming = p.streaming and inst.name in streaming_here
        if p.primary_host != leader_host or _stale_address(p, leader_ip, is_streaming):
            actions.append(Repoint(inst.name, leader_name))
        if is_streaming and inst.pod is not None and inst.pod.role != names.FOLLOWER:
            actions.append(SetRole(inst.name, names.FOLLOWER))
        # A follower on an older timeline that cannot stream from the leader diverged: restart it to rewind.
        behind_tl = (p.timeline or 0) < (leader.probe.timeline or 0)
        if p.primary_host == leader_host and not p.streaming and behind_tl and not deleting:
            first = stuck.setdefault(inst.name, now)
            if now - first >= STUCK_SECONDS:
                actions.append(DeletePod(inst.name))
                notes.append(Note(reasons.FOLLOWER_STUCK, f"{inst.name} cannot follow timeline "
                                  f"{leader.probe.timeline}; restarting it to rewind", True))
                stuck.pop(inst.name)
        else:
            stuck.pop(inst.name, None)
        marker = _marker(p.rejoin_marker, inst.name)
        if marker and is_streaming and p.rejoin_marker not in seen:
            seen.add(p.rejoin_marker or "")
            reason = reasons.FOLLOWER_REJOINED if marker == "rewind" else reasons.REJOIN_BY_BASE_BACKUP
            notes.append(Note(reason, f"{inst.name} rejoined as a follower of {leader_name} by {marker}",
                              warning=marker != "rewind"))
    want = sync_standby_names(streaming_here, spec)
    if want != leader.probe.sync_standby_names:
        actions.append(SetSyncStandbys(leader_name, want))
        notes.append(Note(reasons.SYNC_STANDBYS_UPDATED, f"synchronous_standby_names = '{want}'"
                          + ("" if want or not spec.synchronous else " (no follower streams: asynchronous)")))
    memory = replace(memory, stuck_since=stuck, seen_markers=frozenset(seen))
    planned = _planned_change(obs, state, spec, now, streaming_here)
    if isinstance(planned, FailoverRecord) and not actions:
        note = Note(reasons.SWITCHOVER_STARTED,
                    f"switchover {planned.from_} -> {planned.to} ({planned.reason})")
        return Step("failover", leader_name, planned, memory, note.message, notes=(*notes, note))
    if isinstance(planned, DeletePod) and not actions:
        actions.append(planned)
        notes.append(Note(reasons.POD_UPDATED, f"deleting {planned.pod} to run the new revision"))
    msg = planned if isinstance(planned, str) else f"leader {leader_name} healthy"
    return Step("steady", leader_name, None, memory, msg, tuple(actions), tuple(notes))


def _stale_address(p: Probe, leader_ip: str | None, streaming: bool) -> bool:
    """primary_conninfo pins the leader's pod IP (hostaddr) next to its DNS name, because cluster DNS keeps
    serving a restarted pod's old IP for up to TTL + cache (60 s on kind). Re-point when the pinned IP is not
    the leader's, or when a follower without one does not stream."""
    if leader_ip is None:
        return False
    if p.primary_hostaddr is not None:
        return p.primary_hostaddr != leader_ip
    return not streaming


def _marker(text: str | None, pod: str) -> str | None:
    """'method=rewind pod=N-db-0 at=...' -> 'rewind' when it is about this pod."""
    fields = dict(part.split("=", 1) for part in (text or "").split() if "=" in part)
    return fields.get("method") if fields.get("pod") == pod else None


def _planned_change(obs: DbObservation, state: State, spec: DatabaseSpec, now: float,
                    streaming: set[str]) -> FailoverRecord | DeletePod | str | None:
    """Switchover request, scale-down past the leader, rolling update; only when every pod is settled."""
    leader = state.current_leader or ""
    followers = [i for i in obs.instances.values() if i.name != leader]
    settled = all(i.pod is not None and not i.pod.deleting and i.name in streaming for i in followers)
    request = spec.switchover_to or state.switchover_request
    target: str | None = None
    reason = ""
    if request and request != leader:
        if request not in streaming:
            return f"switchover to {request} waits: it is not a streaming follower of {leader}"
        target, reason = request, reasons.SWITCHOVER_REQUESTED
    elif obs.instances[leader].ordinal >= obs.desired:
        keep = [i for i in followers if i.ordinal < obs.desired and i.name in streaming]
        if not keep:
            return f"scale-down waits: no streaming follower below ordinal {obs.desired} to take over"
        target, reason = _most_advanced(keep), reasons.SCALE_DOWN
    elif settled:
        outdated = sorted(i.name for i in followers if i.pod is not None and not i.pod.up_to_date)
        if outdated:
            return DeletePod(outdated[0])
        lead_pod = obs.instances[leader].pod
        if lead_pod is not None and not lead_pod.up_to_date and followers:
            target, reason = _most_advanced(followers), reasons.ROLLING_UPDATE
    if target is None:
        return None
    return FailoverRecord(FENCING, leader, target, reason, iso(now))


def _most_advanced(insts: list[Instance]) -> str:
    return sorted(insts, key=lambda i: (-_received(i), -(i.probe.replay_lsn or 0), i.name))[0].name


# ---------------------------------------------------------------------------------------------- phases


@dataclass(frozen=True)
class PhasePlan:
    """The actions of the record's current phase and the record that follows (None: finished).
    `wait` set: nothing to do yet (switchover target catching up, or blocked), retry next tick."""

    actions: tuple[Action, ...]
    after: FailoverRecord | None
    notes: tuple[Note, ...] = ()
    wait: str | None = None
    current_leader: str | None = None  # set by Rewiring: status.currentLeader moves before its actions


def phase_plan(record: FailoverRecord, obs: DbObservation, spec: DatabaseSpec, state: State) -> PhasePlan:
    if record.phase == FENCING:
        return _fencing(record, obs)
    if record.phase == PROMOTING:
        return _promoting(record, obs, spec, state)
    return _rewiring(record, obs, spec)


def _fencing(record: FailoverRecord, obs: DbObservation) -> PhasePlan:
    old = obs.get(record.from_)
    actions: list[Action] = [SetRole(record.from_, names.FENCED)]  # out of rw before anything else
    if old is not None and old.probe.is_primary:
        actions.append(Fence(record.from_, checkpoint=record.planned))
    if not record.planned or old is None or not old.probe.is_primary:
        # Unplanned: freeze every follower's received LSN and cut the old leader's synchronous acks.
        actions += [Detach(i.name) for i in sorted(obs.instances.values(), key=lambda i: i.name)
                    if i.name != record.from_ and i.probe.is_follower and i.probe.primary_host]
    how = "read-only, sessions ended" if len(actions) > 1 and isinstance(actions[1], Fence) else "unreachable"
    note = Note(reasons.LEADER_FENCED, f"{record.from_} removed from {names.LEADER} traffic ({how})", True)
    return PhasePlan(tuple(actions), replace(record, phase=PROMOTING), (note,))


def _promoting(record: FailoverRecord, obs: DbObservation, spec: DatabaseSpec, state: State) -> PhasePlan:
    target = obs.get(record.to)
    if target is not None and target.probe.is_primary:
        return PhasePlan((), replace(record, phase=REWIRING))
    old = obs.get(record.from_)
    if record.planned and old is not None and old.probe.is_primary:
        want = old.probe.current_lsn or 0
        if target is None or not target.probe.is_follower:
            return PhasePlan((), record, wait=f"switchover target {record.to} is not a reachable follower")
        if _received(target) < want:
            return PhasePlan((), record, wait=f"waiting for {record.to} to catch up "
                                              f"({want - _received(target)} bytes behind)")
    else:
        # Re-check with the receivers stopped: the final received LSNs decide.
        choice = choose_candidate(obs, {record.from_}, spec, state)
        if choice.name is None:
            return PhasePlan((), record, (Note(reasons.FAILOVER_BLOCKED, choice.why, True),), wait=choice.why)
        best = obs.instances[choice.name]
        if target is None or not target.probe.is_follower or _received(best) > _received(target):
            record = replace(record, to=choice.name)
    note = Note(reasons.FOLLOWER_PROMOTED, f"{record.to} promoted to leader")
    return PhasePlan((Promote(record.to),), replace(record, phase=REWIRING), (note,))


def _rewiring(record: FailoverRecord, obs: DbObservation, spec: DatabaseSpec) -> PhasePlan:
    new = obs.get(record.to)
    actions: list[Action] = [SetRole(record.from_, names.FENCED), SetRole(record.to, names.LEADER)]
    if new is not None and new.probe.read_only:
        actions.append(Unfence(record.to))
    others = sorted(i.name for i in obs.instances.values()
                    if i.name not in (record.from_, record.to) and i.probe.is_follower)
    actions += [Repoint(n, record.to) for n in others]
    if spec.synchronous:
        # Right after promotion nobody streams from the new leader yet: '' keeps writes from hanging; the
        # steady state names the followers as soon as they stream.
        streaming = [r.name for r in (new.probe.replicas if new else ())
                     if r.state == "streaming" and r.name in obs.instances]
        actions.append(SetSyncStandbys(record.to, sync_standby_names(streaming, spec)))
    notes = (
        Note(reasons.SERVICES_REWIRED, f"{names.LEADER} label moved {record.from_} -> {record.to}"),
        Note(reasons.FOLLOWERS_REPOINTED, f"{', '.join(others) or 'no follower'} now follow {record.to}"),
    )
    return PhasePlan(tuple(actions), None, notes, current_leader=record.to)


def finished(record: FailoverRecord, now: float) -> dict[str, Any]:
    """status.lastFailover for a completed record."""
    start = parse_iso(record.started_at) if record.started_at else now
    return {"from": record.from_, "to": record.to, "reason": record.reason, "startedAt": record.started_at,
            "finishedAt": iso(now), "durationSeconds": round(max(0.0, now - start), 3)}
