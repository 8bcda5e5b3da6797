"""What the operator sees of the database tier, as plain frozen dataclasses (no I/O).

health/probe.py and health/pods.py fill these in; failover/decide.py reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from archop.images import postgres_major
from archop.podproblems import PodProblem


def parse_lsn(text: str | None) -> int | None:
    """'16/B374D848' -> byte position; None stays None."""
    if not text:
        return None
    hi, _, lo = text.partition("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def format_lsn(value: int | None) -> str | None:
    if value is None:
        return None
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


@dataclass(frozen=True)
class PodState:
    name: str
    ip: str | None = None
    uid: str | None = None  # a pod recreated under the same name has a new uid
    phase: str | None = "Running"
    deleting: bool = False
    ready: bool = True  # the postgres container's readiness (pg_isready)
    running: bool = True  # the postgres container's state is `running` (the kubelet's view)
    # The postgres container waits in CrashLoopBackOff after it was killed (exit 137 or OOMKilled), and its
    # last run lasted this long (seconds); None otherwise.
    back_off_after_kill: float | None = None
    restarts: int = 0
    node: str | None = None
    node_ready: bool | None = True  # None: unknown
    # Its node is cordoned (spec.unschedulable: `kubectl cordon`, the first step of `kubectl drain`): a leader
    # there is handed over before the drain's eviction reaches it.
    node_cordoned: bool = False
    role: str | None = None  # current archop.io/role label
    revision: str | None = None  # controller-revision-hash
    up_to_date: bool = True  # revision == the StatefulSet's updateRevision
    problem: PodProblem | None = None  # why it cannot start without help (unschedulable, image, crash loop)

    @property
    def gone(self) -> bool:
        """The pod cannot be serving: being deleted, not running, or its node is NotReady."""
        return self.deleting or self.phase != "Running" or self.node_ready is False


@dataclass(frozen=True)
class ReplicaRow:
    """One row of pg_stat_replication on a primary."""

    name: str  # application_name = the follower's pod name
    state: str  # streaming, catchup, ...
    sync_state: str  # async, sync, quorum, potential
    flush_lsn: int | None = None
    replay_lsn: int | None = None
    reply_age: float | None = None


@dataclass(frozen=True)
class SlotRow:
    """One physical replication slot (pg_replication_slots) on an instance."""

    name: str
    active: bool = False
    wal_status: str = ""  # reserved, extended, unreserved, lost ('' when it reserves no WAL yet)

    @property
    def lost(self) -> bool:
        """The WAL it held was removed (past max_slot_wal_keep_size): it protects nothing any more."""
        return self.wal_status == "lost"


@dataclass(frozen=True)
class Probe:
    """One SQL probe of one instance. reachable=False means no answer within the probe's timeouts."""

    reachable: bool
    error: str | None = None
    # The pod's IP answered the connect with a reset: nothing listens on the Postgres port, so the postmaster
    # is gone (a frozen one still completes handshakes, a partitioned or vanished one times out).
    refused: bool = False
    in_recovery: bool | None = None
    timeline: int | None = None
    current_lsn: int | None = None  # primaries: pg_current_wal_lsn()
    received_lsn: int | None = None  # followers: pg_last_wal_receive_lsn()
    replay_lsn: int | None = None
    receiver_status: str | None = None  # pg_stat_wal_receiver.status; None: no WAL receiver
    receiver_msg_age: float | None = None  # seconds since the last message from the leader
    # Followers: the startup process waits for more WAL, so it has replayed all it holds and replay_lsn is
    # its whole position (after a restart, before a receiver streams, it may still be replaying local WAL
    # and replay_lsn understates it). None: not read.
    replay_settled: bool | None = None
    primary_host: str | None = None  # host= of primary_conninfo ('' when detached)
    primary_hostaddr: str | None = None  # hostaddr= of primary_conninfo (the leader's pod IP), if set
    read_only: bool = False  # default_transaction_read_only (the fence)
    sync_standby_names: str = ""
    replicas: tuple[ReplicaRow, ...] = ()
    rejoin_marker: str | None = None  # contents of PGDATA/archop-rejoin, written by start.sh
    lease_members: tuple[str, ...] | None = None  # archop.followers (failover/lease.py); None: not set
    slots: tuple[SlotRow, ...] = ()  # physical replication slots on this instance
    primary_slot_name: str | None = None  # followers: the slot they stream through (None: none)
    # Primaries: the start LSN of the oldest WAL segment still in pg_wal. A follower that needs older WAL can
    # never catch up by streaming. None: not known.
    oldest_wal_lsn: int | None = None
    slot_wal_keep_mb: int | None = None  # max_slot_wal_keep_size in MB (-1: unlimited); None: not read
    # server_version_num (150008 for 15.8). Its major is the data directory's: a server refuses to start on
    # the data of another major, so the running servers are what status.postgresMajor records.
    server_version_num: int | None = None

    @property
    def major(self) -> int | None:
        """The PostgreSQL major version of this server (and of its data); None: not read."""
        return postgres_major(self.server_version_num)

    def slot(self, name: str) -> SlotRow | None:
        return next((s for s in self.slots if s.name == name), None)

    @property
    def is_primary(self) -> bool:
        return self.reachable and self.in_recovery is False

    @property
    def is_follower(self) -> bool:
        return self.reachable and self.in_recovery is True

    @property
    def streaming(self) -> bool:
        return self.is_follower and self.receiver_status == "streaming"

    @property
    def position(self) -> int:
        """How much WAL this instance holds: what it wrote (primary) or received (follower)."""
        for v in (self.current_lsn, self.received_lsn, self.replay_lsn):
            if v is not None:
                return v
        return 0


UNREACHABLE = Probe(reachable=False, error="not probed")


@dataclass(frozen=True)
class Instance:
    name: str
    pod: PodState | None  # None: no such pod
    probe: Probe = UNREACHABLE

    @property
    def ordinal(self) -> int:
        tail = self.name.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else -1


@dataclass(frozen=True)
class DbObservation:
    """Everything one tick saw. `instances` is keyed by pod name and covers every expected ordinal plus any
    extra pod that still exists."""

    instances: dict[str, Instance] = field(default_factory=dict)
    desired: int = 1  # 1 + spec followers
    # The host each pod is reached at in primary_conninfo (its stable DNS name), and the rw Service's host.
    hosts: dict[str, str] = field(default_factory=dict)
    rw_host: str = ""
    # Pods whose lease session from this operator process worked and then failed (LeaseClock.session_lost):
    # an established connection to the postmaster broke, which an enforcer refusing new ones does not do.
    lease_session_lost: frozenset[str] = frozenset()

    def host(self, pod: str) -> str:
        return self.hosts.get(pod, pod)

    def get(self, name: str | None) -> Instance | None:
        return self.instances.get(name) if name else None

    @property
    def reachable(self) -> list[Instance]:
        return [i for i in self.instances.values() if i.probe.reachable]
