"""Unit tests of failover/decide.py: every branch of the pure decision logic, no I/O."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from archop import names, reasons
from archop.failover import decide as d
from archop.failover import lease, report
from archop.failover.act import Executor, NotLeading
from archop.health.model import DbObservation, Instance, PodState, Probe, ReplicaRow, SlotRow
from archop.spec import DatabaseSpec, Durability, FailoverSpec

L, F1, F2 = "a-db-0", "a-db-1", "a-db-2"
NOW = 1_000_000.0


def pod(name: str, role: str | None = None, **kw) -> PodState:
    return PodState(**{"name": name, "ip": "10.0.0.1", "role": role, **kw})


def leader(
    name: str = L,
    lsn: int = 1000,
    streaming: tuple[str, ...] = (F1, F2),
    sync: str = "async",
    sync_names: str = "",
    role: str | None = names.LEADER,
    tl: int = 1,
    read_only: bool = False,
    lease: tuple[str, ...] | None = (F1, F2),
    slots: tuple[SlotRow, ...] | None = None,
    oldest_wal: int | None = None,
    **podkw,
) -> Instance:
    rows = tuple(ReplicaRow(name=f, state="streaming", sync_state=sync) for f in streaming)
    if slots is None:  # by default the leader keeps a slot for every other instance, in use while it streams
        slots = tuple(SlotRow(names.db_slot(n), active=n in streaming, wal_status="reserved")
                      for n in (L, F1, F2) if n != name)
    probe = Probe(
        reachable=True,
        in_recovery=False,
        current_lsn=lsn,
        timeline=tl,
        replicas=rows,
        sync_standby_names=sync_names,
        read_only=read_only,
        lease_members=lease,
        slots=slots,
        oldest_wal_lsn=oldest_wal,
    )
    return Instance(name, pod(name, role, **podkw), probe)


def follower(
    name: str,
    recv: int | None = 1000,
    replay: int | None = None,
    status: str | None = "streaming",
    age: float | None = 0.5,
    upstream: str = L,
    role: str | None = names.FOLLOWER,
    tl: int = 1,
    marker: str | None = None,
    slot: str | None = "",
    **podkw,
) -> Instance:
    probe = Probe(
        reachable=True,
        in_recovery=True,
        received_lsn=recv,
        replay_lsn=recv if replay is None else replay,
        receiver_status=status,
        receiver_msg_age=age,
        primary_host=upstream,
        timeline=tl,
        rejoin_marker=marker,
        primary_slot_name=names.db_slot(name) if slot == "" else slot,  # "": its own slot
    )
    return Instance(name, pod(name, role, **podkw), probe)


def down(name: str, role: str | None = None, **podkw) -> Instance:
    return Instance(name, pod(name, role, **podkw), Probe(reachable=False, error="timeout"))


def obs(*insts: Instance, desired: int | None = None) -> DbObservation:
    return DbObservation(
        instances={i.name: i for i in insts},
        desired=desired or len(insts),
        hosts={i.name: i.name for i in insts},
        rw_host="a-db-rw.ns.svc",
    )


SPEC = DatabaseSpec(followers=2, failover=FailoverSpec(leader_timeout_seconds=3.0, max_lag_bytes=100))
# The leader's lease counts both followers (status.leaderLastSeen, as a healthy tick writes it).
STATE = d.State(current_leader=L, last_seen=d.LeaderSnapshot(L, lease_members=(F1, F2)))


def lost(seconds: float = 5.0) -> d.Memory:
    return d.Memory(leader_lost_since=NOW - seconds)


# ------------------------------------------------------------------ leader verdict


def test_healthy_cluster_needs_nothing():
    step = d.decide(obs(leader(), follower(F1), follower(F2)), STATE, SPEC, NOW, d.Memory())
    assert step.kind == "steady"
    assert step.actions == () and step.notes == ()
    assert step.memory.leader_lost_since is None


def test_unreachable_leader_waits_for_the_timeout():
    o = obs(down(L, names.LEADER), follower(F1, status=None), follower(F2, status=None))
    step = d.decide(o, STATE, SPEC, NOW, d.Memory())
    assert step.kind == "waiting"
    assert step.memory.leader_lost_since == NOW
    step = d.decide(o, STATE, SPEC, NOW + 2.9, step.memory)
    assert step.kind == "waiting" and step.record is None


def test_unreachable_leader_with_witness_fails_over_to_most_advanced():
    o = obs(down(L, names.LEADER), follower(F1, recv=900, status=None), follower(F2, recv=950, status=None))
    step = d.decide(o, STATE, SPEC, NOW, lost(3.0))
    assert step.kind == "failover"
    assert step.record is not None
    assert (step.record.phase, step.record.from_, step.record.to) == (d.FENCING, L, F2)
    assert step.record.reason == reasons.LEADER_UNREACHABLE
    assert [n.reason for n in step.notes] == [reasons.LEADER_UNREACHABLE, reasons.FAILOVER_STARTED]
    assert step.memory.leader_lost_since is None


def test_no_failover_while_followers_still_stream_from_the_leader():
    o = obs(down(L, names.LEADER), follower(F1, age=0.4), follower(F2, age=1.0))
    step = d.decide(o, STATE, SPEC, NOW, lost(10))
    assert step.kind == "waiting"
    assert "still stream" in step.message


def test_stale_last_message_is_a_witness():
    o = obs(down(L, names.LEADER), follower(F1, age=3.5), follower(F2, age=0.2))
    assert d.decide(o, STATE, SPEC, NOW, lost(3)).kind == "failover"


def test_follower_of_another_upstream_is_no_witness():
    o = obs(down(L, names.LEADER), follower(F1, status=None, upstream=""), follower(F2, age=0.1))
    assert d.decide(o, STATE, SPEC, NOW, lost(5)).kind == "waiting"


def test_follower_of_rw_service_counts_as_witness():
    o = obs(
        down(L, names.LEADER), follower(F1, status=None, upstream="a-db-rw.ns.svc"), follower(F2, age=0.1)
    )
    assert d.decide(o, STATE, SPEC, NOW, lost(5)).kind == "failover"


def test_leader_pod_gone_is_a_witness():
    o = obs(down(L, names.LEADER, deleting=True), follower(F1, age=0.1), follower(F2, age=0.1))
    step = d.decide(o, STATE, SPEC, NOW, lost(3))
    assert step.kind == "failover" and step.record is not None
    assert step.record.reason == reasons.LEADER_POD_LOST


# A leader pod that is certainly down fails over at once (podLostTimeoutSeconds, default 0), even while the
# followers have not noticed yet; one that merely does not answer waits for leaderTimeoutSeconds.
SEEN = d.Memory(leader_pod=d.SeenPod(L, "uid-1", 0))


def _fails_at_once(leader_inst: Instance, memory: d.Memory = SEEN) -> d.Step:
    o = obs(leader_inst, follower(F1, age=0.1), follower(F2, recv=1200, age=0.1))
    step = d.decide(o, STATE, SPEC, NOW, memory)
    assert step.kind == "failover" and step.record is not None, step.message
    assert (step.record.reason, step.record.to) == (reasons.LEADER_POD_LOST, F2)
    return step


def test_deleted_leader_pod_fails_over_at_once():
    step = _fails_at_once(down(L, names.LEADER, deleting=True), d.Memory())
    assert "being deleted" in step.message


def test_replaced_leader_pod_fails_over_at_once():
    step = _fails_at_once(down(L, None, uid="uid-2", phase="Pending"))
    assert "Pending" in step.message
    step = _fails_at_once(down(L, None, uid="uid-2"))  # already Running again, but not answering
    assert "replaced" in step.message


def test_restarted_leader_container_fails_over_at_once():
    step = _fails_at_once(down(L, names.LEADER, uid="uid-1", restarts=1))
    assert "restarted" in step.message
    step = _fails_at_once(down(L, names.LEADER, uid="uid-1", running=False))
    assert "not running" in step.message


REFUSED = Instance(L, pod(L, names.LEADER, uid="uid-1"),
                   Probe(reachable=False, error="Connection refused", refused=True))


def test_a_killed_postmaster_fails_over_at_once():
    """Refused, the operator's lease session to it broken, and no follower streaming from it: what a dead
    postmaster looks like, and no enforcer's rejection does."""
    o = replace(obs(REFUSED, follower(F1, status=None), follower(F2, recv=1200, status=None)),
                lease_session_lost=frozenset({L}))
    step = d.decide(o, STATE, SPEC, NOW, SEEN)
    assert step.kind == "failover" and step.record is not None, step.message
    assert (step.record.reason, step.record.to) == (reasons.LEADER_POD_LOST, F2)
    assert "connection refused" in step.message


