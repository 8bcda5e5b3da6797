"""The failover decisions, as pure functions: observations + current status -> the next step.

No I/O here. health/ observes, failover/act.py performs the returned actions, handlers/monitor.py persists the
failover record BEFORE acting so a killed operator resumes at the same phase (each action is idempotent).
See docs/failover.md for the state machine.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from archop import names, reasons
from archop.health.model import UNREACHABLE, DbObservation, Instance, Probe, format_lsn, parse_lsn
from archop.spec import DatabaseSpec


class Phase(StrEnum):
    """status.failover.phase."""

    FENCING = "Fencing"
    PROMOTING = "Promoting"
    REWIRING = "Rewiring"


FENCING, PROMOTING, REWIRING = Phase.FENCING, Phase.PROMOTING, Phase.REWIRING


class StepKind(StrEnum):
    BOOTSTRAP = "bootstrap"
    STEADY = "steady"
    WAITING = "waiting"
    BLOCKED = "blocked"
    CUTOFF = "cutoff"
    FAILOVER = "failover"


# Planned leader changes: the old leader is healthy, so we wait for the target to catch up instead of
# cutting the followers off.
SWITCHOVER_REASONS = (reasons.SWITCHOVER_REQUESTED, reasons.ROLLING_UPDATE, reasons.SCALE_DOWN,
                      reasons.LEADER_NODE_DRAINING)
# A follower that cannot follow the leader's timeline for this long is restarted (the start script rewinds).
STUCK_SECONDS = 10.0
# A non-leader whose postgres was killed (exit 137, OOM) after running at least this long and now waits in
# CrashLoopBackOff gets its pod deleted, which restarts it at once. Failing at start exits 1 and keeps the
# kubelet's back-off; so does a process killed again and again within seconds.
KILLED_AFTER_SECONDS = 10.0
# A follower that does not stream and needs WAL its leader no longer has (its slot is lost, or its position is
# older than the leader's oldest WAL segment) this long is rebuilt from a fresh base backup. The wait lets a
# follower that is just reconnecting show that it streams.
REBUILD_AFTER_SECONDS = 10.0
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

    phase: Phase
    from_: str
    to: str
    reason: str
    started_at: str
    # The old leader's postmaster is known to be down (the Fencing phase stopped it, or nothing listened at
    # its address): it acknowledges nothing, so promoting need not wait for its lease to run out.
    stopped: bool = False
    from_address: str | None = None  # the old leader's pod IP when it was last seen healthy
    # A Promote of `to` may have been sent (persisted before it is): from then on `to` stays the target,
    # nobody else is promoted and the change is never called off, since `to` may be a primary already.
    promote_sent: bool = False

    @property
    def planned(self) -> bool:
        return self.reason in SWITCHOVER_REASONS

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"phase": self.phase, "from": self.from_, "to": self.to, "reason": self.reason,
                               "startedAt": self.started_at}
        if self.stopped:
            out["oldLeaderStopped"] = True
        if self.from_address:
            out["fromAddress"] = self.from_address
        if self.promote_sent:
            out["promoteSent"] = True
        return out

    @classmethod
    def from_status(cls, raw: dict | None) -> FailoverRecord | None:
        if not raw or raw.get("phase") not in set(Phase) or not raw.get("to"):
            return None
        return cls(phase=Phase(raw["phase"]), from_=raw.get("from") or "", to=raw["to"],
                   reason=raw.get("reason") or reasons.LEADER_UNREACHABLE,
                   started_at=raw.get("startedAt") or "", stopped=bool(raw.get("oldLeaderStopped")),
                   from_address=raw.get("fromAddress") or None, promote_sent=bool(raw.get("promoteSent")))


_QUORUM = re.compile(r"^\s*(?:(ANY|FIRST)\s+)?(?:(\d+)\s*\((.*)\)|(.*))\s*$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class SyncQuorum:
    """synchronous_standby_names as a set: every acknowledged commit is on k of these members."""

    k: int
    members: tuple[str, ...]

    @property
    def need(self) -> int:
        """Reachable members needed so that one of them surely holds every acknowledged commit: with n-k+1
        of the n, at least one is among the k that acknowledged any given commit."""
        return len(self.members) - self.k + 1

    def render(self) -> str:
        return f"ANY {self.k} ({', '.join(chr(34) + m + chr(34) for m in self.members)})"

    def widen(self, other: SyncQuorum | None) -> SyncQuorum:
        """The guard while a change of synchronous_standby_names is applied: commits acknowledged under
        either list must be found, so the members of both count, with the smaller k."""
        if other is None:
            return self
        return SyncQuorum(min(self.k, other.k), tuple(sorted(set(self.members) | set(other.members))))

    @classmethod
    def parse(cls, text: str | None) -> SyncQuorum | None:
        """'ANY 1 ("a", "b")', 'FIRST 2 (a, b, c)', '2 (a, b)' or 'a, b' (FIRST 1); None when empty. FIRST k
        acknowledgements also come from k of the members, so the same count rule holds for it."""
        m = _QUORUM.match(text or "")
        if not m or not (text or "").strip():
            return None
        listed = m.group(3) if m.group(3) is not None else m.group(4)
        members = tuple(sorted({x.strip().strip('"') for x in listed.split(",") if x.strip().strip('"')}))
        if not members:
            return None
        k = int(m.group(2)) if m.group(2) else 1
        return cls(max(1, min(k, len(members))), members)


@dataclass(frozen=True)
class LeaderSnapshot:
    """status.leaderLastSeen: what the failover guards need to know about the leader, from the last tick
    that saw it as a healthy primary. A tick that cannot see the leader never overwrites it, so the
    decision taken after leaderTimeoutSeconds still knows which followers may hold acknowledged commits
    and how far the leader had written."""

    name: str
    lsn: int | None = None  # the leader's write position
    timeline: int | None = None
    quorum: SyncQuorum | None = None  # None: commits were not waiting for any standby
    at: str = ""
    # The followers its lease's failsafe counts (archop.followers on it): only these may be promoted while
    # it may still be alive. None: not known (never set).
    lease_members: tuple[str, ...] | None = None

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "at": self.at}
        if self.lsn is not None:
            out["lsn"] = format_lsn(self.lsn)
        if self.timeline is not None:
            out["timeline"] = self.timeline
        if self.quorum is not None:
            out["syncStandbys"] = list(self.quorum.members)
            out["syncQuorum"] = self.quorum.k
        if self.lease_members is not None:
            out["leaseMembers"] = list(self.lease_members)
        return out

    @classmethod
    def from_status(cls, raw: dict | None) -> LeaderSnapshot | None:
        if not raw or not raw.get("name"):
            return None
        members = tuple(sorted(m for m in raw.get("syncStandbys") or [] if m))
        quorum = SyncQuorum(max(1, min(int(raw.get("syncQuorum") or 1), len(members))), members) \
            if members else None
        lease = raw.get("leaseMembers")
        return cls(name=raw["name"], lsn=parse_lsn(raw.get("lsn")), timeline=raw.get("timeline"),
                   quorum=quorum, at=raw.get("at") or "",
                   lease_members=tuple(sorted(m for m in lease if m)) if lease is not None else None)


@dataclass(frozen=True)
class State:
    """What the Architecture's status (and metadata) says; the only state that survives a restart."""

    current_leader: str | None = None
    failover: FailoverRecord | None = None
    last_seen: LeaderSnapshot | None = None
    switchover_request: str | None = None  # the archop.io/switchover-to annotation

    def seen(self, leader: str | None) -> LeaderSnapshot | None:
        """The snapshot, when it is about this leader."""
        return self.last_seen if self.last_seen is not None and self.last_seen.name == leader else None

    @classmethod
    def from_status(cls, status: dict | None, annotations: dict | None = None) -> State:
        status = status or {}
        return cls(
            current_leader=status.get("currentLeader") or None,
            failover=FailoverRecord.from_status(status.get("failover")),
            last_seen=LeaderSnapshot.from_status(status.get("leaderLastSeen")),
            switchover_request=(annotations or {}).get(SWITCHOVER_ANNOTATION) or None,
        )


