"""A small simulated Postgres cluster, for the stateful property test of the failover decisions (test only).

Three instances `a-db-0..2`, each a Postgres in the terms the project cares about: its role, its WAL as a
list of (lsn, timeline, commit id) records, how much of it is replayed, primary_conninfo, the WAL receiver's
connection, default_transaction_read_only, synchronous_standby_names with the commits waiting on it, and the
pod around it (label, uid, IP, deletion, restarts). Clients commit and are acknowledged by Postgres' rules,
followers receive a random prefix of their upstream's WAL, and faults (partitions, freezes, kills, pod
deletions) happen between operator ticks.

The operator side is the real code: `runner.tick`, the monitor's tick itself (`decide`,
`runner.run_failover`, `report.database_status`, `Executor.run_all`), with its effects wired to this model
where handlers/monitor.py wires them to the cluster. Only `Executor.run` (the SQL and the Kubernetes calls) is
replaced by its effect on this model. Every coroutine here completes without suspending, so the real async
code is driven synchronously (`drive`), with no event loop per tick.

The leader lease is modelled as scripts/fence.sh runs it: each time model time passes, the agent in a
primary's pod stops its postmaster (no fence marker) unless the operator renewed its lease session within
lease.TTL_SECONDS, every follower in archop.followers streams from it and replied within
lease.FAILSAFE_REPLY_SECONDS (the agent dates a reply by the start of its previous look, before its
arrival, which can only shorten this), or the postmaster started less than TTL ago. Nothing it checks
happens within a zero-time step: a commit right after a thaw lands before the agent's next look, as it can
in reality.

What the model is NOT: a timing model of the network (a link is up or cut), of DNS (a pod name always
resolves to its current IP), of clock drift, or of the operator's own Lease (one operator process, always
sure to hold it). Where a simplification could make the operator look better than it is, the model takes
the harsher side; each is said where it is made.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from archop import names
from archop.failover import decide as d
from archop.failover import lease, report, runner
from archop.failover.act import Executor, NothingListens
from archop.health.model import DbObservation, Instance, PodState, Probe, ReplicaRow
from archop.spec import DatabaseSpec

NAMES = ("a-db-0", "a-db-1", "a-db-2")
OPERATOR = "operator"  # the operator's end of a network link
RW = "a-db-rw"  # host= of the rw Service (what start.sh writes into primary_conninfo)
RECEIVER_TIMEOUT = 4.0  # wal_receiver_timeout = wal_sender_timeout (scripts/postgresql.conf)
COMMIT_BYTES = 100
PROMOTE_BYTES = 40  # the end-of-recovery record a promotion writes on its new timeline
START_LSN = 1000

T = TypeVar("T")


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (everything it awaits is the model) to its end."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("a model coroutine suspended: something awaited real I/O")


class ModelFault(Exception):
    """A failure the real operator meets and survives (its monitor logs it, the next tick retries)."""


class Unreachable(ModelFault):
    """An action against an instance the operator cannot reach: partitioned, frozen, down, shutting down."""


class StatusWriteFailed(ModelFault):
    """Injected: the API server refused a status patch."""


class Role(enum.Enum):
    PRIMARY = "primary"
    STANDBY = "standby"
    STOPPED = "stopped"  # no postmaster: killed, or its pod being replaced; start.sh decides how it returns
    FENCED_STOPPED = "fenced-stopped"  # the operator's hard fence (Stop): the fence marker is on its volume


@dataclass(frozen=True)
class Wal:
    lsn: int
    tl: int
    commit: int | None  # None: not a client commit (a promotion's end-of-recovery record, the initial WAL)


@dataclass(frozen=True)
class Ack:
    """A commit whose client was told it committed."""

    commit: int
    instance: str
    tl: int
    seq: int  # the model's event counter when it was acknowledged
    at: float  # model time


@dataclass(frozen=True)
class Promotion:
    """A Promote action that made a standby a primary."""

    instance: str
    seq: int
    failover_seq: int  # when the failover record that led to it appeared in the status


@dataclass(frozen=True)
class SplitBrain:
    """An acknowledgement by an instance after the operator promoted another one."""

    ack: Ack
    promoted: Promotion
    operator_saw_it: bool  # the operator's probe reached the acknowledging instance since that failover began


@dataclass
class Member:
    """One database pod and its Postgres."""

    name: str
    role: Role
    wal: list[Wal]
    replayed: int  # records replayed; the rest is received but not applied yet
    # primary_conninfo: host= (a pod name, RW, or '' when detached) and the pinned hostaddr= (a pod IP)
    upstream: str = ""
    hostaddr: str | None = None
    # The WAL receiver's live connection: the pod whose WAL sender it talks to. It stays with that pod when
    # labels move (an established TCP connection does not follow the rw Service).
    conn_to: str | None = None
    caught_up: bool = False  # pg_stat_replication.state: 'streaming' once caught up, 'catchup' before
    contact_at: float = 0.0  # last message on the replication connection (data or keepalive)
    paused: bool = False  # replication lag: no WAL data arrives (keepalives still do)
    read_only: bool = False  # default_transaction_read_only (ALTER SYSTEM: survives restarts)
    sync_names: str = ""  # synchronous_standby_names
    sessions: bool = False  # a client pool holds open sessions (they survive a relabel, not a fence)
    pending: list[tuple[int, int]] = field(default_factory=list)  # (commit, lsn) waiting for standbys
    shutting_down: bool = False  # SIGTERM (smart shutdown): open sessions go on, new ones are refused
    was_primary: bool = False  # stopped without standby.signal: start.sh's crash-restart path applies
    # start.sh's gate: a primary it started after a crash refuses application clients (pg_hba) until the
    # agent sees its lease held; the operator's and the followers' connections pass.
    gated: bool = False
    frozen: bool = False  # SIGSTOP of every process in the pod
    rejoin_marker: str | None = None
    started_at: float = 0.0  # pg_postmaster_start_time()
    # archop.followers (ALTER SYSTEM): postgresql.conf declares it '', which the agent reads as "no
    # follower to count", so its failsafe holds until the operator names some.
    lease_members: tuple[str, ...] | None = ()
    renewed_at: float | None = None  # the operator's lease session last ran a statement here
    # the pod
    uid: int = 0
    ip: str = ""
    label: str | None = None  # archop.io/role
    deleting: bool = False
    restarts: int = 0
    container_running: bool = True  # False: postgres was killed and the kubelet has not restarted it yet
    killed_after: float | None = None  # how long it ran before the kill

    @property
    def running(self) -> bool:
        return self.role in (Role.PRIMARY, Role.STANDBY)

    @property
    def answering(self) -> bool:
        """Takes new connections (probes, actions, clients, pg_isready)."""
        return self.running and not self.frozen and not self.shutting_down

    @property
    def lsn(self) -> int:
        return self.wal[-1].lsn

    @property
    def timeline(self) -> int:
        return self.wal[-1].tl

    def commits(self) -> set[int]:
        return {e.commit for e in self.wal if e.commit is not None}


def _common_prefix(a: list[Wal], b: list[Wal]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386, as the API server applies apply.patch_status: objects merge key by key, None deletes."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            inner = target.get(key)
            if not isinstance(inner, dict):
                inner = target[key] = {}
            merge_patch(inner, value)
        else:
            target[key] = copy.deepcopy(value)


@dataclass
class Cluster:
    """The simulated tier: the members, the network, the clients' acknowledgements and the API's status."""

    members: dict[str, Member]
    now: float
    cuts: set[frozenset[str]] = field(default_factory=set)  # network links that are down
    # Pods whose new connections from the operator a NetworkPolicy enforcer rejects (ICMP port-unreachable:
    # the operator reads "connection refused" from a running postmaster). Established connections live on:
    # the operator's lease session and every replication connection.
    rejects: set[str] = field(default_factory=set)
    cordoned: set[str] = field(default_factory=set)  # pods whose node is cordoned (one node per pod)
    # Promotions while another primary still held its leader lease (renewed, or failsafe) and took commits.
    lease_overlaps: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)  # the Architecture's status as the API server has it
    annotations: dict[str, str] = field(default_factory=dict)
    seq: int = 0
    next_commit: int = 1
    next_uid: int = 10
    acks: list[Ack] = field(default_factory=list)
    pending_lost: int = 0  # commits whose client got an error (session ended while waiting): never acked
    promotions: list[Promotion] = field(default_factory=list)
    split_brains: list[SplitBrain] = field(default_factory=list)
    op_saw: dict[str, int] = field(default_factory=dict)  # last seq at which the operator's probe reached it
    failover_seq: int | None = None  # when the status' failover record appeared
    markers: int = 0
    self_fenced: int = 0  # postmasters the lease agent stopped
    # Something that happens in the world while the operator acts: (n, what) runs `what` just before the
    # n-th action (0-based) of the next tick, after the tick's observation.
    during_tick: tuple[int, Callable[[], None]] | None = None
    actions_run: int = 0

    @classmethod
    def healthy(cls, now: float) -> Cluster:
        """a-db-0 leads on timeline 1; a-db-1 and a-db-2 stream from it through rw, as start.sh sets them."""
        wal = [Wal(START_LSN, 1, None)]
        members = {}
        for i, n in enumerate(NAMES):
            m = Member(n, Role.PRIMARY if i == 0 else Role.STANDBY, list(wal), 1, started_at=now, uid=i + 1,
                       ip=f"10.0.0.{i + 1}", label=names.LEADER if i == 0 else names.FOLLOWER)
            if i:
                m.upstream, m.conn_to, m.caught_up, m.contact_at = RW, NAMES[0], True, now
            else:
                m.was_primary = True
            members[n] = m
        return cls(members, now)

    # ------------------------------------------------------------------ plumbing

    def tick_seq(self) -> int:
        self.seq += 1
        return self.seq

    def link(self, a: str, b: str) -> bool:
        return frozenset((a, b)) not in self.cuts

    def op_reaches(self, m: Member) -> bool:
        """A new connection from the operator gets an answer."""
        return self.link(OPERATOR, m.name) and m.answering and m.name not in self.rejects

    def rw_endpoint(self, client: str | None = None) -> Member | None:
        """What a new connection to the rw Service reaches: a ready pod labelled leader (the first, when the
        Service has several endpoints), seen from `client` (None: a client that reaches every pod)."""
        for m in self.members.values():
            if m.label == names.LEADER and m.answering and not m.deleting and (
                    client is None or self.link(client, m.name)):
                return m
        return None

    def _resolve(self, m: Member) -> Member | None:
        """The pod m's primary_conninfo leads to. A pinned hostaddr wins over host= (libpq), and an address
        whose pod is gone leads nowhere (black-holed)."""
        if m.hostaddr:
            return next((x for x in self.members.values() if x.ip == m.hostaddr), None)
        if m.upstream == RW:
            return self.rw_endpoint(m.name)
        return self.members.get(m.upstream) if m.upstream else None

    def _compatible(self, s: Member, u: Member) -> bool:
        """A standby can stream from u when everything it has is u's history too (recovery_target_timeline
        = latest follows u's newer timelines). A standby that went past a fork, or is ahead of u, cannot."""
        return len(s.wal) <= len(u.wal) and u.wal[:len(s.wal)] == s.wal

    def _serves(self, u: Member | None, s: Member) -> bool:
        return (u is not None and u.name != s.name and u.running and not u.frozen
                and self.link(s.name, u.name) and self._compatible(s, u))

    def _disconnect_followers_of(self, m: Member) -> None:
        for s in self.members.values():
            if s.conn_to == m.name:
                s.conn_to, s.caught_up = None, False

    def _drop_sessions(self, m: Member) -> None:
        """Client sessions end (terminated, or the server went away): waiting commits fail, never acked."""
        self.pending_lost += len(m.pending)
        m.pending = []
        m.sessions = False

    # ------------------------------------------------------------------ acknowledgements

    def _ack(self, m: Member, commit: int) -> None:
        a = Ack(commit, m.name, m.timeline, self.tick_seq(), self.now)
        self.acks.append(a)
        self._check_split_brain(a)

    def _check_split_brain(self, a: Ack) -> None:
        """Once the operator promoted an instance, no other one may acknowledge a commit (until the operator
        promotes that one in turn). Recorded with whether the operator could have reached it."""
        last = self.promotions[-1] if self.promotions else None
        if last is None or last.instance == a.instance:
            return
        saw = self.op_saw.get(a.instance, -1) >= last.failover_seq
        self.split_brains.append(SplitBrain(a, last, saw))

    def _release(self, p: Member) -> None:
        """Postgres releases waiting commits once k of the CURRENTLY named standbys that stream (caught up)
        from it have flushed them; an empty synchronous_standby_names releases every waiter."""
        if p.role is not Role.PRIMARY or p.frozen or not p.pending:
            return
        quorum = d.SyncQuorum.parse(p.sync_names)
        if quorum is None:
            done = list(p.pending)
        else:
            flushed = sorted((s.lsn for s in self.members.values()
                              if s.conn_to == p.name and s.caught_up and s.name in quorum.members),
                             reverse=True)
            if len(flushed) < quorum.k:
                return
            upto = flushed[quorum.k - 1]
            done = [(c, lsn) for c, lsn in p.pending if lsn <= upto]
        for c, lsn in done:
            p.pending.remove((c, lsn))
            self._ack(p, c)

    # ------------------------------------------------------------------ the world's rules

    def advance(self, dt: float) -> None:
        """Time passes: keepalives flow on live replication connections; a silent one times out."""
        self.tick_seq()
        self.now += dt
        for s in self.members.values():
            if s.conn_to is None:
                continue
            u = self.members[s.conn_to]
            if s.running and not s.frozen and self._serves(u, s):
                s.contact_at = self.now
            elif self.now - s.contact_at > RECEIVER_TIMEOUT or not s.running or not u.running:
                s.conn_to, s.caught_up = None, False
        for m in self.members.values():
            self._lease_agent(m)

    def _lease(self, m: Member) -> tuple[bool, bool]:
        """(renewed, failsafe): what fence.sh finds on primary m now."""
        renewed = m.renewed_at is not None and self.now - m.renewed_at < lease.TTL_SECONDS
        members = [self.members[n] for n in m.lease_members or () if n in self.members]
        # failsafe: every follower it counts streams and replied (vacuous when none is set)
        failsafe = len(members) == len(m.lease_members or ()) and all(
            s.conn_to == m.name and s.caught_up and self.now - s.contact_at < lease.FAILSAFE_REPLY_SECONDS
            for s in members)
        return renewed, failsafe

    def _lease_agent(self, m: Member) -> None:
        """fence.sh's check on a primary. It reaches Postgres over the pod's Unix socket, so a frozen
        postmaster or one in a smart shutdown gives it no answer, and it does nothing then."""
        if m.role is not Role.PRIMARY or not m.answering:
            return
        renewed, failsafe = self._lease(m)
        if m.gated:
            m.gated = not (renewed or failsafe)  # the agent opens the gate, and never stops a gated primary
            return
        if self.now - m.started_at < lease.TTL_SECONDS:
            return  # starting (harsher than the agent, which has no such grace)
        if renewed or failsafe:
            return
        self.self_fenced += 1
        self._stop(m, Role.STOPPED)  # stop.sql with QUIT, no fence marker: start.sh decides how it returns
        m.container_running, m.killed_after = False, None
        m.restarts += 1

    def commit(self, name: str | None, begin_read_write: bool) -> bool:
        """A client commits. name None: a new session through the rw Service. A name: on that pod, through an
        open pooled session or a direct connection (the `-r` Service, the pod's DNS name). begin_read_write:
        the session says BEGIN READ WRITE, which default_transaction_read_only does not stop."""
        self.tick_seq()
        if name is None:
            m = self.rw_endpoint()
            if m is None:
                return False
        else:
            m = self.members[name]
            if m.shutting_down and not m.sessions:
                return False  # smart shutdown: no new sessions
        if m.role is not Role.PRIMARY or m.frozen or m.gated or (m.read_only and not begin_read_write):
            return False
        cid = self.next_commit
        self.next_commit += 1
        m.wal.append(Wal(m.lsn + COMMIT_BYTES, m.timeline, cid))
        m.replayed = len(m.wal)
        m.sessions = True
        m.pending.append((cid, m.lsn))
        self._release(m)  # asynchronous: acknowledged at once; synchronous: once standbys have it
        return True

    def replicate(self, name: str, records: int) -> None:
        """The WAL receiver of `name` (re)connects as its primary_conninfo says and receives up to `records`
        of its upstream's WAL: a random prefix, never necessarily all of it."""
        self.tick_seq()
        s = self.members[name]
        if s.role is not Role.STANDBY or s.frozen:
            return
        u = self.members[s.conn_to] if s.conn_to else self._resolve(s)
        if not self._serves(u, s):
            s.conn_to, s.caught_up = None, False
            return
        assert u is not None
        if s.conn_to != u.name:
            s.conn_to, s.caught_up = u.name, False
        s.contact_at = self.now
        if not s.paused:
            s.wal.extend(u.wal[len(s.wal):len(s.wal) + records])
        if len(s.wal) == len(u.wal):
            s.caught_up = True
        self._release(u)

    def replay(self, name: str, records: int) -> None:
        self.tick_seq()
        s = self.members[name]
        if s.role is Role.STANDBY and not s.frozen:
            s.replayed = min(len(s.wal), s.replayed + records)

    def cut(self, a: str, b: str) -> None:
        self.tick_seq()
        if a != b:
            self.cuts.add(frozenset((a, b)))

    def heal(self, name: str) -> None:
        self.tick_seq()
        self.cuts = {c for c in self.cuts if name not in c}
        self.rejects.discard(name)

    def reject(self, name: str) -> None:
        self.tick_seq()
        self.rejects.add(name)

    def cordon(self, name: str, on: bool) -> None:
        self.tick_seq()
        (self.cordoned.add if on else self.cordoned.discard)(name)

    def evict(self, name: str) -> None:
        """A drain's eviction of the pod: the database's PodDisruptionBudgets refuse it while the pod carries
        the leader label (build/database.py), anything else is deleted."""
        if self.members[name].label != names.LEADER:
            self.delete_pod(name)

    def freeze(self, name: str) -> None:
        self.tick_seq()
        m = self.members[name]
        if m.running:
            m.frozen = True

    def thaw(self, name: str) -> None:
        self.tick_seq()
        m = self.members[name]
        if m.frozen:
            m.frozen = False
            self._release(m)

    def pause(self, name: str, paused: bool) -> None:
        self.tick_seq()
        self.members[name].paused = paused

    def kill(self, name: str) -> None:
        """SIGKILL of the postmaster: the container exits 137 and waits for the kubelet to restart it."""
        self.tick_seq()
        m = self.members[name]
        if not m.running:
            return
        self._stop(m, Role.STOPPED)
        m.container_running, m.killed_after = False, self.now - m.started_at
        m.restarts += 1

    def _stop(self, m: Member, role: Role) -> None:
        self._drop_sessions(m)
        self._disconnect_followers_of(m)
        if m.running:
            m.was_primary = m.role is Role.PRIMARY
        m.role, m.frozen, m.shutting_down, m.conn_to, m.caught_up = role, False, False, None, False
        m.renewed_at = None  # the operator's lease session ended with the postmaster
        m.gated = False

    def delete_pod(self, name: str) -> None:
        """The pod is deleted (by anyone): SIGTERM. The offline image has no STOPSIGNAL, so that is Postgres'
        smart shutdown: open sessions go on (and commit) until the kubelet's SIGKILL after the grace period,
        new connections are refused, WAL senders keep serving. `pod_replaced` ends it."""
        self.tick_seq()
        m = self.members[name]
        m.deleting = True
        if m.running:
            m.shutting_down = True

    def pod_replaced(self, name: str) -> None:
        """The StatefulSet's new pod: same volume, new uid and IP, no role label; start.sh runs."""
        self.tick_seq()
        m = self.members[name]
        if not m.deleting:
            return
        if m.running:
            self._stop(m, Role.STOPPED)
        self.next_uid += 1
        m.uid, m.ip, m.label, m.deleting = self.next_uid, f"10.0.1.{self.next_uid}", None, False
        m.restarts = 0
        m.container_running, m.killed_after = True, None
        self._start_script(m)

    def container_restart(self, name: str) -> None:
        """The kubelet restarts a killed container, or start.sh (waiting after a hard fence) looks again."""
        self.tick_seq()
        m = self.members[name]
        if m.running or m.deleting:
            return
        m.container_running, m.killed_after = True, None
        self._start_script(m)

    def _start_script(self, m: Member) -> None:
        """scripts/start.sh's decision for a data directory that exists. The restart grace (4 s of looking on
        rw for another primary) is taken as no time at all: a crashed leader comes back as primary as soon as
        it finds none, which is the harsher case for the operator."""
        if m.running:
            return
        found = self.rw_endpoint(m.name)
        other = found if found is not None and found.name != m.name and found.role is Role.PRIMARY else None
        if m.role is Role.FENCED_STOPPED:
            if other is not None:
                self._rejoin(m, other)
            return  # waits (postgres not started: connections are refused)
        if not m.was_primary:  # standby.signal
            if other is not None and other.timeline != m.wal[m.replayed - 1].tl:  # pg_controldata's
                self._rejoin(m, other)
            else:
                m.role, m.started_at, m.conn_to, m.caught_up = Role.STANDBY, self.now, None, False
                m.upstream = m.upstream or RW
            return
        if other is not None:
            self._rejoin(m, other)
            return
        # Crash restart of a leader: no other primary answers. It comes up gated.
        m.role, m.started_at, m.gated = Role.PRIMARY, self.now, True

    def _rejoin(self, m: Member, source: Member) -> None:
        """pg_rewind onto `source` (fallback: base backup, the same here): the WAL it has beyond the common
        history is gone; start as a follower through rw, with the operator's settings stripped."""
        keep = _common_prefix(m.wal, source.wal)
        m.wal = m.wal[:keep]
        m.replayed = min(m.replayed, keep)
        self.markers += 1
        m.role, m.was_primary, m.started_at = Role.STANDBY, False, self.now
        m.upstream, m.hostaddr, m.conn_to, m.caught_up = RW, None, None, False
        m.read_only, m.sync_names = False, ""
        m.rejoin_marker = f"method=rewind pod={m.name} at={self.markers}"

    # ------------------------------------------------------------------ what the operator sees

    def observe(self, desired: int, keep: DbObservation | None = None,
                skip: frozenset[str] = frozenset()) -> DbObservation:
        """As health/pods.py + health/probe.py would see the tier now. Pods in `skip` keep their probe."""
        seq = self.tick_seq()
        instances = {}
        for n, m in self.members.items():
            if keep is not None and n in skip and n in keep.instances:
                probe = keep.instances[n].probe
            else:
                probe = self._probe(m)
                if probe.reachable:
                    self.op_saw[n] = seq
            instances[n] = Instance(n, self._pod(m), probe)
        return DbObservation(instances=instances, desired=desired, hosts={n: n for n in self.members},
                             rw_host=RW)

    def _pod(self, m: Member) -> PodState:
        back_off = m.killed_after if not m.container_running else None
        return PodState(name=m.name, ip=m.ip, uid=f"uid-{m.uid}", deleting=m.deleting,
                        ready=m.answering, running=m.container_running, back_off_after_kill=back_off,
                        restarts=m.restarts, node=f"node-{m.name[-1]}", role=m.label,
                        node_cordoned=m.name in self.cordoned)

    def _probe(self, m: Member) -> Probe:
        if not self.link(OPERATOR, m.name):
            return Probe(reachable=False, error="TimeoutError: connect")
        if not m.running or m.name in self.rejects:
            # The pod's network answers but nothing listens (killed, or start.sh waiting after a hard fence).
            return Probe(reachable=False, error="OperationalError: Connection refused", refused=True)
        if m.frozen:
            return Probe(reachable=False, error="TimeoutError: connect")
        if m.shutting_down:
            return Probe(reachable=False, error="OperationalError: the database system is shutting down")
        if m.role is Role.PRIMARY:
            quorum = d.SyncQuorum.parse(m.sync_names)
            rows = tuple(
                ReplicaRow(name=s.name, state="streaming" if s.caught_up else "catchup",
                           sync_state="quorum" if quorum and s.name in quorum.members else "async",
                           flush_lsn=s.lsn, replay_lsn=s.wal[s.replayed - 1].lsn,
                           reply_age=self.now - s.contact_at)
                for s in self.members.values() if s.conn_to == m.name)
            return Probe(reachable=True, in_recovery=False, timeline=m.timeline, current_lsn=m.lsn,
                         read_only=m.read_only, sync_standby_names=m.sync_names, replicas=rows,
                         lease_members=m.lease_members)
        streaming = m.conn_to is not None
        # pg_stat_wal_receiver's received_tli while connected, else the last checkpoint's (~ replayed) one.
        tl = m.timeline if streaming else m.wal[m.replayed - 1].tl
        return Probe(reachable=True, in_recovery=True, timeline=tl, received_lsn=m.lsn,
                     replay_lsn=m.wal[m.replayed - 1].lsn, receiver_status="streaming" if streaming else None,
                     receiver_msg_age=self.now - m.contact_at if streaming else None,
                     primary_host=m.upstream, primary_hostaddr=m.hostaddr, read_only=m.read_only,
                     sync_standby_names=m.sync_names, rejoin_marker=m.rejoin_marker,
                     lease_members=m.lease_members)

    # ------------------------------------------------------------------ the operator's actions

    def _reach(self, pod: str) -> Member:
        m = self.members[pod]
        if not self.op_reaches(m):
            raise Unreachable(f"{pod} does not answer")
        return m

    def act(self, action: d.Action) -> None:
        """failover/act.py's effect of one action on the model (labels and pod deletion always work: the API
        server answers; SQL needs the instance to answer)."""
        if self.during_tick is not None and self.during_tick[0] == self.actions_run:
            what, self.during_tick = self.during_tick[1], None
            what()
        self.actions_run += 1
        self.tick_seq()
        match action:
            case d.SetRole(pod=pod, role=role):
                self.members[pod].label = role
            case d.DeletePod(pod=pod):
                self.delete_pod(pod)
            case d.Fence(pod=pod):
                m = self._reach(pod)
                m.read_only = True
                self._drop_sessions(m)  # pg_terminate_backend of every client session
            case d.Stop(pod=pod, clean=clean, address=address):
                m = self.members[pod]
                if address is not None and address != m.ip:
                    raise Unreachable(f"nothing answers at {pod}'s old address {address}")
                if self.link(OPERATOR, pod) and (not m.running or pod in self.rejects):
                    raise NothingListens(f"connection to {pod} refused")
                m = self._reach(pod)
                self._drop_sessions(m)  # fast and immediate shutdowns end the sessions first
                if clean and m.role is Role.PRIMARY:
                    # A fast shutdown's WAL senders hand every connected follower all the WAL first.
                    for s in self.members.values():
                        if s.conn_to == m.name and self._compatible(s, m):
                            s.wal = list(m.wal)
                self._stop(m, Role.FENCED_STOPPED)
                m.restarts += 1  # the container exits; start.sh comes back and waits for a new leader
            case d.Unfence(pod=pod):
                self._reach(pod).read_only = False
            case d.SetLeaseMembers(pod=pod, members=members):
                self._reach(pod).lease_members = tuple(members)
            case d.Detach(pod=pod):
                m = self._reach(pod)
                if m.role is Role.STANDBY:
                    m.upstream, m.hostaddr, m.conn_to, m.caught_up = "", None, None, False
            case d.Repoint(pod=pod, leader=leader):
                m = self._reach(pod)
                target = (leader, self.members[leader].ip)
                if m.role is Role.STANDBY and (m.upstream, m.hostaddr) != target:
                    # A reload with a new primary_conninfo restarts the WAL receiver.
                    m.upstream, m.hostaddr = target
                    m.conn_to, m.caught_up = None, False
            case d.SetSyncStandbys(pod=pod, value=value):
                m = self._reach(pod)
                m.sync_names = value
                self._release(m)
            case d.Promote(pod=pod):
                m = self._reach(pod)
                if m.role is Role.STANDBY:
                    self._promote(m)
            case d.CreateSlots(pod=pod) | d.DropSlots(pod=pod) | d.SetSlotWalKeep(pod=pod):
                # WAL retention is not modelled (every member keeps all WAL): slots change nothing here, but
                # they need the instance to answer like any SQL effect.
                self._reach(pod)
            case d.Rebuild(pod=pod):
                # The model reports no slots and no WAL horizon, so no follower ever looks unable to catch up.
                raise AssertionError(f"a rebuild of {pod} was decided without evidence")

    def renew(self, pod: str, established: bool) -> bool:
        """The operator's lease session runs a statement on `pod` (LeaseSession.renew), over its established
        connection or a new one. An enforcer that rejects new connections lets an established one live on."""
        self.tick_seq()
        m = self.members[pod]
        reaches = self.link(OPERATOR, m.name) and m.answering
        if not (reaches if established else self.op_reaches(m)):
            return False
        m.renewed_at = self.now
        return True

    def _promote(self, m: Member) -> None:
        """pg_promote: replay what was received, switch to a new timeline (one past the newest it knows).
        Records a promotion while another primary that takes commits (not gated, not frozen) still holds its
        lease: the lease's whole point is that this never happens, whether the operator can see that primary
        or not."""
        for o in self.members.values():
            if o is not m and o.role is Role.PRIMARY and not o.gated and not o.frozen and any(self._lease(o)):
                self.lease_overlaps.append(f"{m.name} promoted while {o.name} held its lease "
                                           f"(renewed, failsafe = {self._lease(o)})")
        new_tl = max(e.tl for e in m.wal) + 1
        m.wal.append(Wal(m.lsn + PROMOTE_BYTES, new_tl, None))
        m.replayed = len(m.wal)
        m.role, m.was_primary, m.conn_to, m.caught_up = Role.PRIMARY, True, None, False
        self._disconnect_followers_of(m)  # a cascading follower of it must reconnect on the new timeline
        seq = self.tick_seq()
        self.promotions.append(Promotion(m.name, seq, self.failover_seq if self.failover_seq is not None
                                         else seq))