@pytest.mark.parametrize("why, o", [
    ("its lease session still works",
     obs(REFUSED, follower(F1, status=None), follower(F2, status=None))),
    ("a follower still streams from it",
     replace(obs(REFUSED, follower(F1, status=None), follower(F2, status="streaming")),
             lease_session_lost=frozenset({L}))),
    ("a follower does not answer (it may stream from it)",
     replace(obs(REFUSED, follower(F1, status=None), down(F2, names.FOLLOWER)),
             lease_session_lost=frozenset({L}))),
])
def test_a_refusal_without_corroboration_is_no_proof(why: str, o: DbObservation) -> None:
    """A NetworkPolicy enforcer that rejects sends a live leader's clients "connection refused" too."""
    assert not d.refusal_proves_down(o, L, "10.0.0.1"), why
    assert d.decide(o, STATE, SPEC, NOW, SEEN).kind == "waiting", why


def test_pod_lost_timeout_is_honoured():
    spec = replace(SPEC, failover=replace(SPEC.failover, pod_lost_timeout_seconds=1.0))
    o = obs(down(L, names.LEADER, deleting=True), follower(F1, age=0.1), follower(F2, age=0.1))
    step = d.decide(o, STATE, spec, NOW, d.Memory())
    assert step.kind == "waiting"
    assert d.decide(o, STATE, spec, NOW + 1.0, step.memory).kind == "failover"


def test_unready_but_running_leader_is_no_certain_loss():
    """pg_isready failing is what a frozen postmaster looks like too: wait for the timeout and a witness."""
    o = obs(down(L, names.LEADER, uid="uid-1", ready=False), follower(F1, age=0.1), follower(F2, age=0.1))
    step = d.decide(o, STATE, SPEC, NOW, SEEN)
    assert step.kind == "waiting"
    assert d.decide(o, STATE, SPEC, NOW + 5, step.memory).kind == "waiting"  # followers still stream


def test_restarts_only_count_for_the_pod_seen_healthy():
    # Another leader's history, or an operator that never saw the leader healthy: no restart evidence.
    o = obs(down(L, names.LEADER, uid="uid-1", restarts=3), follower(F1, age=0.1), follower(F2, age=0.1))
    assert d.decide(o, STATE, SPEC, NOW, d.Memory(leader_pod=d.SeenPod(F1, "uid-1", 0))).kind == "waiting"
    assert d.decide(o, STATE, SPEC, NOW, d.Memory()).kind == "waiting"


def test_healthy_leader_pod_is_remembered():
    o = obs(leader(uid="uid-7", restarts=2), follower(F1), follower(F2))
    assert d.decide(o, STATE, SPEC, NOW, d.Memory()).memory.leader_pod == d.SeenPod(L, "uid-7", 2, "10.0.0.1")


def test_blind_interval_after_an_operator_takeover_counts_toward_the_timeout():
    """The node of the database leader and of the operator's Lease holder died together: the new holder's
    first look already counts the time nobody watched, but still needs a witness."""
    o = obs(down(L, names.LEADER), follower(F1, status=None), follower(F2, status=None))
    blind = d.Memory(unwatched_since=NOW - 9)
    step = d.decide(o, STATE, SPEC, NOW, blind)
    assert step.kind == "failover" and "for 9.0s" in step.message
    streaming = obs(down(L, names.LEADER), follower(F1, age=0.2), follower(F2, age=0.2))
    assert d.decide(streaming, STATE, SPEC, NOW, blind).kind == "waiting"  # no witness, no failover
    # Once this operator has seen the leader healthy, only its own timer counts.
    seen = d.decide(obs(leader(), follower(F1), follower(F2)), STATE, SPEC, NOW, blind).memory
    assert d.decide(o, STATE, SPEC, NOW + 1, seen).kind == "waiting"


def test_leader_node_not_ready_is_a_witness():
    o = obs(down(L, names.LEADER, node_ready=False), follower(F1, age=0.1), follower(F2, age=0.1))
    assert d.decide(o, STATE, SPEC, NOW, lost(3)).kind == "failover"


def test_leader_in_recovery_is_its_own_witness():
    o = obs(follower(L, upstream="", status=None, role=names.LEADER), follower(F1, recv=2000), follower(F2))
    step = d.decide(o, STATE, SPEC, NOW, lost(3))
    assert step.kind == "failover" and step.record is not None
    assert step.record.reason == reasons.LEADER_NOT_PRIMARY
    assert step.record.to == F1


def test_operator_cut_off_does_nothing():
    o = obs(down(L, names.LEADER), down(F1), down(F2))
    step = d.decide(o, STATE, SPEC, NOW, lost(60))
    assert step.kind == "cutoff" and step.actions == () and step.record is None
    assert step.memory.leader_lost_since is None


def test_failover_disabled_is_blocked_and_says_so():
    spec = replace(SPEC, failover=replace(SPEC.failover, enabled=False))
    o = obs(down(L, names.LEADER), follower(F1, status=None), follower(F2, status=None))
    step = d.decide(o, STATE, spec, NOW, lost(5))
    assert step.kind == "blocked"
    assert reasons.FAILOVER_BLOCKED in [n.reason for n in step.notes]


# ------------------------------------------------------------------ candidates


def test_candidate_prefers_received_then_replay_then_name():
    o = obs(down(L), follower(F1, recv=500, replay=100), follower(F2, recv=500, replay=400))
    assert d.choose_candidate(o, {L}, SPEC, STATE).name == F2
    o = obs(down(L), follower(F1, recv=500, replay=400), follower(F2, recv=500, replay=400))
    assert d.choose_candidate(o, {L}, SPEC, STATE).name == F1
    o = obs(down(L), follower(F1, recv=600, replay=100), follower(F2, recv=500, replay=500))
    assert d.choose_candidate(o, {L}, SPEC, STATE).name == F1


def test_candidate_must_be_reachable_ready_and_not_deleting():
    o = obs(down(L), follower(F1, recv=900, ready=False), follower(F2, recv=100, deleting=True))
    assert d.choose_candidate(o, {L}, SPEC, STATE).name is None
    o = obs(down(L), down(F1), follower(F2, recv=100))
    assert d.choose_candidate(o, {L}, SPEC, STATE).name == F2


def seen(lsn: int | None = None, members: tuple[str, ...] = (), k: int = 1,
         name: str = L) -> d.LeaderSnapshot:
    return d.LeaderSnapshot(name, lsn=lsn, quorum=d.SyncQuorum(k, members) if members else None,
                            lease_members=(F1, F2))


def test_lagging_candidate_refused_unless_data_loss_allowed():
    state = replace(STATE, last_seen=seen(lsn=1000))
    o = obs(down(L), follower(F1, recv=800), follower(F2, recv=850))
    choice = d.choose_candidate(o, {L}, SPEC, state)
    assert choice.name is None and "150 bytes behind" in choice.why
    allow = replace(SPEC, failover=replace(SPEC.failover, allow_data_loss=True))
    assert d.choose_candidate(o, {L}, allow, state).name == F2
    near = obs(down(L), follower(F1, recv=950))
    assert d.choose_candidate(near, {L}, SPEC, state).name == F1


def test_sync_quorum_needs_enough_reachable_members():
    spec = replace(SPEC, synchronous=True, sync_replicas=1)
    state = replace(STATE, last_seen=seen(10**9, (F1, F2)))  # the lag rule does not apply with a quorum
    one = obs(down(L), follower(F1, recv=10), down(F2))
    choice = d.choose_candidate(one, {L}, spec, state)
    assert choice.name is None and "1 of its members reachable, 2 needed" in choice.why
    both = obs(down(L), follower(F1, recv=10), follower(F2, recv=20))
    assert d.choose_candidate(both, {L}, spec, state).name == F2
    all_sync = replace(state, last_seen=seen(10**9, (F1, F2), k=2))  # ANY 2 of 2: every member has all
    assert d.choose_candidate(one, {L}, spec, all_sync).name == F1


def test_a_quorum_member_still_replaying_after_a_restart_is_waited_for():
    """Seen in CI: a follower back from a stopped node showed only part of what it held (no receiver, local
    WAL still replaying); ranking then promoted the other member, which lacked acknowledged commits."""
    spec = replace(SPEC, synchronous=True, sync_replicas=1)
    state = replace(STATE, last_seen=seen(10**9, (F1, F2)))
    back = follower(F2, recv=None, replay=15, status=None)
    replaying = replace(back, probe=replace(back.probe, replay_settled=False))
    o = obs(down(L), follower(F1, recv=20, status=None), replaying)
    choice = d.choose_candidate(o, {L}, spec, state)
    assert choice.name is None and "waiting for a-db-2 to replay" in choice.why, choice
    done = replace(back, probe=replace(back.probe, replay_lsn=30, replay_settled=True))
    settled = obs(down(L), follower(F1, recv=20, status=None), done)
    assert d.choose_candidate(settled, {L}, spec, state).name == F2


