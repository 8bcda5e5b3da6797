"""Stateful property test of the failover decisions (issue 11, "How to prove it").

Hypothesis drives failover_model.Cluster (three simulated Postgres instances, their pods, the network and
the clients) through random faults, and the real operator code through ticks: runner.tick, the tick
handlers/monitor.py runs (decide, runner.run_failover, report.database_status, Executor.run_all), with its
effects wired to the model. After every step:

1. No acknowledged commit is lost: in sync mode with dataDurability required (and allowDataLoss off), every
   commit a client was told about is in the WAL of status.currentLeader whenever no failover is in flight.
2. No split brain the operator could have prevented: once the operator has promoted an instance, no other
   instance acknowledges a commit, if the operator's probe reached that other instance at any time since
   that failover began. RESTRICTION: an instance the operator never reached since then is left out. The
   operator cannot fence what it cannot reach (partitioned from it, frozen, in a smart shutdown); only the
   leader lease's agent in that pod can (modelled), within its documented exceptions (docs/failover.md:
   a thawed postmaster's backends before the agent's next check, the "Known window"). Those
   acknowledgements are recorded (Cluster.split_brains, operator_saw_it False) and not asserted.
3. At most one pod carries the leader label (what the rw Service routes to), and never one the operator
   has hard-fenced; at most one status.instances row says leader.
4. An unplanned failover record whose cause is gone (its old leader answers as a primary again, the
   operator reaches it, nobody was promoted for it and no other instance is a primary) is cleared within
   STALE_TICKS ticks that had no injected fault.
5. Nothing but the model's faults (an unreachable instance, an injected status write failure) escapes a
   tick: Monitor.tick lets every other exception through.

`ARCHOP_LONG_PROPERTY=1` runs many more examples (minutes to hours); the default run stays under a minute.
"""

from __future__ import annotations

import os
import tempfile

from archop import names
from archop.failover import decide as d
from archop.spec import DatabaseSpec, Durability, FailoverSpec
from failover_model import NAMES, OPERATOR, Cluster, Monitor, Role
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

LONG = os.environ.get("ARCHOP_LONG_PROPERTY") == "1"
START = 1_700_000_000.0
STALE_TICKS = 3
MODES = {
    "async": DatabaseSpec(synchronous=False),
    "sync-required": DatabaseSpec(synchronous=True, durability=Durability.REQUIRED),
    "sync-preferred": DatabaseSpec(synchronous=True, durability=Durability.PREFERRED),
}
pod = st.sampled_from(NAMES)
# Faults aim at "leader" (status.currentLeader when they happen) as often as at any one pod.
target = st.sampled_from(("leader", *NAMES))
faults = st.sampled_from(["heal", "freeze", "thaw", "kill", "restart", "delete", "replace", "lag", "catch up",
                          "cut off", "reject", "cordon", "uncordon", "evict"])