@dataclass
class ModelExecutor(Executor):
    """act.Executor acting on the model; run_all (best effort, ordering, raising) is the real one."""

    cluster: Cluster | None = None

    async def run(self, action: d.Action) -> None:
        assert self.cluster is not None
        if isinstance(action, d.RenewLease):
            self.cluster.act(action)  # counts as an action for Cluster.during_tick
            if self.renew_lease is not None and not await self.renew_lease(action.pod):
                raise Unreachable(f"could not renew {action.pod}'s leader lease")
            return
        self.cluster.act(action)


def model_executor(cluster: Cluster, renew: Callable[[str], Coroutine[Any, Any, bool]]) -> ModelExecutor:
    def no_target(pod: str) -> None:
        return None

    def upstream(follower: str, leader: str) -> str:
        return f"host={leader} application_name={follower}"

    def set_label(pod: str, role: str) -> None:
        cluster.act(d.SetRole(pod, role))

    def delete_pod(pod: str) -> None:
        cluster.act(d.DeletePod(pod))

    return ModelExecutor(target=no_target, upstream=upstream, set_label=set_label, delete_pod=delete_pod,
                         renew_lease=renew, cluster=cluster)


@dataclass
class Monitor:
    """handlers/monitor.py's DbMonitor over the model: runner.tick, the very tick the monitor runs, with
    effects on the model. One instance is one operator process (its Memory and its overlay of what it wrote);
    an operator restart is a new Monitor."""

    cluster: Cluster
    spec: DatabaseSpec
    memory: d.Memory = field(default_factory=d.Memory)
    written: dict[str, Any] = field(default_factory=dict)
    fail_write: int | None = None  # injected: this status patch (0-based, within one tick) fails ...
    fail_in_failover: bool = False  # ... of the next tick that runs a failover (else of the next tick)
    in_failover: bool = False
    writes: int = 0
    notes: list[d.Note] = field(default_factory=list)
    last_tick: float | None = None
    lease_clock: lease.LeaseClock = field(init=False)  # this process' renewals (monitor.py's self.lease)
    faulted: bool = False  # the last tick ended in a ModelFault
    vouched: str | None = None  # the pod whose lease this process renews (monitor.py's self.vouched)
    session_to: str | None = None  # the pod its lease session holds an established connection to
    injected: bool = False  # ... and it was an injected one

    def __post_init__(self) -> None:
        self.lease_clock = lease.LeaseClock(started=self.cluster.now)

    def view(self) -> dict[str, Any]:
        merged = dict(self.cluster.status)
        merged.update(self.written)
        return {k: v for k, v in merged.items() if v is not None}

    async def patch(self, patch: dict[str, Any]) -> None:
        n, self.writes = self.writes, self.writes + 1
        if self.fail_write == n and (self.in_failover or not self.fail_in_failover):
            self.fail_write = None
            raise StatusWriteFailed(f"status patch {n} refused")
        had = bool(self.cluster.status.get("failover"))
        merge_patch(self.cluster.status, patch)
        self.written.update(patch)
        if not had and self.cluster.status.get("failover"):
            self.cluster.failover_seq = self.cluster.tick_seq()

    def emit(self, note: d.Note) -> None:
        if len(self.notes) < 200:
            self.notes.append(note)

    async def _observe(self, previous: DbObservation, skip: frozenset[str]) -> DbObservation:
        return await self._with_session(self.cluster.observe(self.spec.instances, previous, skip))

    async def _with_session(self, obs: DbObservation) -> DbObservation:
        return await runner.with_lease_session(obs, self.session_to, self.lease_clock, self.vouch)

    async def _sleep(self, seconds: float) -> None:
        """The runner sleeps through a lease running out: the world's time passes meanwhile."""
        self.cluster.advance(seconds)

    async def _observe_all(self) -> DbObservation:
        return await self._with_session(self.cluster.observe(self.spec.instances))

    async def _drop_switchover(self) -> None:
        self.cluster.annotations.pop(d.SWITCHOVER_ANNOTATION, None)

    async def _status_fields(self, obs: DbObservation, leader: str | None, message: str,
                             in_flight: d.FailoverRecord | None) -> dict[str, Any]:
        """The monitor's conditions are not part of the model's status (no decision reads them); the
        DatabaseReady one is still computed, so that it runs on every state the model reaches."""
        report.database_condition(obs, leader, in_flight is not None, message)
        return {}

    def _remember(self, memory: d.Memory) -> None:
        self.memory = memory

    async def _failover_begins(self, record: d.FailoverRecord, new: bool) -> None:
        """Arms an injected status write failure that waits for a failover tick (fail_in_failover); a new
        failover ends the lease session, as monitor.py's does."""
        self.in_failover = True
        if new:
            self.session_to = None

    async def vouch(self, pod: str) -> bool:
        """monitor.py's vouch: renew the pod's leader lease through the lease session, over its established
        connection when it has one to this pod (act.LeaseSession, lease.Renewal)."""
        established = self.session_to == pod
        renewal = (lease.Renewal.RENEWED if self.cluster.renew(pod, established)
                   else lease.Renewal.BROKEN if established else lease.Renewal.FAILED)
        if not self.lease_clock.record(pod, renewal, self.cluster.now):
            self.session_to = None
            return False
        self.vouched = self.session_to = pod
        return True

    def tick(self) -> None:
        """One monitor tick. A ModelFault ends it, as the real loop's `except Exception` does (logged, the
        next tick retries), and so does a required Stop refused (act.stop's NothingListens: a planned
        change's clean stop of a leader killed meanwhile; the next tick sees it gone); any other exception is
        a bug and propagates."""
        self.writes, self.faulted, self.injected, self.in_failover = 0, False, False, False
        self.last_tick = self.cluster.now
        self.cluster.actions_run = 0
        try:
            drive(self._tick())
        except (ModelFault, NothingListens) as exc:
            self.faulted, self.injected = True, isinstance(exc, StatusWriteFailed)
        finally:
            if self.in_failover or not self.fail_in_failover:
                self.fail_write = None  # armed for one tick (or one failover tick) only
            self.cluster.during_tick = None

    async def _tick(self) -> None:
        c = self.cluster
        fx = runner.TickEffects(
            observe=self._observe_all, reobserve=self._observe, persist=self.patch,
            executor=model_executor(c, self.vouch), emit=self.emit, vouch=self.vouch,
            withdraw_unless=self._withdraw_unless, drop_switchover=self._drop_switchover,
            status_fields=self._status_fields, remember=self._remember, failover_begins=self._failover_begins,
            failover_done=self._failover_done, maintenance_failed=self._maintenance_failed,
            lease=self.lease_clock, sleep=self._sleep, clock=lambda: c.now)
        await runner.tick(self.view(), c.annotations, self.spec, self.memory, fx)

    # The effects of runner.tick that only matter to a real process: nothing of them reaches the model.

    async def _withdraw_unless(self, pod: str | None) -> None:
        """The real monitor renews the vouched pod between ticks too (DbMonitor.renewals); the model renews
        only within ticks, so only the vouched pod is forgotten."""
        if self.vouched != pod:
            self.vouched = None

    def _failover_done(self, record: d.FailoverRecord) -> None:
        """The monitor's completion event and metrics."""

    def _maintenance_failed(self, errors: list[str]) -> None:
        """The monitor's log line: the next tick retries them."""

    def restarted(self, takeover: bool) -> Monitor:
        """A new operator process: no Memory, no overlay. After an unclean takeover the blind interval since
        the old process' last tick counts toward the leader timeout (election.unwatched_since)."""
        memory = d.Memory(unwatched_since=self.last_tick if takeover else None)
        return Monitor(self.cluster, self.spec, memory=memory, last_tick=self.last_tick)