def test_a_restarted_follower_counts_what_it_replayed_beyond_where_its_stream_started():
    """After a restart the receiver reports its streaming start (a segment start), behind its replay."""
    spec = replace(SPEC, synchronous=True, sync_replicas=1)
    state = replace(STATE, last_seen=seen(10**9, (F1, F2)))
    o = obs(down(L), follower(F1, recv=20), follower(F2, recv=16, replay=30))
    assert d.choose_candidate(o, {L}, spec, state).name == F2


def test_a_snapshot_of_another_leader_is_not_used():
    state = replace(STATE, last_seen=seen(10**9, (F1, F2), name=F2))
    assert d.choose_candidate(obs(down(L), follower(F1, recv=10), down(F2)), {L}, SPEC, state).name == F1


def test_preferred_sync_mode_without_a_quorum_falls_back_to_the_lag_rule():
    spec = replace(SPEC, synchronous=True, durability=Durability.PREFERRED)
    state = replace(STATE, last_seen=seen(lsn=1000))
    o = obs(down(L), follower(F1, recv=10))
    assert d.choose_candidate(o, {L}, spec, state).name is None
    assert d.choose_candidate(obs(down(L), follower(F1, recv=990)), {L}, spec, state).name == F1


def test_required_sync_mode_without_a_known_quorum_refuses():
    spec = replace(SPEC, synchronous=True)
    for state in (STATE, replace(STATE, last_seen=seen(lsn=1000))):
        choice = d.choose_candidate(obs(down(L), follower(F1, recv=1000)), {L}, spec, state)
        assert choice.name is None and "required" in choice.why


def test_candidates_on_the_newest_timeline_come_first():
    o = obs(down(L), follower(F1, recv=9000, tl=1), follower(F2, recv=100, tl=2))
    assert d.choose_candidate(o, {L}, SPEC, STATE).name == F2


def test_failover_blocked_when_no_candidate():
    o = obs(down(L, names.LEADER, deleting=True), down(F1), follower(F2, ready=False))
    step = d.decide(o, STATE, SPEC, NOW, lost(5))
    assert step.kind == "blocked" and "no reachable, ready follower" in step.message


def test_preferred_quorum_names_the_streaming_followers_only():
    sync = replace(SPEC, synchronous=True, sync_replicas=1, durability=Durability.PREFERRED)
    o = obs(leader(), follower(F1), follower(F2))
    assert d.render_quorum(d.want_quorum(o, L, [F2, F1], sync)) == 'ANY 1 ("a-db-1", "a-db-2")'
    assert d.render_quorum(d.want_quorum(o, L, [F1], replace(sync, sync_replicas=3))) == 'ANY 1 ("a-db-1")'
    assert d.want_quorum(o, L, [], sync) is None
    assert d.want_quorum(o, L, [F1, F2], SPEC) is None


def test_required_quorum_names_every_desired_follower_streaming_or_not():
    sync = replace(SPEC, synchronous=True, sync_replicas=1)
    o = obs(leader(streaming=()), down(F1), follower(F2, status=None))
    assert d.want_quorum(o, L, [], sync) == d.SyncQuorum(1, (F1, F2))
    assert d.want_quorum(o, F1, [], sync) == d.SyncQuorum(1, (L, F2))


def test_sync_quorum_parse_and_widen():
    assert d.SyncQuorum.parse('ANY 1 ("a-db-1", "a-db-2")') == d.SyncQuorum(1, (F1, F2))
    assert d.SyncQuorum.parse("FIRST 2 (a, b, c)") == d.SyncQuorum(2, ("a", "b", "c"))
    assert d.SyncQuorum.parse("2 (b, a)") == d.SyncQuorum(2, ("a", "b"))
    assert d.SyncQuorum.parse("a, b") == d.SyncQuorum(1, ("a", "b"))
    assert d.SyncQuorum.parse("") is None and d.SyncQuorum.parse("  ") is None
    assert d.SyncQuorum(2, ("a", "b")).widen(d.SyncQuorum(1, ("c",))) == d.SyncQuorum(1, ("a", "b", "c"))
    assert d.SyncQuorum(1, ("a", "b", "c")).need == 3
    assert d.SyncQuorum(2, ("a", "b", "c")).need == 2


# ------------------------------------------------------------------ phases


REC = d.FailoverRecord(d.FENCING, L, F1, reasons.LEADER_UNREACHABLE, "2024-01-01T00:00:00.000Z")


def promoting(pod: str, sync: str = "", floor: int = 1) -> tuple[d.Action, ...]:
    """What a promotion does, in order: the new leader's standbys and lease members while it is a standby,
    its lease renewed, then pg_promote past the tier's newest timeline (`floor`)."""
    members = tuple(n for n in (L, F1, F2) if n != pod)
    return (d.SetSyncStandbys(pod, sync), d.SetLeaseMembers(pod, members), d.RenewLease(pod),
            d.Promote(pod, floor))


def test_fencing_unreachable_leader_relabels_and_detaches_followers():
    o = obs(down(L, names.LEADER), follower(F1), follower(F2))
    plan = d.phase_plan(REC, o, SPEC, STATE, NOW)
    assert plan.actions == (d.SetRole(L, names.FENCED), d.Detach(F1), d.Detach(F2))
    assert plan.after == replace(REC, phase=d.PROMOTING)
    assert plan.notes[0].reason == reasons.LEADER_FENCED


def test_fencing_reachable_leader_also_makes_it_read_only():
    o = obs(follower(L, upstream="", status=None), follower(F1), follower(F2, upstream=""))
    o2 = obs(leader(), follower(F1), follower(F2))
    plan = d.phase_plan(REC, o2, SPEC, STATE, NOW)
    assert plan.actions[:3] == (d.SetRole(L, names.FENCED), d.Fence(L, checkpoint=False), d.Stop(L))
    assert d.Detach(F1) in plan.actions
    plan = d.phase_plan(REC, o, SPEC, STATE, NOW)
    assert d.Detach(F2) not in plan.actions  # already detached


def test_planned_fencing_checkpoints_and_keeps_followers_streaming():
    rec = replace(REC, reason=reasons.SWITCHOVER_REQUESTED)
    plan = d.phase_plan(rec, obs(leader(), follower(F1), follower(F2)), SPEC, STATE, NOW)
    assert plan.actions == (d.SetRole(L, names.FENCED), d.Fence(L, checkpoint=True))


def test_promoting_promotes_the_recorded_target():
    rec = replace(REC, phase=d.PROMOTING)
    o = obs(down(L), follower(F1, recv=500, status=None), follower(F2, recv=500, status=None))
    plan = d.phase_plan(rec, o, SPEC, STATE, NOW)
    assert plan.actions == promoting(F1)
    # Persisted before the Promote runs: from then on only F1 may be promoted.
    assert plan.before == replace(rec, promote_sent=True)
    assert plan.after == replace(rec, phase=d.REWIRING, promote_sent=True)


def test_promoting_switches_to_a_more_advanced_follower():
    rec = replace(REC, phase=d.PROMOTING)
    o = obs(down(L), follower(F1, recv=500, status=None), follower(F2, recv=700, status=None))
    plan = d.phase_plan(rec, o, SPEC, STATE, NOW)
    assert plan.actions == promoting(F2)
    assert plan.after is not None and plan.after.to == F2


def test_promoting_skips_when_target_already_primary():
    rec = replace(REC, phase=d.PROMOTING)
    plan = d.phase_plan(rec, obs(down(L), leader(F1, streaming=()), follower(F2)), SPEC, STATE, NOW)
    assert plan.actions == () and plan.after == replace(rec, phase=d.REWIRING)


def test_promoting_blocked_without_candidate_keeps_record():
    rec = replace(REC, phase=d.PROMOTING)
    plan = d.phase_plan(rec, obs(down(L), down(F1), down(F2)), SPEC, STATE, NOW)
    assert plan.outcome is d.Outcome.WAIT and plan.after == rec and plan.actions == ()


def test_switchover_waits_for_target_to_catch_up():
    rec = d.FailoverRecord(d.PROMOTING, L, F1, reasons.SWITCHOVER_REQUESTED, "")
    behind = obs(leader(lsn=2000), follower(F1, recv=1500), follower(F2))
    plan = d.phase_plan(rec, behind, SPEC, STATE, NOW)
    assert plan.outcome is d.Outcome.WAIT and "500 bytes" in plan.message and plan.actions == ()
    caught = obs(leader(lsn=2000), follower(F1, recv=2000), follower(F2))
    # The clean stop hands the target what a client still committed with BEGIN READ WRITE.
    assert d.phase_plan(rec, caught, SPEC, STATE, NOW).actions == (
        d.Stop(L, clean=True), *promoting(F1))