@dataclass(frozen=True)
class SeenPod:
    """The leader's pod as last seen healthy. A new uid or more restarts since then means its postmaster died,
    whatever the pod looks like now; the IP is where its old process may still answer."""

    name: str
    uid: str | None
    restarts: int
    ip: str | None = None


@dataclass(frozen=True)
class Memory:
    """In-process timers. Losing them (operator restart) only restarts the waits, which is safe."""

    leader_lost_since: float | None = None
    leader_pod: SeenPod | None = None
    # Set after taking over an expired operator Lease: the previous holder's last renewal. Until this
    # process has seen the leader healthy, the leader may have been lost at any moment since then, so the
    # wait for leaderTimeoutSeconds counts from there (the witness rule still applies).
    unwatched_since: float | None = None
    stuck_since: dict[str, float] = field(default_factory=dict)
    behind_since: dict[str, float] = field(default_factory=dict)  # followers that cannot catch up (rebuild)
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
class Stop:
    """The hard fence: shut the postmaster down and leave a fence marker on its volume, so that it can commit
    nothing more and its start script never brings it back as a primary on its own (it waits for the new
    leader and rewinds). `clean`: a fast shutdown, whose WAL senders first hand every connected follower all
    the WAL (a switchover's target); otherwise immediate (followers are detached already)."""

    pod: str
    clean: bool = False
    # Where the old process may still answer when its pod is gone or replaced (the IP it was seen healthy
    # at); None: the pod's current address.
    address: str | None = None
    # Required: the phase fails unless it is stopped. Not required (the leader did not answer at the last
    # observation): a try that, when it succeeds, spares the failover the wait for the lease to run out.
    required: bool = True


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
    # The newest timeline used anywhere in the tier: the promotion must take a newer one, or two leaders'
    # timelines share an ID (a follower that never saw the other's history would pick the same) and a
    # follower of the first can neither follow the second nor be rewound onto it.
    timeline_floor: int = 0


@dataclass(frozen=True)
class Repoint:
    pod: str
    leader: str
    # primary_slot_name: the follower's slot on `leader`, set only when the slot exists there (or was created
    # by an earlier action of the same plan): Postgres refuses to stream through a slot that does not exist.
    # None streams without a slot.
    slot: str | None = None


@dataclass(frozen=True)
class SetSyncStandbys:
    pod: str
    value: str


@dataclass(frozen=True)
class DeletePod:
    pod: str


@dataclass(frozen=True)
class CreateSlots:
    """Make sure these physical replication slots exist on `pod` (the leader) and hold WAL: create the missing
    ones (reserving WAL at once), recreate lost ones no WAL sender uses. Best effort everywhere: a follower
    only names its slot once the slot is seen (or was just created), so a missing slot blocks nothing."""

    pod: str
    slots: tuple[str, ...]


@dataclass(frozen=True)
class DropSlots:
    """Drop these archop slots on `pod` unless a WAL sender uses them: slots of instances that are no longer
    members (scale-down), and slots an instance kept from a time it led (they would pin its WAL)."""

    pod: str
    slots: tuple[str, ...]


@dataclass(frozen=True)
class SetSlotWalKeep:
    """max_slot_wal_keep_size on `pod` (ALTER SYSTEM + reload), on every instance so a promoted follower
    bounds its slots from its first moment as leader."""

    pod: str
    megabytes: int


@dataclass(frozen=True)
class Rebuild:
    """A follower that can never catch up by streaming: stop it with the rebuild marker; its start script
    then wipes PGDATA and takes a fresh base backup from the primary on rw. Decided only in the steady state,
    for a follower of a healthy leader."""

    pod: str