class FailoverModel(RuleBasedStateMachine):
    """The rules are the world (clients, replication, faults) and the operator (ticks, restarts)."""

    cluster: Cluster
    monitor: Monitor
    spec: DatabaseSpec

    # Weighted toward sync-required with syncReplicas 1 (ANY 1 of 2), where invariant 1 has the most to check.
    @initialize(mode=st.sampled_from(["sync-required", "sync-required", "sync-preferred", "async"]),
                sync_replicas=st.sampled_from([1, 1, 2]), pod_lost_timeout=st.sampled_from([0.0, 1.0]),
                allow_data_loss=st.sampled_from([False] * 7 + [True]))
    def start(self, mode: str, sync_replicas: int, pod_lost_timeout: float, allow_data_loss: bool) -> None:
        # maxLagBytes of 2.5 commits, so the asynchronous guard matters at the model's scale.
        failover = FailoverSpec(leader_timeout_seconds=3.0, pod_lost_timeout_seconds=pod_lost_timeout,
                                max_lag_bytes=250, allow_data_loss=allow_data_loss)
        base = MODES[mode]
        self.spec = DatabaseSpec(followers=2, synchronous=base.synchronous, durability=base.durability,
                                 sync_replicas=sync_replicas, failover=failover)
        self.cluster = Cluster.healthy(START)
        self.monitor = Monitor(self.cluster, self.spec)
        self.stale = 0
        # The operator takes the tier over (bootstrap, then synchronous_standby_names) before clients write.
        self.monitor.tick()
        self.monitor.tick()
        assert self.cluster.status.get("currentLeader") == NAMES[0], self.cluster.status

    # ------------------------------------------------------------------ the operator

    def _tick(self) -> None:
        cause_gone = self._cause_gone()
        self.monitor.tick()
        if not self.cluster.status.get("failover"):
            self.stale = 0
        elif cause_gone and not self.monitor.injected:
            self.stale += 1
        else:
            self.stale = 0

    def _cause_gone(self) -> bool:
        """An unplanned record whose old leader answers as a primary again while nobody was promoted for it
        (and no other instance is a primary)."""
        c = self.cluster
        rec = d.FailoverRecord.from_status(c.status.get("failover"))
        if rec is None or rec.planned or any(p.failover_seq == c.failover_seq for p in c.promotions):
            return False
        old = c.members[rec.from_]
        return (old.role is Role.PRIMARY and c.op_reaches(old)
                and not any(m.role is Role.PRIMARY for m in c.members.values() if m is not old))

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0]))
    def operator_tick(self, dt: float) -> None:
        if dt:
            self.cluster.advance(dt)
        self._tick()

    @rule(writes=st.integers(0, 2), records=st.tuples(*(st.integers(0, 3) for _ in NAMES)),
          replay=st.booleans())
    def a_second_passes(self, writes: int, records: tuple[int, ...], replay: bool) -> None:
        """An ordinary second: clients write through rw, every follower receives some of its upstream's WAL
        (maybe none, maybe not all), time moves on, the operator ticks."""
        for _ in range(writes):
            self.cluster.commit(None, False)
        for name, n in zip(NAMES, records, strict=True):
            self.cluster.replicate(name, n)
            if replay:
                self.cluster.replay(name, n)
        self.cluster.advance(1.0)
        self._tick()

    @rule(takeover=st.booleans())
    def operator_restart(self, takeover: bool) -> None:
        self.monitor = self.monitor.restarted(takeover)

    @rule(which=st.integers(0, 4), in_failover=st.booleans())
    def status_write_fails(self, which: int, in_failover: bool) -> None:
        """The API server refuses the `which`-th status patch of the next tick, or of the next tick that runs
        a failover: the operator stops between two phases (each phase persists its record first)."""
        self.monitor.fail_write, self.monitor.fail_in_failover = which, in_failover

    @rule(to=st.sampled_from([None, *NAMES]))
    def switchover_annotation(self, to: str | None) -> None:
        if to is None:
            self.cluster.annotations.pop(d.SWITCHOVER_ANNOTATION, None)
        else:
            self.cluster.annotations[d.SWITCHOVER_ANNOTATION] = to

    # ------------------------------------------------------------------ clients and replication

    @rule(via=st.sampled_from([None, *NAMES]), begin_read_write=st.booleans())
    def client_commits(self, via: str | None, begin_read_write: bool) -> None:
        self.cluster.commit(via, begin_read_write)

    @rule(name=pod, records=st.integers(0, 3))
    def replication(self, name: str, records: int) -> None:
        self.cluster.replicate(name, records)

    @rule(name=pod, records=st.integers(1, 3))
    def replay(self, name: str, records: int) -> None:
        self.cluster.replay(name, records)

    @rule(dt=st.sampled_from([0.1, 0.5, 2.0, 3.0, 5.0]))
    def time_passes(self, dt: float) -> None:
        self.cluster.advance(dt)

    # ------------------------------------------------------------------ faults

    def _pod(self, name: str) -> str:
        return (self.cluster.status.get("currentLeader") or NAMES[0]) if name == "leader" else name

    @rule(name=target, peer=st.sampled_from([OPERATOR, *NAMES]))
    def partition(self, name: str, peer: str) -> None:
        self.cluster.cut(self._pod(name), peer)

    @rule(name=target)
    def isolate(self, name: str) -> None:
        """A network partition around the pod: from the operator and from its peers."""
        for peer in (OPERATOR, *NAMES):
            self.cluster.cut(self._pod(name), peer)

    @rule(name=target, fault=faults)
    def fault(self, name: str, fault: str) -> None:
        """One thing happens to one pod: its links heal; SIGSTOP / SIGCONT of its processes; its postmaster is
        killed; its container restarts (start.sh runs); the pod is deleted (SIGTERM), and its replacement
        starts; its replication lags (no WAL arrives) or catches up; the operator loses it (partition); its
        node is cordoned or uncordoned; a drain evicts it (as far as the disruption budgets allow)."""
        self._fault(name, fault)

    @rule(action=st.integers(0, 6), name=target, fault=st.one_of(faults, st.just("commit")))
    def fault_while_the_operator_acts(self, action: int, name: str, fault: str) -> None:
        """The same, or a BEGIN READ WRITE commit on that pod, just before the `action`-th action of the next
        tick: after the operator observed the tier and decided, before it finished acting."""
        self.cluster.during_tick = (action, lambda: self._fault(name, fault))

    def _fault(self, name: str, fault: str) -> None:
        c, name = self.cluster, self._pod(name)
        match fault:
            case "commit":
                c.commit(name, True)
            case "cut off":
                c.cut(name, OPERATOR)
            case "reject":
                c.reject(name)
            case "cordon" | "uncordon":
                c.cordon(name, fault == "cordon")
            case "evict":
                c.evict(name)
            case "heal":
                c.heal(name)
            case "freeze":
                c.freeze(name)
            case "thaw":
                c.thaw(name)
            case "kill":
                c.kill(name)
            case "restart":
                c.container_restart(name)
            case "delete":
                c.delete_pod(name)
            case "replace":
                c.pod_replaced(name)
            case "lag" | "catch up":
                c.pause(name, fault == "lag")

    # ------------------------------------------------------------------ invariants

    @invariant()
    def no_acknowledged_commit_lost(self) -> None:
        if not self.spec.sync_required or self.spec.failover.allow_data_loss:
            return
        status = self.cluster.status
        leader = status.get("currentLeader")
        if status.get("failover") or not leader:
            return
        have = self.cluster.members[leader].commits()
        lost = [a for a in self.cluster.acks if a.commit not in have]
        assert not lost, f"acknowledged commits missing on leader {leader}: {lost}"

    @invariant()
    def no_split_brain_the_operator_could_prevent(self) -> None:
        seen = [s for s in self.cluster.split_brains if s.operator_saw_it]
        assert not seen, f"acknowledged after another instance was promoted: {seen}"

    @invariant()
    def no_promotion_while_another_primary_holds_its_lease(self) -> None:
        assert not self.cluster.lease_overlaps, self.cluster.lease_overlaps

    @invariant()
    def one_leader_label(self) -> None:
        leaders = [m for m in self.cluster.members.values() if m.label == names.LEADER]
        assert len(leaders) <= 1, f"rw routes to {[m.name for m in leaders]}"
        assert all(m.role is not Role.FENCED_STOPPED for m in leaders), f"hard-fenced {leaders[0].name} leads"
        rows = self.cluster.status.get("instances") or []
        assert sum(r.get("role") == names.LEADER for r in rows) <= 1, rows

    @invariant()
    def stale_failover_cleared(self) -> None:
        assert self.stale < STALE_TICKS, (
            f"failover {self.cluster.status.get('failover')} still in flight after {self.stale} ticks with "
            "its old leader a reachable primary and no other primary")