def test_a_switchover_whose_target_went_away_is_called_off():
    rec = d.FailoverRecord(d.PROMOTING, L, F1, reasons.SWITCHOVER_REQUESTED, "")
    gone = obs(leader(lsn=2000, read_only=True, role=names.FENCED), down(F1), follower(F2))
    plan = d.phase_plan(rec, gone, SPEC, STATE, NOW)
    assert plan.outcome is d.Outcome.ABORTED and plan.after is None and plan.current_leader == L
    assert plan.actions == (d.RenewLease(L), d.SetRole(L, names.LEADER), d.Unfence(L),
                            d.Repoint(F2, L, names.db_slot(F2)))
    assert plan.notes[0].reason == reasons.FAILOVER_ABORTED


def test_a_stuck_failover_is_called_off_once_the_old_leader_answers_again():
    """Promoting found no candidate (the quorum is not reachable) and the old leader came back: nobody was
    promoted, so it leads again instead of staying fenced with its followers detached."""
    spec = replace(SPEC, synchronous=True)
    state = replace(STATE, last_seen=seen(5000, (F1, F2)))
    rec = replace(REC, phase=d.PROMOTING)
    still_down = obs(down(L), follower(F1, status=None, upstream=""), down(F2))
    plan = d.phase_plan(rec, still_down, spec, state, NOW)
    assert plan.outcome is d.Outcome.WAIT and "needed" in plan.message
    back = obs(leader(lsn=5000, streaming=(), read_only=True, role=names.FENCED),
               follower(F1, status=None, upstream=""), down(F2))
    plan = d.phase_plan(rec, back, spec, state, NOW)
    assert plan.outcome is d.Outcome.ABORTED and plan.current_leader == L
    assert d.Unfence(L) in plan.actions and d.Repoint(F1, L, names.db_slot(F1)) in plan.actions
    # No Promote was sent, so even an unreachable target cannot be a primary: called off too.
    unsure = obs(leader(lsn=5000, streaming=()), down(F1), down(F2))
    assert d.phase_plan(rec, unsure, spec, state, NOW).outcome is d.Outcome.ABORTED
    # Once a Promote may have been sent, the target may be a primary: wait for it, never call it off.
    sent = replace(rec, promote_sent=True)
    plan = d.phase_plan(sent, unsure, spec, state, NOW)
    assert plan.outcome is d.Outcome.WAIT and "may have been promoted" in plan.message


def test_rewiring_moves_labels_repoints_and_sets_sync_names():
    rec = replace(REC, phase=d.REWIRING)
    spec = replace(SPEC, synchronous=True, durability=Durability.PREFERRED)
    o = obs(down(L), leader(F1, streaming=(), read_only=True), follower(F2, upstream=""))
    plan = d.phase_plan(rec, o, spec, STATE, NOW)
    assert plan.actions == (
        d.RenewLease(F1),
        d.SetLeaseMembers(F1, (L, F2)),
        d.SetRole(L, names.FENCED),
        d.SetRole(F1, names.LEADER),
        d.Unfence(F1),
        # The promoted follower has no slots: they are created before anyone is pointed at them.
        d.CreateSlots(F1, (names.db_slot(L), names.db_slot(F2))),
        d.Repoint(F2, F1, names.db_slot(F2)),
        d.SetSyncStandbys(F1, ""),
    )
    assert plan.outcome is d.Outcome.DONE and plan.after is None and plan.current_leader == F1
    assert [n.reason for n in plan.notes] == [reasons.SERVICES_REWIRED, reasons.FOLLOWERS_REPOINTED]


def test_rewiring_in_required_mode_names_every_other_instance_at_once():
    """The new leader must acknowledge nothing before a follower has it: never '' after a failover."""
    rec = replace(REC, phase=d.REWIRING)
    spec = replace(SPEC, synchronous=True)
    o = obs(down(L), leader(F1, streaming=(), lsn=7000), follower(F2, upstream=""))
    plan = d.phase_plan(rec, o, spec, STATE, NOW)
    assert d.SetSyncStandbys(F1, 'ANY 1 ("a-db-0", "a-db-2")') in plan.actions
    assert plan.last_seen == d.LeaderSnapshot(F1, 7000, 1, d.SyncQuorum(1, (L, F2)), d.iso(NOW), (L, F2))


def test_resume_in_flight_record_first():
    state = replace(STATE, failover=replace(REC, phase=d.PROMOTING))
    step = d.decide(obs(leader(), follower(F1), follower(F2)), state, SPEC, NOW, d.Memory())
    assert step.kind == "failover" and step.record == state.failover


def test_finished_record_has_duration():
    rec = replace(REC, started_at=d.iso(NOW))
    last = d.finished(rec, NOW + 1.25)
    assert last["durationSeconds"] == 1.25 and last["to"] == F1 and last["finishedAt"] == d.iso(NOW + 1.25)


# ------------------------------------------------------------------ steady state


def test_labels_are_set_right():
    o = obs(leader(role=None), follower(F1, role=None), follower(F2, role=names.FENCED))
    step = d.decide(o, STATE, SPEC, NOW, d.Memory())
    assert set(step.actions) == {
        d.SetRole(L, names.LEADER),
        d.SetRole(F1, names.FOLLOWER),
        d.SetRole(F2, names.FOLLOWER),
    }


def test_non_streaming_follower_gets_no_follower_label():
    o = obs(leader(streaming=(F2,)), follower(F1, role=None, status=None), follower(F2))
    assert d.SetRole(F1, names.FOLLOWER) not in d.decide(o, STATE, SPEC, NOW, d.Memory()).actions


def test_old_leader_back_as_primary_is_fenced_and_restarted():
    o = obs(
        leader(F1, streaming=(F2,), lease=(L, F2)), leader(L, role=names.FENCED, streaming=()),
        follower(F2, upstream=F1)
    )
    step = d.decide(o, replace(STATE, current_leader=F1), SPEC, NOW, d.Memory())
    assert d.Fence(L) in step.actions and d.Stop(L) in step.actions
    assert reasons.REJOIN_STARTED in [n.reason for n in step.notes]
    deleting = obs(
        leader(F1, streaming=(F2,), lease=(L, F2)),
        leader(L, role=names.FENCED, read_only=True, deleting=True),
        follower(F2, upstream=F1),
    )
    assert d.decide(deleting, replace(STATE, current_leader=F1), SPEC, NOW, d.Memory()).actions == ()


def test_follower_with_wrong_upstream_is_repointed():
    o = obs(leader(streaming=(F2,)), follower(F1, upstream="a-db-9", status=None), follower(F2))
    assert d.Repoint(F1, L, names.db_slot(F1)) in d.decide(o, STATE, SPEC, NOW, d.Memory()).actions


def _with_addr(inst: Instance, hostaddr: str | None) -> Instance:
    return replace(inst, probe=replace(inst.probe, primary_hostaddr=hostaddr))


def test_follower_pinned_to_a_stale_leader_ip_is_repointed():
    """The leader restarted under a new IP: cluster DNS may serve the old one for a minute, so the operator
    re-pins hostaddr instead of waiting for it."""
    o = obs(leader(ip="10.0.0.9", streaming=(F2,)),
            _with_addr(follower(F1, status=None), "10.0.0.1"), _with_addr(follower(F2), "10.0.0.9"))
    actions = d.decide(o, STATE, SPEC, NOW, d.Memory()).actions
    assert d.Repoint(F1, L, names.db_slot(F1)) in actions
    assert d.Repoint(F2, L, names.db_slot(F2)) not in actions


def test_unpinned_follower_is_repointed_only_when_it_does_not_stream():
    # start.sh writes host= only; a streaming follower keeps it (a re-point restarts its WAL receiver).
    o = obs(leader(streaming=(F2,)), follower(F1, status=None), follower(F2))
    actions = d.decide(o, STATE, SPEC, NOW, d.Memory()).actions
    assert d.Repoint(F1, L, names.db_slot(F1)) in actions
    assert d.Repoint(F2, L, names.db_slot(F2)) not in actions


