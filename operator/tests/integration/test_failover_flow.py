"""A whole failover on real Postgres 15: promotion by LSN, re-pointing, rejoin of the old leader by the
pods' own start.sh (pg_rewind), and the rejoin event from the marker file."""

from __future__ import annotations

import asyncio

import pytest
from archop import names, reasons
from archop.failover import decide as d
from archop.spec import DatabaseSpec, FailoverSpec

from testsupport.postgres import start_by_script

from .loopback import Loopback, kill_vouched_leader, sql, streaming_from, three_streaming, try_sql, wait_for

pytestmark = pytest.mark.integration
SPEC = DatabaseSpec(followers=2, failover=FailoverSpec(leader_timeout_seconds=1.0))


async def test_promote_most_advanced_repoint_and_rewind_old_leader(pg):
    leader, f1, f2, lb, state = await three_streaming(pg)
    step = await lb.steady(state, SPEC)
    assert lb.labels == {"db-0": names.LEADER, "db-1": names.FOLLOWER, "db-2": names.FOLLOWER}
    # Both already follow the leader's address: nothing to re-point.
    assert not [a for a in step.actions if isinstance(a, d.Repoint)]

    sql(leader, "create table t (id int primary key)")
    sql(leader, "insert into t select generate_series(1, 100)")
    # db-2 stops receiving (detached); db-1 receives everything but replays nothing (paused replay):
    # the candidate must be chosen by received LSN, not by replay LSN.
    await wait_for(lambda: try_sql(f2, "select count(*) from t") == [(100,)], what="db-2 has 100 rows")
    sql(f2, "alter system set primary_conninfo = ''")
    sql(f2, "select pg_reload_conf()")
    sql(f1, "select pg_wal_replay_pause()")
    sql(leader, "insert into t select generate_series(101, 200)")
    want = sql(leader, "select pg_current_wal_lsn()::text")[0][0]
    await wait_for(
        lambda: sql(f1, f"select pg_last_wal_receive_lsn() >= '{want}'")[0][0], what="db-1 receives"
    )
    # The old leader writes once more after db-1 is cut off too: that WAL exists only on db-0 and
    # forces a real rewind later. (A paused standby does not notice a primary_conninfo change, but it does
    # not restart a terminated WAL receiver either.)
    sql(leader, "select pg_terminate_backend(pid) from pg_stat_replication where application_name = 'db-1'")
    await wait_for(lambda: not streaming_from(leader, "db-1"), what="db-1 detached")
    sql(leader, "insert into t values (9999)")
    await kill_vouched_leader(lb, "db-0")

    obs = await lb.observe()
    assert not obs.instances["db-0"].probe.reachable
    p1, p2 = obs.instances["db-1"].probe, obs.instances["db-2"].probe
    assert p1.received_lsn > p2.received_lsn and p1.replay_lsn <= p2.replay_lsn  # type: ignore[operator]
    step = d.decide(obs, state, SPEC, 100.0, d.Memory(leader_lost_since=98.0))
    assert step.kind == "failover" and step.record is not None and step.record.to == "db-1"

    new_leader = await lb.failover(step.record, state, SPEC)
    assert new_leader == "db-1"
    assert sql(f1, "select pg_is_in_recovery()") == [(False,)]
    assert sql(f1, "select count(*) from t") == [(200,)]  # every row the old leader had before the cut
    assert lb.labels == {"db-0": names.FENCED, "db-1": names.LEADER, "db-2": names.FOLLOWER}
    # db-2 was re-pointed by ALTER SYSTEM + reload and streams from db-1 on the new timeline.
    await wait_for(lambda: streaming_from(f1, "db-2"), what="db-2 streams from db-1")
    sql(f1, "insert into t values (201)")
    await wait_for(lambda: try_sql(f2, "select count(*) from t") == [(201,)], what="db-2 replicates")
    assert sql(f2, "select received_tli from pg_stat_wal_receiver")[0][0] == 2

    # The old leader's pod restarts: start.sh finds a primary that is not itself and rewinds.
    old, proc = start_by_script(pg.base, "db-0", primary_port=f1.port, port=leader.port)
    pg.add(old, proc)
    assert sql(old, "select pg_is_in_recovery()") == [(True,)]
    await wait_for(lambda: streaming_from(f1, "db-0"), what="old leader streams from db-1")
    await wait_for(
        lambda: try_sql(old, "select count(*) from t where id = 201") == [(1,)], what="old leader caught up"
    )
    assert sql(old, "select count(*) from t") == [(201,)]
    assert sql(old, "select count(*) from t where id = 9999") == [(0,)]  # its diverged write is gone
    marker = sql(old, "select pg_read_file('archop-rejoin')")[0][0]
    assert "method=rewind" in marker and "pod=db-0" in marker

    # The operator's steady state then labels it follower and reports how it rejoined.
    lb2 = Loopback({"db-0": old, "db-1": f1, "db-2": f2}, labels=dict(lb.labels))
    step = await lb2.steady(d.State(current_leader="db-1"), SPEC)
    assert reasons.FOLLOWER_REJOINED in [n.reason for n in step.notes]
    assert lb2.labels["db-0"] == names.FOLLOWER


async def test_pinned_leader_address_bypasses_dns(pg):
    """Re-pointing pins hostaddr= (the leader's pod IP) next to host=: a follower streams even when the
    name does not resolve (on kind, DNS serves a restarted leader's old IP for up to a minute)."""
    from archop.failover.act import follower_conninfo, set_primary_conninfo
    from archop.health.probe import Target, probe

    leader, f1, _f2, _lb, _state = await three_streaming(pg)
    target = Target(host="127.0.0.1", port=f1.port)
    unresolvable = "db-0.archop-test.invalid"
    await set_primary_conninfo(target, follower_conninfo(unresolvable, leader.port, "postgres", "db-1", None))
    await wait_for(lambda: not streaming_from(leader, "db-1"), what="db-1 loses the unresolvable leader")
    await asyncio.sleep(3)  # the receiver retries every 0.5 s: none of them may reach the leader
    assert not streaming_from(leader, "db-1")

    pinned = follower_conninfo(unresolvable, leader.port, "postgres", "db-1", None, hostaddr="127.0.0.1")
    await set_primary_conninfo(target, pinned)
    await wait_for(lambda: streaming_from(leader, "db-1"), what="db-1 streams through hostaddr")
    p = await probe(target)
    assert (p.primary_host, p.primary_hostaddr, p.streaming) == (unresolvable, "127.0.0.1", True)