@dataclass(frozen=True)
class RenewLease:
    """Vouch for this instance's leader lease (failover/lease.py) now: right before it is promoted, so its
    agent finds the lease held the moment it becomes a primary, and when it is made the leader again."""

    pod: str


@dataclass(frozen=True)
class SetLeaseMembers:
    """archop.followers on the leader: the followers whose streaming keeps its lease (the failsafe)."""

    pod: str
    members: tuple[str, ...]


Action = (SetRole | Fence | Stop | Unfence | Detach | Promote | Repoint | SetSyncStandbys | DeletePod
          | SetLeaseMembers | RenewLease | CreateSlots | DropSlots | SetSlotWalKeep | Rebuild)
# Slot upkeep: never holds up a planned change (a slot must never block a leader change).
SLOT_ACTIONS = (CreateSlots, DropSlots, SetSlotWalKeep)


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


def pod_lost(inst: Instance | None, seen: SeenPod | None, refusal_proven: bool = True) -> str | None:
    """Why this instance's postmaster is certainly down (the API server, the kubelet or the pod's own network
    stack says so), or None. A readiness failure or a timeout is not enough: a frozen postmaster fails
    pg_isready and times out while its sessions may live on. A refused connection counts only when
    `refusal_proven` (refusal_proves_down: a NetworkPolicy enforcer that rejects can forge one)."""
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
    if inst.probe.refused and refusal_proven:
        return "nothing listens on its Postgres port (connection refused, and no follower streams from it)"
    if seen is not None and seen.name == inst.name:
        if seen.uid and pod.uid and pod.uid != seen.uid:
            return "its pod was replaced"
        if pod.restarts > seen.restarts:
            return "its postgres container restarted"
    return None


def leader_verdict(obs: DbObservation, leader: str, timeout: float, now: float,
                   lost_since: float | None, pod_lost_timeout: float | None = None,
                   seen: SeenPod | None = None) -> Verdict:
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
    address = inst.pod.ip if inst is not None and inst.pod is not None else None
    down = pod_lost(inst, seen, refusal_proves_down(obs, leader, address))
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


def refusal_proves_down(obs: DbObservation, leader: str, address: str | None) -> bool:
    """Whether a refused connection to `leader` at `address` proves its postmaster gone.

    A reset from the address is what a dead postmaster's pod sends, but a NetworkPolicy enforcer that rejects
    (kube-router answers with ICMP port-unreachable, which a client reads as "connection refused" too) sends
    the same to a live one. A postmaster's death ends every connection to it at once, and an enforcer that
    refuses new connections lets established ones live on. So the refusal is proof only when
    - the operator's own lease session to it (one established connection) worked and then broke, and
    - every other instance answers as a follower and none of them streams from the leader (by its pod's
      host, the rw Service or the address). An instance that does not answer might be streaming from it.
    Assumed (docs/failover.md): no enforcer or middlebox cuts established connections and forges refusals
    at the same time."""
    if leader not in obs.lease_session_lost:
        return False
    hosts = {obs.host(leader), obs.rw_host}
    for inst in obs.instances.values():
        # No pod, or the kubelet says its postgres container is not running: it streams from nobody.
        if inst.name == leader or inst.pod is None or inst.pod.phase != "Running" or not inst.pod.running:
            continue
        p = inst.probe
        if not p.is_follower:
            return False
        pinned = address is not None and p.primary_hostaddr == address
        if p.streaming and (p.primary_host in hosts or pinned):
            return False
    return True


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
    """How much WAL a follower holds. After a restart the receiver reports where it started streaming (a
    segment start), which may be behind what it replayed from its own pg_wal: the larger of the two."""
    p = i.probe
    return max(p.received_lsn or 0, p.replay_lsn or 0)


def _rank(i: Instance) -> tuple[int, int, int, str]:
    """Most WAL first. Positions only compare on one timeline: a follower left on an older timeline may show
    a higher LSN for WAL the others never had, so the newest timeline ranks first."""
    return (-(i.probe.timeline or 0), -_received(i), -(i.probe.replay_lsn or 0), i.name)


def choose_candidate(obs: DbObservation, exclude: Iterable[str], spec: DatabaseSpec, state: State,
                     members: frozenset[str] | None = None) -> Choice:
    """The follower to promote: reachable, ready, newest timeline, highest received LSN, then replay LSN,
    then name. Refuses a candidate that may miss acknowledged commits unless allowDataLoss:
    - the synchronous quorum of the leader's last healthy snapshot: enough of its members must answer that
      one of them surely has every acknowledged commit (and the best of all answering has at least as much);
    - otherwise (asynchronous) the lag behind the leader's last known position, at most maxLagBytes.
    members: only these may be promoted (the old leader's lease members, while it may still run)."""
    skip = set(exclude)
    eligible = sorted((i for i in obs.instances.values()
                       if i.name not in skip and i.probe.is_follower and i.pod is not None and not i.pod.gone
                       and i.pod.ready), key=_rank)
    if not eligible:
        return Choice(None, "no reachable, ready follower to promote")
    if members is not None:
        eligible = [i for i in eligible if i.name in members]
        if not eligible:
            return Choice(None, "no reachable follower is counted by the old leader's lease (status."
                                "leaderLastSeen.leaseMembers), and it may still run")
    best = eligible[0]
    if spec.failover.allow_data_loss:
        return Choice(best.name, f"{best.name} has the most WAL (allowDataLoss)")
    # The snapshot of the leader that is being replaced: the one named in skip.
    seen = next((s for s in (state.seen(n) for n in sorted(skip)) if s is not None), None)
    quorum = seen.quorum if seen is not None else None
    if quorum is not None:
        # A member without a WAL receiver that is still replaying (a restart) has not shown all it holds yet:
        # ranking now could put a follower lacking acknowledged commits first.
        unsettled = [i.name for i in eligible
                     if i.probe.receiver_status is None and i.probe.replay_settled is False]
        if unsettled:
            return Choice(None, f"waiting for {', '.join(unsettled)} to replay the WAL it holds before "
                                "comparing positions")
        have = [i for i in eligible if i.name in quorum.members]
        if len(have) < quorum.need:
            return Choice(None, f"synchronous quorum ANY {quorum.k} of {len(quorum.members)}: "
                                f"{len(have)} of its members reachable, {quorum.need} needed so one surely "
                                "has every acknowledged commit")
        return Choice(best.name, f"{best.name} has the most WAL; {len(have)} of {len(quorum.members)} "
                                 "synchronous members answered")
    if spec.sync_required:
        return Choice(None, "dataDurability required, but no synchronous standby list of the leader is known "
                            "(status.leaderLastSeen); refusing to guess")
    if seen is not None and seen.lsn is not None:
        lag = seen.lsn - _received(best)
        if lag > spec.failover.max_lag_bytes:
            return Choice(None, f"best follower {best.name} is {lag} bytes behind the leader's last known "
                                f"position (maxLagBytes {spec.failover.max_lag_bytes})")
    return Choice(best.name, f"{best.name} has the most WAL")