def test_sync_names_follow_streaming_followers_when_preferred():
    spec = replace(SPEC, synchronous=True, durability=Durability.PREFERRED)
    o = obs(
        leader(streaming=(F1,), sync_names='ANY 1 ("a-db-1", "a-db-2")'),
        follower(F1),
        follower(F2, status=None),
    )
    step = d.decide(o, STATE, spec, NOW, d.Memory())
    assert d.SetSyncStandbys(L, 'ANY 1 ("a-db-1")') in step.actions
    assert reasons.SYNC_STANDBYS_UPDATED in [n.reason for n in step.notes]
    # Persisted before the change is applied, the guard still covers what F2 may have acknowledged.
    assert step.persist_first and step.last_seen is not None
    assert step.last_seen.quorum == d.SyncQuorum(1, (F1, F2))
    ok = obs(leader(streaming=(F1,), sync_names='ANY 1 ("a-db-1")'), follower(F1), follower(F2, status=None))
    assert not any(
        isinstance(a, d.SetSyncStandbys) for a in d.decide(ok, STATE, spec, NOW, d.Memory()).actions
    )


def test_read_only_leader_is_unfenced():
    step = d.decide(obs(leader(read_only=True), follower(F1), follower(F2)), STATE, SPEC, NOW, d.Memory())
    assert d.Unfence(L) in step.actions


def test_rejoin_marker_reported_once():
    m = "method=rewind pod=a-db-1 at=1"
    o = obs(leader(), follower(F1, marker=m), follower(F2, marker="method=basebackup pod=a-db-0 at=1"))
    step = d.decide(o, STATE, SPEC, NOW, d.Memory())
    assert [n.reason for n in step.notes] == [reasons.FOLLOWER_REJOINED]
    again = d.decide(o, STATE, SPEC, NOW, step.memory)
    assert again.notes == ()
    bb = obs(leader(), follower(F1, marker="method=basebackup pod=a-db-1 at=2"), follower(F2))
    assert [n.reason for n in d.decide(bb, STATE, SPEC, NOW, step.memory).notes] == [
        reasons.REJOIN_BY_BASE_BACKUP
    ]


def test_stuck_follower_on_old_timeline_is_restarted_after_a_while():
    o = obs(leader(tl=2, streaming=(F2,)), follower(F1, status=None, tl=1), follower(F2, tl=2))
    step = d.decide(o, STATE, SPEC, NOW, d.Memory())
    assert d.DeletePod(F1) not in step.actions
    later = d.decide(o, STATE, SPEC, NOW + d.STUCK_SECONDS, step.memory)
    assert d.DeletePod(F1) in later.actions
    assert F1 not in later.memory.stuck_since


def test_switchover_request():
    spec = replace(SPEC, switchover_to=F2)
    step = d.decide(obs(leader(), follower(F1), follower(F2)), STATE, spec, NOW, d.Memory())
    assert step.kind == "failover" and step.record is not None
    assert (step.record.to, step.record.reason) == (F2, reasons.SWITCHOVER_REQUESTED)
    annotated = replace(STATE, switchover_request=F1)
    step = d.decide(obs(leader(), follower(F1), follower(F2)), annotated, SPEC, NOW, d.Memory())
    assert step.record is not None and step.record.to == F1
    waiting = d.decide(
        obs(leader(streaming=(F1,)), follower(F1), follower(F2, status=None)), STATE, spec, NOW, d.Memory()
    )
    assert waiting.kind == "steady" and "not a streaming follower" in waiting.message
    done = d.decide(
        obs(leader(F2, streaming=(F1, L)), follower(F1, upstream=F2), follower(L, upstream=F2)),
        replace(STATE, current_leader=F2),
        spec,
        NOW,
        d.Memory(),
    )
    assert done.record is None


def test_scale_down_past_the_leader_switches_over_first():
    o = obs(
        follower(L, upstream=F2), follower(F1, upstream=F2, recv=10),
        leader(F2, streaming=(L, F1), lease=(L, F1)), desired=2
    )
    step = d.decide(o, replace(STATE, current_leader=F2), SPEC, NOW, d.Memory())
    assert step.record is not None
    assert (step.record.to, step.record.reason) == (L, reasons.SCALE_DOWN)


def test_rolling_update_followers_first_then_switchover():
    o = obs(leader(up_to_date=False), follower(F1, up_to_date=False), follower(F2, up_to_date=False))
    step = d.decide(o, STATE, SPEC, NOW, d.Memory())
    assert step.actions == (d.DeletePod(F1),)
    o = obs(leader(up_to_date=False), follower(F1), follower(F2, recv=2000))
    step = d.decide(o, STATE, SPEC, NOW, d.Memory())
    assert step.record is not None and (step.record.to, step.record.reason) == (F2, reasons.ROLLING_UPDATE)
    unsettled = obs(leader(up_to_date=False, streaming=(F2,)), follower(F1, status=None), follower(F2))
    assert d.decide(unsettled, STATE, SPEC, NOW, d.Memory()).record is None


def test_a_cordoned_leader_node_hands_over_to_a_follower_on_an_uncordoned_node():
    # F2 has more WAL but sits on a cordoned node too: the drain would take it next.
    o = obs(leader(node_cordoned=True), follower(F1), follower(F2, recv=2000, node_cordoned=True))
    step = d.decide(o, STATE, SPEC, NOW, d.Memory())
    assert step.kind == "failover" and step.record is not None
    assert (step.record.to, step.record.reason) == (F1, reasons.LEADER_NODE_DRAINING)
    assert step.record.planned
    # Only followers that stream from the leader qualify, whatever their WAL.
    o = obs(leader(node_cordoned=True, streaming=(F2,)), follower(F1, status=None),
            follower(F2, node_cordoned=True))
    waiting = d.decide(o, STATE, SPEC, NOW, d.Memory())
    assert waiting.record is None and "no streaming follower on an uncordoned node" in waiting.message
    # A cordoned follower is no reason to move anything.
    calm = d.decide(obs(leader(), follower(F1, node_cordoned=True), follower(F2)), STATE, SPEC, NOW,
                    d.Memory())
    assert calm.kind == "steady" and calm.record is None


def test_planned_changes_prefer_a_follower_on_an_uncordoned_node():
    o = obs(leader(up_to_date=False), follower(F1), follower(F2, recv=2000, node_cordoned=True))
    step = d.decide(o, STATE, SPEC, NOW, d.Memory())
    assert step.record is not None and (step.record.to, step.record.reason) == (F1, reasons.ROLLING_UPDATE)


def test_bootstrap_picks_ordinal_zero_or_adopts_a_primary():
    step = d.decide(obs(down(L), down(F1), down(F2)), d.State(), SPEC, NOW, d.Memory())
    assert step.kind == "bootstrap" and step.current_leader == L
    assert step.actions == (d.SetRole(L, names.LEADER),)
    assert step.notes[0].reason == reasons.LEADER_ELECTED
    step = d.decide(obs(follower(L), leader(F1, role=None), down(F2)), d.State(), SPEC, NOW, d.Memory())
    assert step.current_leader == F1


def test_state_from_status():
    status = {
        "currentLeader": L,
        "failover": {"phase": d.PROMOTING, "from": L, "to": F1, "reason": "X", "startedAt": "t"},
        "leaderLastSeen": {"name": L, "lsn": "0/100", "timeline": 3, "syncStandbys": [F2, F1],
                           "syncQuorum": 1, "at": "t"},
    }
    s = d.State.from_status(status, {d.SWITCHOVER_ANNOTATION: F2})
    assert s.current_leader == L
    assert s.last_seen == d.LeaderSnapshot(L, 0x100, 3, d.SyncQuorum(1, (F1, F2)), "t")
    assert d.LeaderSnapshot.from_status(s.last_seen.to_status()) == s.last_seen
    assert s.failover == d.FailoverRecord(d.PROMOTING, L, F1, "X", "t")
    assert s.switchover_request == F2
    assert d.FailoverRecord.from_status({"phase": "Bogus", "to": F1}) is None
    assert s.failover.to_status()["from"] == L


def test_killed_old_leader_skips_the_restart_back_off():
    """An old leader whose postgres was killed after a long run waits in CrashLoopBackOff: its pod is
    deleted, so it restarts and rejoins at once. A pod crash-looping on start keeps the kubelet's back-off;
    a leader in back-off is failed over, not deleted."""
    killed = down(F1, names.FENCED, running=False, back_off_after_kill=300.0)
    o = obs(leader(streaming=(F2,)), killed, follower(F2))
    step = d.decide(o, STATE, SPEC, NOW, d.Memory())
    assert d.DeletePod(F1) in step.actions
    assert [n.reason for n in step.notes] == [reasons.RESTART_BACK_OFF_SKIPPED]
    crash_loop = obs(leader(streaming=(F2,)), down(F1, running=False, back_off_after_kill=2.0), follower(F2))
    assert d.DeletePod(F1) not in d.decide(crash_loop, STATE, SPEC, NOW, d.Memory()).actions
    deleting = obs(leader(streaming=(F2,)), down(F1, back_off_after_kill=300.0, deleting=True), follower(F2))
    assert d.decide(deleting, STATE, SPEC, NOW, d.Memory()).actions == ()
    lead = obs(down(L, names.LEADER, running=False, back_off_after_kill=300.0), follower(F1), follower(F2))
    step = d.decide(lead, STATE, SPEC, NOW, d.Memory())
    assert step.kind == "failover" and not step.actions