def _settings() -> settings:
    # The example database lives outside the repository (the work tree stays clean); failures replay from it.
    db = os.environ.get("ARCHOP_HYPOTHESIS_DB") or os.path.join(tempfile.gettempdir(), "archop-hypothesis")
    return settings(
        # About 17 s of CPU per 1000 examples of 50 steps: the default run takes ~35 s on an idle machine.
        max_examples=50_000 if LONG else 2_000,
        stateful_step_count=80 if LONG else 50,
        deadline=None,
        database=DirectoryBasedExampleDatabase(db),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        print_blob=True,
    )


def test_failover_decisions_hold_their_invariants() -> None:
    run_state_machine_as_test(FailoverModel, settings=_settings())


def test_a_crashed_leader_that_restarts_while_the_new_one_is_cut_off_comes_back_gated() -> None:
    """Found by the state machine once the model lacked start.sh's gate: the old leader stopped itself
    (no renewal, no follower replying), a follower was promoted, the new leader was then cut off, and the
    old one's container restarted and found no other primary on rw. It must take no application commit
    until its lease holds (it never will: the operator does not renew a leader it does not want)."""
    s = FailoverModel()
    s.start(mode="sync-preferred", sync_replicas=1, pod_lost_timeout=0.0, allow_data_loss=False)
    s.operator_tick(dt=0.0)
    s.time_passes(dt=2.0)
    s.client_commits(begin_read_write=False, via=None)
    s.a_second_passes(records=(0, 0, 0), replay=False, writes=0)
    assert s.cluster.status.get("currentLeader") == "a-db-1"
    s.isolate(name="leader")
    s.fault(fault="restart", name="a-db-0")
    assert s.cluster.members["a-db-0"].gated
    assert not s.cluster.commit("a-db-0", True)
    s.fault_while_the_operator_acts(action=0, fault="commit", name="a-db-0")
    s.a_second_passes(records=(0, 0, 0), replay=False, writes=0)
    s.no_split_brain_the_operator_could_prevent()