def want_quorum(obs: DbObservation, leader: str, streaming: Iterable[str],
                spec: DatabaseSpec) -> SyncQuorum | None:
    """The synchronous standbys the leader should wait for.
    - async: none;
    - required: every desired follower, whether it streams or not, so commits wait instead of degrading;
    - preferred: the followers that stream now, none when none does (writes never wait for an absent one)."""
    if not spec.synchronous:
        return None
    if spec.sync_required:
        members = list(followers_of_record(obs, leader, streaming))
    else:
        members = sorted(set(streaming))
    if not members:
        return None
    return SyncQuorum(max(1, min(spec.sync_replicas, len(members))), tuple(members))


def followers_of_record(obs: DbObservation, leader: str, streaming: Iterable[str]) -> tuple[str, ...]:
    """Every desired follower (streaming or not) and any instance streaming now: the followers the leader's
    lease counts, and in required mode its synchronous standbys."""
    desired = {i.name for i in obs.instances.values() if i.name != leader and i.ordinal < obs.desired}
    return tuple(sorted(desired | set(streaming)))


def render_quorum(q: SyncQuorum | None) -> str:
    return q.render() if q is not None else ""


def snapshot(leader: Instance, quorum: SyncQuorum | None, now: float,
             lease_members: tuple[str, ...] | None) -> LeaderSnapshot:
    return LeaderSnapshot(name=leader.name, lsn=leader.probe.current_lsn, timeline=leader.probe.timeline,
                          quorum=quorum, at=iso(now), lease_members=lease_members)


# ---------------------------------------------------------------------------------------------- slots


def member_slots(obs: DbObservation, leader: str) -> dict[str, str]:
    """The slot of every desired instance but the leader, by pod: what the leader keeps for its followers
    (after a failover the old leader is one of them: it rejoins)."""
    return {i.name: names.db_slot(i.name) for i in obs.instances.values()
            if i.name != leader and i.ordinal < obs.desired}


def slot_to_use(leader: Instance | None, slot: str | None) -> str | None:
    """primary_slot_name for a follower of `leader`: its slot when the leader has it and it still holds WAL;
    otherwise None (stream without one: a missing slot would stop the follower from streaming at all, a
    lost one protects nothing)."""
    row = leader.probe.slot(slot) if leader is not None and slot else None
    return slot if row is not None and not row.lost else None


def _slot_upkeep(obs: DbObservation, leader: Instance, spec: DatabaseSpec,
                 streaming: set[str]) -> list[Action]:
    """Slots for the members, none for anyone else, and their WAL bounded by max_slot_wal_keep_size. A lost
    slot is recreated only once its follower streams again (without it): while the follower does not, the
    lost slot is the evidence the rebuild decision reads, and it holds no WAL."""
    p = leader.probe
    members = member_slots(obs, leader.name)
    ours = set(members.values())
    actions: list[Action] = []
    rows = {r.name: r for r in p.slots}
    create = sorted(slot for pod, slot in members.items()
                    if slot not in rows or (rows[slot].lost and pod in streaming))
    if create:
        actions.append(CreateSlots(leader.name, tuple(create)))
    stale = tuple(sorted(r.name for r in p.slots
                         if r.name.startswith(names.SLOT_PREFIX) and r.name not in ours and not r.active))
    if stale:
        actions.append(DropSlots(leader.name, stale))
    keep = spec.slot_wal_keep_mb
    for inst in sorted(obs.instances.values(), key=lambda i: i.name):
        q = inst.probe
        if inst.name != leader.name and not q.is_follower:
            continue
        leftovers = tuple(sorted(r.name for r in q.slots
                                 if r.name.startswith(names.SLOT_PREFIX) and not r.active))
        if inst.name != leader.name and leftovers:
            actions.append(DropSlots(inst.name, leftovers))
        if q.slot_wal_keep_mb is not None and q.slot_wal_keep_mb != keep:
            actions.append(SetSlotWalKeep(inst.name, keep))
    return actions


def cannot_catch_up(inst: Instance, leader: Instance) -> str | None:
    """Why this follower can never catch up with `leader` by streaming, or None:
    - it needs WAL older than the oldest segment the leader still has (there is no archive to fetch it from).
      This holds whatever the receiver's status says: a receiver that asks for removed WAL shows `streaming`
      for a moment before every failure;
    - or its slot there is lost (past max_slot_wal_keep_size) and it does not stream."""
    oldest, have = leader.probe.oldest_wal_lsn, _received(inst)
    if oldest is not None and 0 < have < oldest:
        return (f"it needs WAL from {format_lsn(have)}, and {leader.name}'s oldest WAL starts at "
                f"{format_lsn(oldest)}")
    row = leader.probe.slot(names.db_slot(inst.name))
    if row is not None and row.lost and not inst.probe.streaming:
        return f"its replication slot {row.name} on {leader.name} is lost (past max_slot_wal_keep_size)"
    return None