# ------------------------------------------------------------------ the guards outlive the leader


def _tick_status(status: dict, o: DbObservation, step: d.Step) -> dict:
    """What the monitor writes after a tick (report.database_status, the same function)."""
    last_seen = step.last_seen if step.kind == d.StepKind.STEADY else None
    return {**status, **report.database_status(o, step.current_leader, 3, last_seen)}


def _wait_out(status: dict, o: DbObservation, spec: DatabaseSpec, memory: d.Memory) -> list[d.Step]:
    steps = []
    for t in (0.0, 1.0, 2.0, 3.0, 3.5, 5.0, 60.0):
        step = d.decide(o, d.State.from_status(status), spec, NOW + t, memory)
        status.update(_tick_status(status, o, step))
        memory = step.memory
        steps.append(step)
    return steps


def test_the_sync_guard_survives_the_wait_for_the_leader_timeout():
    """Audit finding 1: follower 2 held the acknowledged commits (5000) and follower 1 only 1000. With the
    leader and follower 2 gone, follower 1 must never be promoted, however long the monitor waits and
    however often it rewrites status.instances meanwhile."""
    spec = replace(SPEC, synchronous=True, sync_replicas=1)
    healthy = obs(leader(lsn=5000, sync="quorum", sync_names='ANY 1 ("a-db-1", "a-db-2")'),
                  follower(F1, recv=1000), follower(F2, recv=5000))
    step = d.decide(healthy, STATE, spec, NOW - 10, d.Memory())
    status = _tick_status({"currentLeader": L}, healthy, step)
    gone = obs(down(L, names.LEADER), follower(F1, recv=1000, status=None), down(F2))
    steps = _wait_out(status, gone, spec, step.memory)
    assert [s.kind for s in steps][-1] == d.StepKind.BLOCKED
    assert all(s.record is None for s in steps), [s.message for s in steps]
    assert "2 needed" in steps[-1].message


def test_the_lag_guard_survives_the_wait_for_the_leader_timeout():
    """Audit finding 1, async: a follower 1 GiB behind the leader's last known position is never promoted."""
    spec = replace(SPEC, failover=replace(SPEC.failover, max_lag_bytes=16 << 20))
    healthy = obs(leader(lsn=1 << 30, streaming=(F1,)), follower(F1, recv=1000), down(F2))
    step = d.decide(healthy, STATE, spec, NOW - 10, d.Memory())
    status = _tick_status({"currentLeader": L}, healthy, step)
    gone = obs(down(L, names.LEADER), follower(F1, recv=1000, status=None), down(F2))
    steps = _wait_out(status, gone, spec, step.memory)
    assert all(s.record is None for s in steps), [s.message for s in steps]
    assert "bytes behind the leader's last known position" in steps[-1].message


# ------------------------------------------------------------------ the leader lease


def test_promoting_waits_for_the_old_leaders_lease_unless_it_is_known_stopped():
    rec = replace(REC, phase=d.PROMOTING)
    o = obs(down(L), follower(F1, recv=500, status=None), follower(F2, recv=400, status=None))
    plan = d.phase_plan(rec, o, SPEC, STATE, NOW, lease_expiry=NOW + 2.5)
    assert plan.outcome is d.Outcome.WAIT and plan.retry_at == NOW + 2.5 and plan.actions == ()
    assert "lease" in plan.message
    promote_f1 = promoting(F1)
    assert d.phase_plan(rec, o, SPEC, STATE, NOW + 2.5, lease_expiry=NOW + 2.5).actions == promote_f1
    stopped = replace(rec, stopped=True)
    assert d.phase_plan(stopped, o, SPEC, STATE, NOW, lease_expiry=NOW + 2.5).actions == promote_f1


def test_only_followers_the_old_leaders_lease_counts_are_promoted_while_it_may_run():
    """A follower outside archop.followers on the old leader would not end its failsafe when detached."""
    rec = replace(REC, phase=d.PROMOTING)
    o = obs(down(L), follower(F1, recv=900, status=None), follower(F2, recv=400, status=None))
    only_f2 = replace(STATE, last_seen=d.LeaderSnapshot(L, lease_members=(F2,)))
    assert d.phase_plan(rec, o, SPEC, only_f2, NOW).actions == promoting(F2)
    unknown = replace(STATE, last_seen=None)
    plan = d.phase_plan(rec, o, SPEC, unknown, NOW)
    assert plan.outcome is d.Outcome.WAIT and "lease" in plan.message
    # Once the old leader is known to be down, any follower will do.
    plan = d.phase_plan(replace(rec, stopped=True), o, SPEC, unknown, NOW)
    assert plan.actions == promoting(F1)


def test_fencing_counts_a_proven_refusal_at_the_old_address_as_stopped():
    rec = replace(REC, from_address="10.0.0.1")
    refused = Instance(L, pod(L, names.LEADER), Probe(reachable=False, refused=True, error="refused"))
    dead = replace(obs(refused, follower(F1, status=None), follower(F2, status=None)),
                   lease_session_lost=frozenset({L}))
    plan = d.phase_plan(rec, dead, SPEC, STATE, NOW)
    assert plan.after is not None and plan.after.stopped
    assert not any(isinstance(a, d.Stop) for a in plan.actions)
    # The same refusal while a follower still streams from it (an enforcer's): the lease decides.
    plan = d.phase_plan(rec, replace(dead, instances={**dead.instances, F2: follower(F2)}), SPEC, STATE, NOW)
    assert plan.after is not None and not plan.after.stopped
    # Refused at another address (a replacement pod) proves nothing about the old process: try to stop it.
    moved = Instance(L, pod(L, names.LEADER, ip="10.0.0.9"), Probe(reachable=False, refused=True))
    plan = d.phase_plan(rec, obs(moved, follower(F1), follower(F2)), SPEC, STATE, NOW)
    assert d.Stop(L, address="10.0.0.1", required=False) in plan.actions
    assert plan.after is not None and not plan.after.stopped
    # The detaches first: they start the failsafe's run-out; the try at a vanished address may only time out.
    assert plan.actions == (d.SetRole(L, names.FENCED), d.Detach(F1), d.Detach(F2),
                            d.Stop(L, address="10.0.0.1", required=False))
    # A time-out at its own address: nothing to try, the lease decides.
    plan = d.phase_plan(rec, obs(down(L), follower(F1), follower(F2)), SPEC, STATE, NOW)
    assert not any(isinstance(a, d.Stop) for a in plan.actions) and not plan.after.stopped  # type: ignore


def test_a_failover_records_the_old_leaders_last_healthy_address():
    o = obs(down(L, names.LEADER, deleting=True), follower(F1, status=None), follower(F2, status=None))
    memory = d.Memory(leader_pod=d.SeenPod(L, "uid-1", 0, "10.0.0.7"))
    step = d.decide(o, STATE, SPEC, NOW, memory)
    assert step.record is not None and step.record.from_address == "10.0.0.7"
    assert d.FailoverRecord.from_status(step.record.to_status()) == step.record


def test_lease_members_are_named_on_the_leader_and_persisted_first():
    o = obs(leader(lease=(F1,)), follower(F1), follower(F2))
    step = d.decide(o, STATE, SPEC, NOW, d.Memory())
    assert d.SetLeaseMembers(L, (F1, F2)) in step.actions
    # Until the leader holds the new list, only the followers in both lists guard: a failover meanwhile may
    # promote only a follower whose detach ends the failsafe whichever list the leader holds.
    assert step.persist_first and step.last_seen is not None and step.last_seen.lease_members == (F1,)
    # Shrinking (scale-down) likewise.
    o = obs(leader(lease=(F1, F2), streaming=(F1,)), follower(F1), desired=2)
    step = d.decide(o, STATE, SPEC, NOW, d.Memory())
    assert d.SetLeaseMembers(L, (F1,)) in step.actions
    assert step.last_seen is not None and step.last_seen.lease_members == (F1,)
    # Replacing one follower by another: nobody is in both lists, so nobody may be promoted meanwhile.
    o = obs(leader(lease=(F2,), streaming=(F1,)), follower(F1), desired=1)
    step = d.decide(o, STATE, SPEC, NOW, d.Memory())
    assert d.SetLeaseMembers(L, (F1,)) in step.actions
    assert step.last_seen is not None and step.last_seen.lease_members == ()