def _streaming_tier(mode: str = "sync-required") -> FailoverModel:
    """a-db-0 leads, its lease renewed by this process, both followers streaming from it."""
    s = FailoverModel()
    s.start(mode=mode, sync_replicas=1, pod_lost_timeout=0.0, allow_data_loss=False)
    s.a_second_passes(records=(1, 1, 1), replay=True, writes=1)
    s.a_second_passes(records=(1, 1, 1), replay=True, writes=0)
    assert s.cluster.status.get("currentLeader") == "a-db-0" and not s.cluster.status.get("failover")
    assert all(s.cluster.members[n].conn_to == "a-db-0" for n in NAMES[1:])
    return s


def test_a_refusal_from_a_live_leader_is_not_taken_for_its_death() -> None:
    """Found when the model learnt that an enforcer may reject the operator's new connections (ICMP
    port-unreachable reads as "connection refused"): a refusal alone made the leader look dead, the failover
    skipped the lease wait, and a follower was promoted while the leader still held its lease. Its lease
    session and its followers' streams live on, so now it is a leader the operator cannot reach: no
    failover while its followers stream from it."""
    s = _streaming_tier()
    s.fault(fault="reject", name="leader")
    for _ in range(6):
        s.a_second_passes(records=(1, 1, 1), replay=True, writes=1)
        s.no_promotion_while_another_primary_holds_its_lease()
    assert s.cluster.status.get("currentLeader") == "a-db-0"
    assert not s.cluster.promotions


def test_a_killed_leader_is_proven_down_and_the_lease_is_not_waited_for() -> None:
    """A real death: the refusal comes with the operator's lease session broken and no follower streaming
    from it, so the failover promotes at once (the fast path a killed postmaster takes on the cluster)."""
    s = _streaming_tier()
    killed_at = s.cluster.now
    s.fault(fault="kill", name="leader")
    s.operator_tick(dt=0.0)
    assert s.cluster.status.get("currentLeader") in NAMES[1:], s.monitor.notes[-5:]
    assert s.cluster.now - killed_at < 1.0  # promoted within the tick: no lease wait slept through
    s.no_promotion_while_another_primary_holds_its_lease()


