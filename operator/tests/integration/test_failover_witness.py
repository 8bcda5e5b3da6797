"""Witness logic against a SIGSTOPped leader: the operator cannot reach it, and only once a follower's WAL
receiver has heard nothing for the failover timeout does the verdict turn into a failover. A leader whose
postmaster alone is stopped still streams to its followers and serves its open sessions: no failover."""

from __future__ import annotations

import time

import pytest
from archop import reasons
from archop.failover import decide as d
from archop.spec import DatabaseSpec, FailoverSpec

from testsupport.postgres import clone_follower, init_leader

from .loopback import Loopback, kill_vouched_leader, streaming_from, wait_for

pytestmark = pytest.mark.integration
SPEC = DatabaseSpec(followers=1, failover=FailoverSpec(leader_timeout_seconds=3.0))


async def test_frozen_leader_fails_over_only_with_a_witness(pg):
    leader = pg.add(init_leader(pg.base, "db-0"))
    follower = pg.add(clone_follower(leader, pg.base, "db-1"))
    lb = Loopback({"db-0": leader, "db-1": follower})
    state = d.State(current_leader="db-0")
    await wait_for(lambda: streaming_from(leader, "db-1"), what="streaming")
    assert (await lb.steady(state, SPEC)).kind == "steady"

    leader.freeze_all()  # the postmaster and its WAL senders: the followers hear nothing any more
    frozen = time.time()
    memory = d.Memory()
    seen: list[tuple[float, str, str]] = []
    step = None
    while time.time() - frozen < 20:
        obs = await lb.observe()
        p0 = obs.instances["db-0"].probe
        assert not p0.reachable and not p0.refused  # a frozen server times out; it never refuses
        step = d.decide(obs, state, SPEC, time.time(), memory)
        memory = step.memory
        seen.append((time.time() - frozen, step.kind, step.message))
        if step.kind == "failover":
            break
    leader.thaw()
    assert step is not None and step.kind == "failover", seen
    waited = seen[-1][0]
    # Never before the timeout; and not much later than timeout + wal_sender_timeout/2 + a probe.
    assert 3.0 <= waited <= 9.0, seen
    assert all(kind == "waiting" for _, kind, _ in seen[:-1]), seen
    assert "lost its WAL stream" in seen[-1][2]
    assert step.record is not None and step.record.to == "db-1"


async def test_frozen_postmaster_with_live_wal_senders_is_not_failed(pg):
    leader = pg.add(init_leader(pg.base, "db-0"))
    follower = pg.add(clone_follower(leader, pg.base, "db-1"))
    lb = Loopback({"db-0": leader, "db-1": follower})
    state = d.State(current_leader="db-0")
    await wait_for(lambda: streaming_from(leader, "db-1"), what="streaming")
    leader.freeze()  # new connections hang, the WAL sender goes on
    memory = d.Memory()
    started = time.time()
    try:
        while time.time() - started < 6:
            step = d.decide(await lb.observe(), state, SPEC, time.time(), memory)
            memory = step.memory
            assert step.kind == "waiting", step.message
    finally:
        leader.thaw()
    assert "still stream" in step.message


async def test_killed_leader_is_refused_and_failed_over_at_once(pg):
    """SIGKILL of the postmaster closes its listen socket and every connection to it: the next probe is
    refused, the operator's lease session breaks, and no follower streams from it any more. Together that is
    certain evidence (podLostTimeoutSeconds, 0): no leaderTimeoutSeconds wait, no lease wait."""
    leader = pg.add(init_leader(pg.base, "db-0"))
    follower = pg.add(clone_follower(leader, pg.base, "db-1"))
    lb = Loopback({"db-0": leader, "db-1": follower})
    state = d.State(current_leader="db-0")
    await wait_for(lambda: streaming_from(leader, "db-1"), what="streaming")
    await kill_vouched_leader(lb, "db-0")
    obs = await lb.observe()
    assert obs.instances["db-0"].probe.refused
    assert obs.lease_session_lost == {"db-0"}
    step = d.decide(obs, state, SPEC, time.time(), d.Memory())
    assert step.kind == "failover" and step.record is not None, step.message
    assert (step.record.reason, step.record.to) == (reasons.LEADER_POD_LOST, "db-1")
    assert "connection refused" in step.message