def test_lease_expiry_arithmetic():
    reaction = lease.AGENT_INTERVAL_SECONDS + lease.MARGIN_SECONDS
    assert lease.expires_at(100.0, 95.0) == 100.0 + lease.TTL_SECONDS + reaction
    assert lease.expires_at(100.0, 110.0) == 110.0 + lease.FAILSAFE_REPLY_SECONDS + reaction
    clock = lease.LeaseClock(started=50.0)
    # Never renewed by this process: renewals by another happened before it started.
    assert clock.expiry(L, "t", now=60.0) == lease.expires_at(50.0, 60.0)
    clock.renewal(L, 58.0)
    clock.mark_fenced(L, "t2", 59.0)
    assert clock.expiry(L, "t2", now=70.0) == lease.expires_at(58.0, 59.0)


def test_an_operator_unsure_of_its_lease_acts_on_nothing():
    """Even best-effort actions are refused, and the refusal is never swallowed as a best-effort failure."""
    done: list[str] = []
    ex = Executor(target=lambda p: None, upstream=lambda f, lead: "", set_label=lambda p, r: done.append(p),
                  delete_pod=done.append, may_act=lambda: False)
    with pytest.raises(NotLeading):
        asyncio.run(ex.run_all((d.Fence(L), d.SetRole(L, names.FENCED)), best_effort=(d.Fence,)))
    assert done == []
    ex.may_act = lambda: True
    asyncio.run(ex.run_all((d.SetRole(L, names.FENCED),)))
    assert done == [L]


def test_a_failover_is_called_off_when_the_old_leader_is_back_before_anyone_was_promoted():
    """A blip shorter than the old leader's lease, or a crash restart: the cause is gone, even with a
    candidate at hand."""
    rec = replace(REC, phase=d.PROMOTING)
    back = obs(leader(streaming=(), role=names.FENCED), follower(F1, status=None, upstream=""),
               follower(F2, status=None, upstream=""))
    plan = d.phase_plan(rec, back, SPEC, STATE, NOW)
    assert plan.outcome is d.Outcome.ABORTED and plan.current_leader == L
    assert {d.Repoint(F1, L, names.db_slot(F1)), d.Repoint(F2, L, names.db_slot(F2))} <= set(plan.actions)
    # Once the target is a primary, it was promoted: never call that off.
    promoted = obs(leader(streaming=(), role=names.FENCED), leader(F1, streaming=()), follower(F2))
    assert d.phase_plan(rec, promoted, SPEC, STATE, NOW).outcome is d.Outcome.NEXT


def test_a_primary_that_is_not_the_leader_is_stopped_while_the_leader_is_unhealthy():
    """Finding F3 of the property test: an old leader back as a primary (its agent stopped it, its container
    restarted) must not take writes while the operator waits for the current leader or is blocked."""
    o = obs(leader(L, role=names.FENCED, streaming=()), down(F1, names.LEADER), follower(F2, upstream=F1))
    for memory in (d.Memory(), lost(5)):
        step = d.decide(o, replace(STATE, current_leader=F1), SPEC, NOW, memory)
        assert step.kind in ("waiting", "blocked"), step.kind
        assert d.Stop(L) in step.actions and d.Fence(L) in step.actions


# ------------------------------------------------------------------ replication slots and rebuilds

S1, S2, S0 = names.db_slot(F1), names.db_slot(F2), names.db_slot(L)


def slot_actions(step_or_plan) -> list[d.Action]:
    return [a for a in step_or_plan.actions if isinstance(a, d.SLOT_ACTIONS)]


def test_slot_names_derive_from_the_pod_name():
    assert names.db_slot("shop-db-2") == "archop_shop_db_2"


def test_the_leader_gets_a_slot_for_every_member_and_followers_name_it_only_once_it_exists():
    # No slot yet: created first; the followers stream without one meanwhile (nothing to re-point).
    none_yet = obs(leader(slots=()), follower(F1, slot=None), follower(F2, slot=None))
    step = d.decide(none_yet, STATE, SPEC, NOW, d.Memory())
    assert step.actions == (d.CreateSlots(L, (S1, S2)),)
    # The slots exist: each follower is pointed at its own.
    exist = obs(leader(), follower(F1, slot=None), follower(F2))
    assert d.decide(exist, STATE, SPEC, NOW, d.Memory()).actions == (d.Repoint(F1, L, S1),)


def test_a_follower_naming_a_slot_the_leader_lacks_streams_without_it():
    """Postgres does not stream at all through a slot that does not exist: never leave a follower so."""
    step = d.decide(obs(leader(slots=()), follower(F1), follower(F2)), STATE, SPEC, NOW, d.Memory())
    assert step.actions[0] == d.CreateSlots(L, (S1, S2))  # before anything is pointed at them
    assert {d.Repoint(F1, L, None), d.Repoint(F2, L, None)} <= set(step.actions)


def test_slots_of_instances_that_are_no_longer_members_are_dropped_unless_in_use():
    from archop.health.model import SlotRow

    rows = (SlotRow(S1, True, "reserved"), SlotRow(S2, False, "reserved"), SlotRow("archop_a_db_7", True),
            SlotRow("someone_elses", False, "reserved"))
    # Scaled down to one follower: a-db-2 is no member; a-db-7's slot is still used by a WAL sender.
    o = obs(leader(slots=rows), follower(F1), follower(F2), desired=2)
    step = d.decide(o, STATE, replace(SPEC, followers=1), NOW, d.Memory())
    assert d.DropSlots(L, (S2,)) in step.actions
    assert not [a for a in step.actions if isinstance(a, d.CreateSlots)]
    # Its follower streams without a slot from now on.
    assert d.Repoint(F2, L, None) in step.actions


def test_slots_a_follower_kept_from_when_it_led_are_dropped():
    from archop.health.model import SlotRow

    f1 = follower(F1)
    f1 = replace(f1, probe=replace(f1.probe, slots=(SlotRow(S2, False, "reserved"), SlotRow(S0, True))))
    step = d.decide(obs(leader(), f1, follower(F2)), STATE, SPEC, NOW, d.Memory())
    assert step.actions == (d.DropSlots(F1, (S2,)),)  # the active one is left alone (retried next tick)


def test_slot_retention_is_set_on_every_instance_from_the_volume_size():
    insts = [leader(), follower(F1), follower(F2)]
    insts = [replace(i, probe=replace(i.probe, slot_wal_keep_mb=256)) for i in insts]
    spec = replace(SPEC, storage_size="10Gi")
    step = d.decide(obs(*insts), STATE, spec, NOW, d.Memory())
    assert step.actions == tuple(d.SetSlotWalKeep(n, 2560) for n in (L, F1, F2))
    assert d.decide(obs(*insts), STATE, SPEC, NOW, d.Memory()).actions == ()  # 1Gi: 256 MB already
    assert replace(SPEC, storage_size="32Mi").slot_wal_keep_mb == 16  # never below one WAL segment


def test_slot_upkeep_never_holds_up_a_planned_switchover():
    o = obs(leader(slots=()), follower(F1, slot=None), follower(F2, slot=None))
    step = d.decide(o, replace(STATE, switchover_request=F1), SPEC, NOW, d.Memory())
    assert step.kind == "failover" and step.record is not None and step.record.to == F1


def test_rewiring_creates_the_new_leaders_slots_before_repointing_with_them():
    rec = replace(REC, phase=d.REWIRING)
    o = obs(down(L), leader(F1, streaming=(), slots=()), follower(F2))
    plan = d.phase_plan(rec, o, SPEC, STATE, NOW)
    create = plan.actions.index(d.CreateSlots(F1, (S0, S2)))  # the old leader's too: it rejoins
    assert create < plan.actions.index(d.Repoint(F2, F1, S2))
    assert d.CreateSlots in runner_best_effort()  # a failure never fails the phase


def runner_best_effort() -> tuple[type, ...]:
    from archop.failover import runner

    return runner.BEST_EFFORT


def test_an_aborted_failover_repoints_with_the_old_leaders_slot_only_where_it_has_one():
    from archop.health.model import SlotRow

    state = replace(STATE, failover=replace(REC, phase=d.PROMOTING))
    o = obs(leader(slots=(SlotRow(S1, False, "reserved"),)), follower(F1, upstream=""),
            follower(F2, upstream=""))
    plan = d.phase_plan(state.failover, o, SPEC, state, NOW)
    assert plan.outcome is d.Outcome.ABORTED
    assert {d.Repoint(F1, L, S1), d.Repoint(F2, L, None)} <= set(plan.actions)


def behind(name: str, **kw) -> Instance:
    """A follower that cannot stream: its WAL receiver keeps failing at position 1000."""
    return follower(name, recv=1000, status=None, age=None, **kw)