# ---------------------------------------------------------------------------------------------- the tick


@dataclass(frozen=True)
class Step:
    """What to do this tick. `record` is the failover record after the step (persist it before acting)."""

    kind: StepKind
    current_leader: str | None
    record: FailoverRecord | None
    memory: Memory
    message: str
    actions: tuple[Action, ...] = ()
    notes: tuple[Note, ...] = ()
    # status.leaderLastSeen after this tick (None: unchanged). With persist_first it must be written BEFORE
    # the actions run: it widens the synchronous guard ahead of a change of synchronous_standby_names.
    last_seen: LeaderSnapshot | None = None
    persist_first: bool = False


def decide(obs: DbObservation, state: State, spec: DatabaseSpec, now: float, memory: Memory) -> Step:
    """The next step for the whole tier. A failover in flight always resumes first."""
    if state.failover is not None:
        rec = state.failover
        return Step(StepKind.FAILOVER, state.current_leader, rec, memory,
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
            memory = replace(memory, leader_pod=SeenPod(leader, pod.uid, pod.restarts, pod.ip))
        return _steady(obs, state, spec, now, memory)
    if verdict.reason == reasons.OPERATOR_CUT_OFF:
        return Step(StepKind.CUTOFF, leader, None, memory, verdict.message)
    rogue, rogue_notes = _rogues(obs, leader)
    if not verdict.failed:
        return Step(StepKind.WAITING, leader, None, memory, verdict.message, rogue, rogue_notes)
    notes = [Note(reasons.LEADER_UNREACHABLE, verdict.message, warning=True)]
    if not spec.failover.enabled:
        disabled = Note(reasons.FAILOVER_BLOCKED, "automatic failover is disabled", True)
        return Step(StepKind.BLOCKED, leader, None, memory,
                    f"{verdict.message}; automatic failover is disabled", rogue,
                    (*notes, *rogue_notes, disabled))
    choice = choose_candidate(obs, {leader}, spec, state)
    if choice.name is None:
        msg = f"{verdict.message}; no failover: {choice.why}"
        return Step(StepKind.BLOCKED, leader, None, memory, msg, rogue,
                    (*notes, *rogue_notes, Note(reasons.FAILOVER_BLOCKED, choice.why, True)))
    seen = memory.leader_pod if memory.leader_pod is not None and memory.leader_pod.name == leader else None
    pod_now = obs.instances[leader].pod if leader in obs.instances else None
    address = seen.ip if seen is not None else (pod_now.ip if pod_now is not None else None)
    record = FailoverRecord(FENCING, leader, choice.name, verdict.reason, iso(now), from_address=address)
    notes.append(Note(reasons.FAILOVER_STARTED, f"failover {leader} -> {choice.name}: {choice.why}", True))
    return Step(StepKind.FAILOVER, leader, record, replace(memory, leader_lost_since=None), verdict.message,
                notes=tuple(notes))


def _bootstrap(obs: DbObservation, memory: Memory) -> Step:
    """No leader recorded yet: adopt a running primary (status lost, volumes kept), else ordinal 0."""
    if not obs.instances:
        return Step(StepKind.WAITING, None, None, memory, "no database pod yet")
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
    return Step(StepKind.BOOTSTRAP, leader, None, memory, f"{leader} chosen as leader: {why}", actions,
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
    behind = dict(memory.behind_since)
    rebuild: list[Action] = []
    seen = set(memory.seen_markers)
    for inst in sorted(obs.instances.values(), key=lambda i: i.name):
        back_off = inst.pod.back_off_after_kill if inst.pod is not None and not inst.pod.deleting else None
        if inst.name != leader_name and back_off is not None and back_off >= KILLED_AFTER_SECONDS:
            # The kubelet doubles the back-off with every restart (10 s, 20 s, 40 s ...): an old leader
            # killed twice would rejoin minutes late. A new pod starts at once.
            actions.append(DeletePod(inst.name))
            skipped = (f"{inst.name}'s postgres was stopped or killed after running {back_off:.0f}s and "
                       "waits in CrashLoopBackOff; deleting the pod so it restarts now")
            notes.append(Note(reasons.RESTART_BACK_OFF_SKIPPED, skipped, True))
            continue
        if inst.name == leader_name or not inst.probe.reachable:
            continue
        p = inst.probe
        deleting = inst.pod is None or inst.pod.deleting
        if p.is_primary:
            rogue_actions, rogue_notes = _fence_rogue(inst, leader_name)
            actions += rogue_actions
            notes += rogue_notes
            continue
        is_streaming = p.streaming and inst.name in streaming_here
        slot = slot_to_use(leader, member_slots(obs, leader_name).get(inst.name))
        if (p.primary_host != leader_host or _stale_address(p, leader_ip, is_streaming)
                or p.primary_slot_name != slot):
            actions.append(Repoint(inst.name, leader_name, slot))
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
        # Only a member: an instance being scaled away is not worth a copy of the database.
        member = inst.ordinal < obs.desired
        why = cannot_catch_up(inst, leader) if p.primary_host == leader_host else None
        if why is not None and member and not deleting:
            first = behind.setdefault(inst.name, now)
            # One at a time: each rebuild copies the whole database from the leader.
            if now - first >= REBUILD_AFTER_SECONDS and not rebuild:
                own = names.db_slot(inst.name)
                # A fresh slot first: it holds the WAL from before the base backup starts.
                rebuild += [CreateSlots(leader_name, (own,)), Rebuild(inst.name)]
                notes.append(Note(reasons.REBUILD_STARTED, f"{inst.name} cannot catch up with {leader_name}: "
                                  f"{why}; rebuilding it from a fresh base backup", True))
                behind.pop(inst.name)
        else:
            behind.pop(inst.name, None)
        marker = _marker(p.rejoin_marker, inst.name)
        if marker and is_streaming and p.rejoin_marker not in seen:
            seen.add(p.rejoin_marker or "")
            if marker == "rebuild":
                notes.append(Note(reasons.FOLLOWER_REBUILT, f"{inst.name} was rebuilt from a base backup of "
                                                            f"{leader_name} and streams again"))
            else:
                reason = reasons.FOLLOWER_REJOINED if marker == "rewind" else reasons.REJOIN_BY_BASE_BACKUP
                notes.append(Note(reason, f"{inst.name} rejoined as a follower of {leader_name} by {marker}",
                                  warning=marker != "rewind"))
    configured = SyncQuorum.parse(leader.probe.sync_standby_names)
    want = want_quorum(obs, leader_name, streaming_here, spec)
    lease_now = leader.probe.lease_members
    # Without automatic failover nobody is promoted while the leader may run: nothing for its lease to guard.
    lease_want = followers_of_record(obs, leader_name, streaming_here) if spec.failover.enabled else ()
    # Narrowed to the followers in both lists while a change is applied (persisted first): a failover
    # meanwhile promotes, and counts as ending the failsafe, only the detach of a follower that the
    # leader's failsafe counts whichever list it holds.
    both = set(lease_now or ()) & set(lease_want)
    lease_guard = lease_now if lease_now == lease_want else tuple(sorted(both))
    last_seen = snapshot(leader, configured.widen(want) if configured else want, now, lease_guard)
    persist_first = want != configured or lease_now != lease_want
    if lease_now != lease_want:
        actions.append(SetLeaseMembers(leader_name, lease_want))
    if want != configured:
        text = render_quorum(want)
        actions.append(SetSyncStandbys(leader_name, text))
        notes.append(Note(reasons.SYNC_STANDBYS_UPDATED, f"synchronous_standby_names = '{text}'"
                          + ("" if text or not spec.synchronous else " (no follower streams: asynchronous)")))
    memory = replace(memory, stuck_since=stuck, behind_since=behind, seen_markers=frozenset(seen))
    actions += rebuild
    # Slot upkeep never holds up a planned change (the change's Rewiring creates the new leader's slots).
    slots = _slot_upkeep(obs, leader, spec, streaming_here)
    planned = _planned_change(obs, state, spec, now, streaming_here)
    if isinstance(planned, FailoverRecord) and not actions:
        note = Note(reasons.SWITCHOVER_STARTED,
                    f"switchover {planned.from_} -> {planned.to} ({planned.reason})")
        return Step(StepKind.FAILOVER, leader_name, planned, memory, note.message, notes=(*notes, note),
                    last_seen=last_seen)
    if isinstance(planned, DeletePod) and not actions:
        actions.append(planned)
        notes.append(Note(reasons.POD_UPDATED, f"deleting {planned.pod} to run the new revision"))
    # First: a slot must exist before a follower is pointed at it, and a rebuild's slot is fresh by then.
    actions[:0] = slots
    msg = planned if isinstance(planned, str) else f"leader {leader_name} healthy"
    return Step(StepKind.STEADY, leader_name, None, memory, msg, tuple(actions), tuple(notes), last_seen,
                persist_first)


def _fence_rogue(inst: Instance, leader: str) -> tuple[list[Action], list[Note]]:
    """A primary that is not the leader (an old leader back as a primary): keep it out of traffic and stop it
    with the fence marker; its container restarts and start.sh rewinds it onto the leader."""
    actions: list[Action] = []
    if inst.pod is not None and inst.pod.role != names.FENCED:
        actions.append(SetRole(inst.name, names.FENCED))
    if not inst.probe.read_only:
        actions.append(Fence(inst.name))
    if inst.pod is None or inst.pod.deleting:
        return actions, []
    actions.append(Stop(inst.name))
    return actions, [Note(reasons.REJOIN_STARTED, f"{inst.name} answers as a primary but {leader} leads; "
                                                  "stopping it to rejoin as a follower (pg_rewind)", True)]


def _rogues(obs: DbObservation, leader: str) -> tuple[tuple[Action, ...], tuple[Note, ...]]:
    """Fence every reachable primary but the leader, also while the leader itself is unhealthy: nobody but
    the operator promotes, so another primary is an old leader back (a crash restart after its agent stopped
    it) and must not take writes while the operator waits or is blocked."""
    actions: list[Action] = []
    notes: list[Note] = []
    for inst in sorted(obs.instances.values(), key=lambda i: i.name):
        if inst.name != leader and inst.probe.is_primary:
            a, n = _fence_rogue(inst, leader)
            actions += a
            notes += n
    return tuple(actions), tuple(notes)


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
    """Switchover request, scale-down past the leader, the leader's node cordoned (a drain), rolling update
    (only when every pod is settled)."""
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
    elif _cordoned(obs.instances[leader]):
        # `kubectl drain` cordons the node, then evicts its pods; the leader's PodDisruptionBudget refuses
        # the eviction while it leads, so the drain waits for this switchover instead of causing a failover.
        movable = [i for i in followers if i.name in streaming and i.pod is not None and not i.pod.deleting
                   and not i.pod.node_cordoned]
        if not movable:
            return (f"leader {leader}'s node is cordoned: no streaming follower on an uncordoned node to "
                    "hand over to; a drain waits")
        target, reason = _most_advanced(movable), reasons.LEADER_NODE_DRAINING
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
    """The follower a planned change hands over to: not on a cordoned node if it can be helped (it would be
    drained next), then the most WAL."""
    return sorted(insts, key=lambda i: (_cordoned(i), _rank(i)))[0].name


def _cordoned(i: Instance) -> bool:
    return i.pod is not None and i.pod.node_cordoned


# ---------------------------------------------------------------------------------------------- phases


class Outcome(StrEnum):
    """How a phase plan leaves the record."""

    NEXT = "next"  # run the actions, then go on with `after`
    WAIT = "wait"  # nothing to do yet (switchover target catching up, or no candidate): retry next tick
    DONE = "done"  # run the actions; the leader change is complete
    ABORTED = "aborted"  # run the actions; the change was called off and the old leader leads again


@dataclass(frozen=True)
class PhasePlan:
    """The actions of the record's current phase and what follows them."""

    outcome: Outcome
    actions: tuple[Action, ...]
    after: FailoverRecord | None  # the record once the actions ran (None: no record left)
    notes: tuple[Note, ...] = ()
    message: str = ""
    # Written to status BEFORE the actions: status.currentLeader moves at Rewiring (and back on abort),
    # status.leaderLastSeen describes the new leader's synchronous standbys before it takes writes.
    current_leader: str | None = None
    last_seen: LeaderSnapshot | None = None
    retry_at: float | None = None  # WAIT: nothing will change before this time (a lease running out)
    before: FailoverRecord | None = None  # the record to persist before the actions (None: `after`'s target)


def phase_plan(record: FailoverRecord, obs: DbObservation, spec: DatabaseSpec, state: State,
               now: float, lease_expiry: float | None = None) -> PhasePlan:
    """lease_expiry: when the old leader's lease has surely run out (failover/lease.py); None: not bounded
    by a lease (a model or test without one)."""
    if record.phase == FENCING:
        return _fencing(record, obs)
    if record.phase == PROMOTING:
        return _promoting(record, obs, spec, state, now, lease_expiry)
    return _rewiring(record, obs, spec, now)


def _fencing(record: FailoverRecord, obs: DbObservation) -> PhasePlan:
    old = obs.get(record.from_)
    actions: list[Action] = [SetRole(record.from_, names.FENCED)]  # out of rw before anything else
    alive = old is not None and old.probe.is_primary
    after = replace(record, phase=PROMOTING)
    if alive:
        actions.append(Fence(record.from_, checkpoint=record.planned))
    if not record.planned or not alive:
        ip = old.pod.ip if old is not None and old.pod is not None else None
        # Unplanned: freeze every follower's received LSN and cut the old leader's synchronous acks. The
        # first follower of the lease detached also starts the failsafe's run-out (failover/lease.py), so the
        # detaches come before a try at an address that may only time out.
        detach = [Detach(i.name) for i in sorted(obs.instances.values(), key=lambda i: i.name)
                  if i.name != record.from_ and i.probe.is_follower and i.probe.primary_host]
        if alive:
            actions += [Stop(record.from_), *detach]
        elif (old is not None and old.probe.refused and ip is not None and ip == record.from_address
              and refusal_proves_down(obs, record.from_, ip)):
            after = replace(after, stopped=True)  # nothing listens where it ran: its postmaster is gone
            actions += detach
        elif record.from_address and record.from_address != ip:
            # Its pod is gone or replaced, but the old process may still run at the old address.
            actions += [*detach, Stop(record.from_, address=record.from_address, required=False)]
        else:
            actions += detach
    how = "stopped" if any(isinstance(a, Stop) and a.required for a in actions) else (
        "read-only, sessions ended" if alive else "unreachable")
    note = Note(reasons.LEADER_FENCED, f"{record.from_} removed from {names.LEADER} traffic ({how})", True)
    return PhasePlan(Outcome.NEXT, tuple(actions), after, (note,))


def _promoting(record: FailoverRecord, obs: DbObservation, spec: DatabaseSpec, state: State, now: float,
               lease_expiry: float | None) -> PhasePlan:
    target = obs.get(record.to)
    if target is not None and target.probe.is_primary:
        return PhasePlan(Outcome.NEXT, (), replace(record, phase=REWIRING))
    if record.promote_sent:
        # The target may be a primary already (a status write after the Promote failed, or the operator
        # restarted): only it may be promoted, again, once it answers.
        if target is None or not target.probe.is_follower:
            return PhasePlan(Outcome.WAIT, (), record,
                             message=f"{record.to} may have been promoted already; waiting for it to answer")
        return _promote(record, obs, spec, [], timeline_floor(obs, state))
    old = obs.get(record.from_)
    old_alive = old is not None and old.probe.is_primary
    if record.planned and not old_alive and not record.stopped:
        # A planned change leaves the followers attached while the old leader answers, so its failsafe lease
        # (failover/lease.py) holds for as long as they stream from it, whoever can still reach it. It
        # stopped answering before its clean stop: go on as a failover, whose fencing detaches them, so that
        # the lease runs out from there. Found by the property test: promoting on the lease's operator term
        # alone let a client's BEGIN READ WRITE commit on the old leader beside the new one.
        why = f"{record.from_} stopped answering during the {record.reason} change: it goes on as a failover"
        unplanned = replace(record, phase=FENCING, reason=reasons.LEADER_UNREACHABLE)
        return PhasePlan(Outcome.NEXT, (), unplanned, (Note(reasons.LEADER_UNREACHABLE, why, True),),
                         message=why)
    actions: list[Action] = []
    if record.planned and old_alive:
        want = old.probe.current_lsn or 0  # type: ignore[union-attr]
        if target is None or not target.probe.is_follower:
            return _abort(record, obs, f"switchover target {record.to} is not a reachable follower")
        if _received(target) < want:
            return PhasePlan(Outcome.WAIT, (), record, message=f"waiting for {record.to} to catch up "
                                                               f"({want - _received(target)} bytes behind)")
        # Caught up while read-only. A clean stop now hands the target whatever a client still committed
        # with BEGIN READ WRITE, and nothing can commit on the old leader once the target is promoted.
        actions.append(Stop(record.from_, clean=True))
        return _promote(record, obs, spec, actions, timeline_floor(obs, state))
    if old_alive and not any(i.probe.is_primary for i in obs.instances.values() if i.name != record.from_):
        # Nobody was promoted (no Promote was sent) and the old leader answers as a primary again (a blip
        # shorter than its lease, or a crash restart): the cause is gone.
        return _abort(record, obs, f"{record.from_} answers as a primary again and nobody was promoted")
    # Re-check with the receivers stopped: the final received LSNs decide. While the old leader may still
    # run, only a follower its lease counts may be promoted (detaching that one ends the failsafe), and only
    # once the lease has surely run out.
    members = None
    if not record.stopped:
        seen = state.seen(record.from_)
        members = frozenset(seen.lease_members or ()) if seen is not None else frozenset()
        if lease_expiry is not None and now < lease_expiry:
            wait = f"waiting {lease_expiry - now:.1f}s for {record.from_}'s leader lease to run out"
            return PhasePlan(Outcome.WAIT, (), record, retry_at=lease_expiry, message=wait)
    choice = choose_candidate(obs, {record.from_}, spec, state, members)
    if choice.name is None:
        return PhasePlan(Outcome.WAIT, (), record, (Note(reasons.FAILOVER_BLOCKED, choice.why, True),),
                         message=choice.why)
    # The best eligible follower now, which may differ from the one chosen when the failover started (the
    # receivers are stopped now, and the lease and quorum rules may rule that one out).
    return _promote(replace(record, to=choice.name), obs, spec, actions, timeline_floor(obs, state))


def timeline_floor(obs: DbObservation, state: State) -> int:
    """The newest timeline any instance answers with now, or the last healthy leader had."""
    seen = [i.probe.timeline or 0 for i in obs.instances.values()]
    if state.last_seen is not None and state.last_seen.timeline:
        seen.append(state.last_seen.timeline)
    return max(seen, default=0)


def _promote(record: FailoverRecord, obs: DbObservation, spec: DatabaseSpec,
             actions: list[Action], floor: int = 0) -> PhasePlan:
    """Promote record.to. Before it: its synchronous standbys and lease members (ALTER SYSTEM works on a
    standby), so it acknowledges nothing asynchronously in required mode and its agent counts the right
    followers from its first moment as a primary; then its lease is renewed; and the record says that a
    Promote may have been sent."""
    to = record.to
    actions += [SetSyncStandbys(to, render_quorum(want_quorum(obs, to, (), spec))),
                SetLeaseMembers(to, followers_of_record(obs, to, ()) if spec.failover.enabled else ()),
                RenewLease(to), Promote(to, floor)]
    sent = replace(record, promote_sent=True)
    note = Note(reasons.FOLLOWER_PROMOTED, f"{to} promoted to leader")
    return PhasePlan(Outcome.NEXT, tuple(actions), replace(sent, phase=REWIRING), (note,), before=sent)


def _abort(record: FailoverRecord, obs: DbObservation, why: str) -> PhasePlan:
    """Call the change off: the old leader (a primary that answers) leads again, its followers follow it."""
    old = record.from_
    actions: list[Action] = [RenewLease(old), SetRole(old, names.LEADER), Unfence(old)]
    actions += [Repoint(i.name, old, slot_to_use(obs.get(old), names.db_slot(i.name)))
                for i in sorted(obs.instances.values(), key=lambda i: i.name)
                if i.name != old and i.probe.is_follower]
    note = Note(reasons.FAILOVER_ABORTED, f"{record.reason} {old} -> {record.to} called off: {why}", True)
    return PhasePlan(Outcome.ABORTED, tuple(actions), None, (note,), message=why, current_leader=old)


def _rewiring(record: FailoverRecord, obs: DbObservation, spec: DatabaseSpec, now: float) -> PhasePlan:
    new = obs.get(record.to)
    actions: list[Action] = [SetRole(record.from_, names.FENCED), SetRole(record.to, names.LEADER)]
    if new is not None and new.probe.read_only:
        actions.append(Unfence(record.to))
    others = sorted(i.name for i in obs.instances.values()
                    if i.name not in (record.from_, record.to) and i.probe.is_follower)
    # A promoted follower has no slots (Postgres copies none to a standby): create one for every other member,
    # the old leader's included, before the followers are pointed at them. Best effort: should it fail, the
    # steady state sees the slot missing and points the follower without one.
    slots = member_slots(obs, record.to)
    if slots:
        actions.append(CreateSlots(record.to, tuple(sorted(slots.values()))))
    actions += [Repoint(n, record.to, slots.get(n)) for n in others]
    streaming = [r.name for r in (new.probe.replicas if new else ())
                 if r.state == "streaming" and r.name in obs.instances]
    # required: every other desired instance is named at once, so the new leader acknowledges nothing before
    # a follower has it; preferred: only those streaming now ('' right after promotion: writes go on).
    quorum = want_quorum(obs, record.to, streaming, spec)
    if spec.synchronous or (new is not None and new.probe.sync_standby_names):
        actions.append(SetSyncStandbys(record.to, render_quorum(quorum)))
    # The new leader's lease counts every other desired instance from the start (set before the labels move).
    members = followers_of_record(obs, record.to, streaming) if spec.failover.enabled else ()
    actions[:0] = [RenewLease(record.to), SetLeaseMembers(record.to, members)]
    last_seen = snapshot(new, quorum, now, members) if new is not None else LeaderSnapshot(
        record.to, quorum=quorum, at=iso(now), lease_members=members)
    notes = (
        Note(reasons.SERVICES_REWIRED, f"{names.LEADER} label moved {record.from_} -> {record.to}"),
        Note(reasons.FOLLOWERS_REPOINTED, f"{', '.join(others) or 'no follower'} now follow {record.to}"),
    )
    return PhasePlan(Outcome.DONE, tuple(actions), None, notes, current_leader=record.to, last_seen=last_seen)


def finished(record: FailoverRecord, now: float) -> dict[str, Any]:
    """status.lastFailover for a completed record."""
    start = parse_iso(record.started_at) if record.started_at else now
    return {"from": record.from_, "to": record.to, "reason": record.reason, "startedAt": record.started_at,
            "finishedAt": iso(now), "durationSeconds": round(max(0.0, now - start), 3)}