def test_a_drain_hands_the_leader_over_and_then_evicts_it_as_a_follower() -> None:
    """`kubectl drain` of the leader's node: the cordon makes the operator switch over (a planned change, no
    lease wait, nothing lost); the eviction the leader's disruption budget refused goes through once the old
    leader is a follower."""
    s = _streaming_tier()
    s.fault(fault="evict", name="a-db-0")
    assert not s.cluster.members["a-db-0"].deleting  # the budget holds while it leads
    s.fault(fault="cordon", name="a-db-0")
    for _ in range(8):
        s.a_second_passes(records=(1, 1, 1), replay=True, writes=1)
        s.no_acknowledged_commit_lost()
        s.no_promotion_while_another_primary_holds_its_lease()
        if s.cluster.status.get("currentLeader") != "a-db-0" and not s.cluster.status.get("failover"):
            break
    assert s.cluster.status.get("currentLeader") in NAMES[1:], s.monitor.notes[-5:]
    assert any("LeaderNodeDraining" in str(n) for n in s.monitor.notes)
    s.fault(fault="evict", name="a-db-0")
    assert s.cluster.members["a-db-0"].deleting
    s.a_second_passes(records=(1, 1, 1), replay=True, writes=1)
    s.no_acknowledged_commit_lost()


def test_a_switchover_whose_old_leader_stops_answering_waits_for_its_lease() -> None:
    """Found by the state machine: a switchover fenced the old leader read-only (its followers stay attached
    in a planned change), then the operator lost it to a partition before its clean stop. The target was
    promoted on the lease's operator term alone while the followers' stream kept the old leader's failsafe
    alive, so a BEGIN READ WRITE could still commit there. The change now goes on as a failover: the
    followers are detached first and the promotion waits for the lease to run out from then."""
    s = FailoverModel()
    s.start(mode="sync-required", sync_replicas=1, pod_lost_timeout=0.0, allow_data_loss=False)
    s.a_second_passes(records=(0, 0, 0), replay=False, writes=0)
    s.switchover_annotation(to="a-db-1")
    s.client_commits(begin_read_write=False, via=None)
    s.operator_tick(dt=0.0)
    s.partition(name="leader", peer="operator")
    for _ in range(12):
        s.operator_tick(dt=0.5)
        s.no_promotion_while_another_primary_holds_its_lease()
        s.no_acknowledged_commit_lost()
    assert s.cluster.status.get("currentLeader") == "a-db-1", s.monitor.notes[-5:]
    assert any(n.reason == "LeaderUnreachable" and "goes on as a failover" in n.message
               for n in s.monitor.notes)


def test_a_leader_killed_during_a_drain_switchover_is_failed_over() -> None:
    """Found by the state machine once it could cordon: the leader's node is cordoned, the switchover
    starts, and the leader's postmaster is killed before its clean stop. The required Stop is refused
    (NothingListens ends that tick, as any failed action does), and the next tick goes on as a failover."""
    s = FailoverModel()
    s.start(mode="sync-required", sync_replicas=1, pod_lost_timeout=0.0, allow_data_loss=False)
    s.fault_while_the_operator_acts(action=0, fault="cordon", name="leader")
    s.a_second_passes(records=(0, 0, 0), replay=False, writes=0)
    s.fault_while_the_operator_acts(action=2, fault="kill", name="leader")
    s.a_second_passes(records=(0, 0, 0), replay=False, writes=0)
    for _ in range(10):
        s.a_second_passes(records=(1, 1, 1), replay=True, writes=1)
        s.no_promotion_while_another_primary_holds_its_lease()
        s.no_acknowledged_commit_lost()
        s.stale_failover_cleared()
    assert s.cluster.status.get("currentLeader") != "a-db-0", s.monitor.notes[-5:]