def test_a_follower_behind_the_leaders_oldest_wal_is_rebuilt_once_it_stayed_so():
    o = obs(leader(oldest_wal=5000, streaming=(F2,)), behind(F1), follower(F2))
    first = d.decide(o, STATE, SPEC, NOW, d.Memory())
    assert not [a for a in first.actions if isinstance(a, d.Rebuild)]  # it may just be reconnecting
    later = d.decide(o, STATE, SPEC, NOW + d.REBUILD_AFTER_SECONDS - 1, first.memory)
    assert not [a for a in later.actions if isinstance(a, d.Rebuild)]
    step = d.decide(o, STATE, SPEC, NOW + d.REBUILD_AFTER_SECONDS, later.memory)
    # A fresh slot first (it holds the WAL from before the base backup), then the stop with the marker.
    assert step.actions[-2:] == (d.CreateSlots(L, (S1,)), d.Rebuild(F1))
    note = next(n for n in step.notes if n.reason == reasons.REBUILD_STARTED)
    assert note.warning and "oldest WAL" in note.message
    assert F1 not in step.memory.behind_since


def test_a_follower_whose_slot_is_lost_and_that_does_not_stream_is_rebuilt():
    from archop.health.model import SlotRow

    rows = (SlotRow(S1, False, "lost"), SlotRow(S2, True, "reserved"))
    o = obs(leader(slots=rows, streaming=(F2,)), behind(F1), follower(F2))
    mem = d.decide(o, STATE, SPEC, NOW, d.Memory()).memory
    # The lost slot is the evidence: not recreated while its follower does not stream, and not named by it.
    first = d.decide(o, STATE, SPEC, NOW, d.Memory())
    assert not [a for a in first.actions if isinstance(a, d.CreateSlots)]
    assert d.Repoint(F1, L, None) in first.actions
    step = d.decide(o, STATE, SPEC, NOW + d.REBUILD_AFTER_SECONDS, mem)
    assert d.Rebuild(F1) in step.actions
    assert "lost" in next(n.message for n in step.notes if n.reason == reasons.REBUILD_STARTED)


def test_a_follower_that_streams_again_despite_a_lost_slot_is_not_rebuilt_and_gets_a_fresh_slot():
    from archop.health.model import SlotRow

    rows = (SlotRow(S1, False, "lost"), SlotRow(S2, True, "reserved"))
    o = obs(leader(slots=rows, oldest_wal=500), follower(F1, slot=None), follower(F2))
    step = d.decide(o, STATE, SPEC, NOW + 100, d.Memory(behind_since={F1: NOW}))
    assert not [a for a in step.actions if isinstance(a, d.Rebuild)]
    assert step.actions == (d.CreateSlots(L, (S1,)),)
    assert step.memory.behind_since == {}


def test_rebuilds_one_at_a_time_and_never_a_leaving_or_deleted_instance():
    o = obs(leader(oldest_wal=5000, streaming=()), behind(F1), behind(F2))
    mem = d.Memory(behind_since={F1: NOW - 60, F2: NOW - 60})
    step = d.decide(o, STATE, SPEC, NOW, mem)
    assert [a for a in step.actions if isinstance(a, d.Rebuild)] == [d.Rebuild(F1)]
    assert F2 in step.memory.behind_since  # its turn comes
    deleting = obs(leader(oldest_wal=5000, streaming=()), behind(F1, deleting=True), behind(F2))
    assert [a for a in d.decide(deleting, STATE, SPEC, NOW, mem).actions
            if isinstance(a, d.Rebuild)] == [d.Rebuild(F2)]
    scaled = obs(leader(oldest_wal=5000, lsn=9000, streaming=(F1,)), follower(F1, recv=9000), behind(F2),
                 desired=2)
    assert not [a for a in d.decide(scaled, STATE, replace(SPEC, followers=1), NOW, mem).actions
                if isinstance(a, d.Rebuild)]


def test_never_a_rebuild_during_a_failover_nor_of_the_leader():
    """A rebuild is decided in the steady state only, for a follower of a healthy leader: never while a
    failover runs (its candidates' WAL decides the promotion), never while the leader is unhealthy."""
    o = obs(leader(oldest_wal=5000, streaming=()), behind(F1), behind(F2))
    mem = d.Memory(behind_since={F1: NOW - 60, F2: NOW - 60})
    for phase in d.Phase:
        state = replace(STATE, failover=replace(REC, phase=phase))
        assert d.decide(o, state, SPEC, NOW, mem).kind == "failover"
        plan = d.phase_plan(state.failover, o, SPEC, state, NOW)
        assert not [a for a in plan.actions if isinstance(a, d.Rebuild)]
    unhealthy = obs(down(L), behind(F1), behind(F2))
    for t in (NOW, NOW + 1):
        step = d.decide(unhealthy, STATE, SPEC, t, replace(mem, leader_lost_since=NOW - 1))
        assert not [a for a in step.actions if isinstance(a, d.Rebuild)]
    # The leader itself is never a candidate, even when the numbers would say so.
    o = obs(leader(oldest_wal=5000, lsn=1000, streaming=()), follower(F1, recv=9000), follower(F2, recv=9000))
    assert not [a for a in d.decide(o, STATE, SPEC, NOW, mem).actions if isinstance(a, d.Rebuild)]


def test_a_rebuilt_follower_that_streams_is_reported_once():
    o = obs(leader(), follower(F1, marker="method=rebuild pod=a-db-1 at=1"), follower(F2))
    step = d.decide(o, STATE, SPEC, NOW, d.Memory())
    assert [n.reason for n in step.notes] == [reasons.FOLLOWER_REBUILT]
    again = d.decide(o, STATE, SPEC, NOW + 1, step.memory)
    assert again.notes == ()


def test_a_promotion_passes_the_newest_timeline_seen_anywhere():
    """The last healthy leader's timeline counts even when that leader is gone now (a second failover right
    after a first): the candidate must not reuse its ID."""
    o = obs(down(L, names.LEADER), follower(F1), follower(F2))
    rec = replace(REC, phase=d.PROMOTING, stopped=True)
    state = replace(STATE, last_seen=d.LeaderSnapshot(name=L, lsn=0, timeline=7))
    plan = d.phase_plan(rec, o, SPEC, state, NOW)
    promotes = [a for a in plan.actions if isinstance(a, d.Promote)]
    assert promotes and promotes[0].timeline_floor == 7, plan
    assert d.timeline_floor(o, d.State(current_leader=L)) == 1


def test_the_failsafe_runs_out_from_the_first_detach_of_a_lease_member_not_from_the_end_of_the_fence():
    """The fence's try at a vanished address may take its whole connect timeout; the lease must not wait
    for it, since the first lease member detached already ends the failsafe."""
    from archop.failover import runner

    clock = [NOW]
    took = {d.SetRole: 0.1, d.Detach: 0.2, d.Stop: 1.0}

    class Timed(Executor):
        async def run(self, action: d.Action) -> None:
            clock[0] += took.get(type(action), 0.0)
            if isinstance(action, d.Stop):
                raise TimeoutError("nothing answers at the old address")

    async def observe(previous: DbObservation, skip: frozenset[str]) -> DbObservation:
        return previous

    async def persist(patch: dict) -> None:
        pass

    async def sleep(seconds: float) -> None:
        clock[0] += seconds

    lease_clock = lease.LeaseClock(started=NOW - 100)
    lease_clock.renewal(L, NOW - 0.5)
    executor = Timed(target=lambda pod: None, upstream=lambda f, leader: "", set_label=lambda pod, role: None,
                     delete_pod=lambda pod: None)
    fx = runner.Effects(observe=observe, persist=persist, executor=executor, emit=lambda note: None,
                        lease=lease_clock, sleep=sleep)
    moved = Instance(L, pod(L, names.LEADER, ip="10.0.0.9"), Probe(reachable=False))
    rec = replace(REC, from_address="10.0.0.1")
    asyncio.run(runner.run_failover(rec, STATE, obs(moved, follower(F1), follower(F2)), SPEC, fx,
                                    clock=lambda: clock[0]))
    # SetRole 0.1 s, then Detach(F1) done at +0.3 s; Detach(F2) and the 1 s Stop come after.
    assert lease_clock.fenced[(L, rec.started_at)] == pytest.approx(NOW + 0.3)
    # A member list that does not name the detached followers leaves the mark at the end of the fence.
    other = replace(STATE, last_seen=d.LeaderSnapshot(L, lease_members=("a-db-9",)))
    clock[0] = NOW
    lease_clock = lease.LeaseClock(started=NOW - 100)
    fx = replace(fx, lease=lease_clock)
    asyncio.run(runner.run_failover(rec, other, obs(moved, follower(F1), follower(F2)), SPEC, fx,
                                    clock=lambda: clock[0]))
    assert lease_clock.fenced[(L, rec.started_at)] == pytest.approx(NOW + 1.5)
