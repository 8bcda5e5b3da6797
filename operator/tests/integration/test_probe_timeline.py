"""The probe's timeline of a follower on real Postgres 15, in the case that once promoted the wrong follower:
candidates rank newest timeline first, and a follower whose WAL receiver has stopped (its leader is gone,
which is when candidates are compared) must still report the timeline of the WAL it holds."""

from __future__ import annotations

import pytest
from archop.failover import act
from archop.health.probe import Target, probe

from testsupport.postgres import clone_follower, init_leader

from .loopback import sql, streaming_from, three_streaming, wait_for

pytestmark = pytest.mark.integration


async def test_a_follower_that_streamed_across_a_promotion_keeps_the_new_timeline_once_its_receiver_stops(pg):
    leader, f1, f2, _, _ = await three_streaming(pg)
    assert await act.promote(Target("127.0.0.1", f1.port))  # timeline 2
    await act.set_primary_conninfo(
        Target("127.0.0.1", f2.port), f"host=127.0.0.1 port={f1.port} user=postgres application_name=db-2")
    await wait_for(lambda: streaming_from(f1, "db-2"), what="db-2 streams from the new leader")
    assert (await probe(Target("127.0.0.1", f2.port))).timeline == 2  # the receiver says so
    f1.stop("immediate")
    leader.stop("immediate")
    await wait_for(lambda: sql(f2, "select count(*) from pg_stat_wal_receiver") == [(0,)],
                   what="db-2's WAL receiver stops")
    # The case itself: db-2 made no checkpoint on timeline 2, so pg_control still says 1.
    assert sql(f2, "select timeline_id from pg_control_checkpoint()") == [(1,)]
    assert (await probe(Target("127.0.0.1", f2.port))).timeline == 2


async def test_a_promotion_takes_a_timeline_newer_than_any_used_in_the_tier(pg):
    """Two followers of one leader; one is promoted (timeline 2) while the other never hears of it. Promoted
    in turn, Postgres alone would name its timeline 2 as well: two histories with one ID, and the first's
    follower could neither follow nor be rewound. With the tier's newest timeline as floor it takes 3."""
    leader, f1, f2, _, _ = await three_streaming(pg)
    leader.stop("immediate")
    assert await act.promote(Target("127.0.0.1", f1.port))
    assert sql(f1, "select timeline_id from pg_control_checkpoint()") == [(2,)]
    await act.set_primary_conninfo(Target("127.0.0.1", f2.port), "")  # it never follows f1
    assert await act.promote(Target("127.0.0.1", f2.port), timeline_floor=2)
    assert sql(f2, "select timeline_id from pg_control_checkpoint()") == [(3,)]
    # The placeholder is only a name: f2's own history goes 1 -> 3.
    history = sql(f2, "select pg_read_file('pg_wal/00000003.history')")[0][0]
    assert history.split()[0] == "1", history


async def test_without_the_floor_the_second_promotion_reuses_the_id(pg):
    """The case the floor exists for (if Postgres changed this, the test above would prove nothing)."""
    leader, f1, f2, _, _ = await three_streaming(pg)
    leader.stop("immediate")
    assert await act.promote(Target("127.0.0.1", f1.port))
    await act.set_primary_conninfo(Target("127.0.0.1", f2.port), "")
    assert await act.promote(Target("127.0.0.1", f2.port))
    assert sql(f2, "select timeline_id from pg_control_checkpoint()") == [(2,)]


async def test_a_follower_that_replayed_all_it_holds_says_so(pg):
    """replay_settled: the startup process waits for WAL, streaming or detached (the state a failover
    compares positions in)."""
    leader, f1, _, _, _ = await three_streaming(pg)
    await wait_for(lambda: probe(Target("127.0.0.1", f1.port)), what="a probe")
    streaming = await probe(Target("127.0.0.1", f1.port))
    assert streaming.replay_settled is True and streaming.receiver_status == "streaming"
    await act.set_primary_conninfo(Target("127.0.0.1", f1.port), "")
    await wait_for(lambda: sql(f1, "select count(*) from pg_stat_wal_receiver") == [(0,)],
                   what="the receiver stops")

    async def settled() -> bool:
        return (await probe(Target("127.0.0.1", f1.port))).replay_settled is True

    await wait_for(settled, what="the detached follower waits for WAL")
    assert (await probe(Target("127.0.0.1", leader.port))).replay_settled is None  # a primary: not read


async def test_the_probe_reads_the_servers_major_version(pg):
    """status.postgresMajor comes from here: the leader's and a follower's server_version_num."""
    leader = pg.add(init_leader(pg.base, "db-0"))
    follower = pg.add(clone_follower(leader, pg.base, "db-1"))
    ((number,),) = sql(leader, "select current_setting('server_version_num')::int")
    for inst in (leader, follower):
        seen = await probe(Target("127.0.0.1", inst.port))
        assert seen.reachable and seen.server_version_num == number and seen.major == number // 10000
