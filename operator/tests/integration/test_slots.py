"""Replication slots and rebuilds on real Postgres 15: followers stream through the slots the operator keeps
on the leader, a slot holds WAL while its follower is away, a follower whose slot was lost (past
max_slot_wal_keep_size) is rebuilt by the pods' own start.sh, and a promoted leader gets slots for the
others before they are re-pointed."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from archop import names, reasons
from archop.failover import decide as d
from archop.failover.runner import MAINTENANCE_BEST_EFFORT
from archop.spec import DatabaseSpec, FailoverSpec

from testsupport.postgres import free_port, start_by_script

from .loopback import Loopback, kill_vouched_leader, sql, streaming_from, three_streaming, try_sql, wait_for

pytestmark = pytest.mark.integration
SPEC = DatabaseSpec(followers=2, failover=FailoverSpec(leader_timeout_seconds=1.0))


def slots(inst) -> dict[str, tuple[bool, str]]:
    """slot name -> (active, wal_status)."""
    rows = sql(inst, "select slot_name, active, coalesce(wal_status, '') from pg_replication_slots")
    return {n: (a, w) for n, a, w in rows}


def through_slot(leader, follower: str) -> bool:
    """The follower streams from the leader, and its WAL sender is the one using its slot."""
    rows = try_sql(leader, f"""
        select 1 from pg_stat_replication r join pg_replication_slots s on s.active_pid = r.pid
         where r.application_name = '{follower}' and r.state = 'streaming'
           and s.slot_name = '{names.db_slot(follower)}'""")
    return bool(rows)


async def ticks_until(lb: Loopback, state: d.State, spec: DatabaseSpec, pred, what: str) -> None:
    """Run the operator's steady state (observe, decide, act) until pred() holds; bounded."""
    async def tick() -> bool:
        await lb.steady(state, spec)
        return bool(pred())
    await wait_for(tick, timeout=30, interval=0.3, what=what)


async def test_followers_stream_through_their_slots_which_hold_wal_while_they_are_away(pg):
    leader, f1, f2, lb, state = await three_streaming(pg)
    # The steady state creates the slots first and points each follower at its own once it exists.
    await ticks_until(lb, state, SPEC, lambda: through_slot(leader, "db-1") and through_slot(leader, "db-2"),
                      "both followers stream through their slots")
    assert set(slots(leader)) == {"archop_db_1", "archop_db_2"}
    assert sql(f1, "show primary_slot_name") == [("archop_db_1",)]
    # Retention is bounded everywhere (a quarter of the default 1Gi volume), so a promoted follower is too.
    for inst in (leader, f1, f2):
        assert sql(inst, "show max_slot_wal_keep_size") == [("256MB",)]

    # db-1 goes away; without wal_keep_size only its slot keeps the WAL it will need.
    sql(leader, "alter system set wal_keep_size = 0")
    sql(leader, "select pg_reload_conf()")
    sql(leader, "create table t (id int primary key)")
    await wait_for(lambda: try_sql(f1, "select count(*) from t") == [(0,)], what="db-1 has the table")
    f1.stop()
    restart_lsn = "select restart_lsn::text from pg_replication_slots where slot_name = 'archop_db_1'"
    held = sql(leader, restart_lsn)[0][0]
    for i in range(6):  # six segments further, each checkpoint free to remove what nobody holds
        sql(leader, f"insert into t values ({i})")
        sql(leader, "select pg_switch_wal()")
        sql(leader, "checkpoint")
    assert slots(leader)["archop_db_1"][1] in ("reserved", "extended")
    assert sql(leader, restart_lsn)[0][0] == held
    segment = f"select count(*) from pg_ls_waldir() where name = pg_walfile_name('{held}')"
    assert sql(leader, segment) == [(1,)]  # the segment it will ask for first is still there
    # db-2's slot moved on with it: only the absent follower's slot holds old WAL.
    assert sql(leader, f"select restart_lsn > '{held}' from pg_replication_slots "
                       "where slot_name = 'archop_db_2'") == [(True,)]
    f1.start()
    await wait_for(lambda: through_slot(leader, "db-1"), what="db-1 streams through its slot again")
    await wait_for(lambda: try_sql(f1, "select count(*) from t") == [(6,)], what="db-1 has every row")


async def test_a_follower_whose_slot_was_lost_is_rebuilt_by_its_start_script(pg):
    # 64Mi volumes: max_slot_wal_keep_size is one 16MB segment, so a short absence loses the slot.
    spec = replace(SPEC, followers=1, storage_size="64Mi")
    leader, p0 = start_by_script(pg.base, "db-0", primary_port=free_port(), ARCHOP_BOOTSTRAP_LEADER="db-0")
    pg.add(leader, p0)
    follower, p1 = start_by_script(pg.base, "db-1", primary_port=leader.port, ARCHOP_BOOTSTRAP_LEADER="db-0")
    pg.add(follower, p1)
    lb = Loopback({"db-0": leader, "db-1": follower})
    state = d.State(current_leader="db-0")
    await ticks_until(lb, state, spec, lambda: through_slot(leader, "db-1"), "db-1 streams through its slot")
    assert sql(leader, "show max_slot_wal_keep_size") == [("16MB",)]
    sql(leader, "create table t (id int primary key)")
    sql(leader, "insert into t select generate_series(1, 100)")
    await wait_for(lambda: try_sql(follower, "select count(*) from t") == [(100,)], what="db-1 replicates")

    follower.stop()
    p1.wait(timeout=20)  # postgres was exec'd by start.sh: the "container" ended

    def lose_it() -> bool:
        sql(leader, f"insert into t values ({int(time.monotonic() * 1000)})")
        sql(leader, "select pg_switch_wal()")
        sql(leader, "checkpoint")
        return slots(leader)["archop_db_1"][1] == "lost"

    await wait_for(lose_it, timeout=60, interval=0.05, what="db-1's slot is lost")
    rows = sql(leader, "select count(*) from t")[0][0]

    # The container restarts (the kubelet would): a plain follower start, but the WAL it needs is gone.
    follower, p1 = start_by_script(pg.base, "db-1", primary_port=leader.port, port=follower.port)
    pg.add(follower, p1)
    obs = await lb.observe()
    why = d.cannot_catch_up(obs.instances["db-1"], obs.instances["db-0"])
    assert why is not None and "oldest WAL" in why
    step = d.decide(obs, state, spec, 1000.0, d.Memory())
    assert not [a for a in step.actions if isinstance(a, d.Rebuild)]  # not at once: it may be reconnecting
    step = d.decide(await lb.observe(), state, spec, 1000.0 + d.REBUILD_AFTER_SECONDS, step.memory)
    assert d.Rebuild("db-1") in step.actions
    assert step.actions.index(d.CreateSlots("db-0", ("archop_db_1",))) < step.actions.index(d.Rebuild("db-1"))
    assert reasons.REBUILD_STARTED in [n.reason for n in step.notes]
    assert await lb.executor().run_all(step.actions, best_effort=MAINTENANCE_BEST_EFFORT) == []
    p1.wait(timeout=20)  # stopped with the rebuild marker
    assert (follower.datadir / "archop-rebuild").exists()

    # The container restarts: start.sh finds the marker, wipes PGDATA and clones the primary.
    follower, p1 = start_by_script(pg.base, "db-1", primary_port=leader.port, port=follower.port)
    pg.add(follower, p1)
    marker = sql(follower, "select pg_read_file('archop-rejoin')")[0][0]
    assert "method=rebuild" in marker and "pod=db-1" in marker
    assert not (follower.datadir / "archop-rebuild").exists()
    assert sql(follower, "show primary_slot_name") == [("archop_db_1",)]  # start.sh found its slot
    await wait_for(lambda: through_slot(leader, "db-1"), what="the rebuilt db-1 streams through its slot")
    sql(leader, "insert into t values (-1)")
    await wait_for(lambda: try_sql(follower, "select count(*) from t") == [(rows + 1,)],
                   what="the rebuilt db-1 has every row")
    step = await lb.steady(state, spec)
    assert reasons.FOLLOWER_REBUILT in [n.reason for n in step.notes]
    assert not [a for a in step.actions if isinstance(a, d.Rebuild)]


async def test_a_promoted_follower_gets_slots_for_the_others_before_they_are_repointed(pg):
    leader, f1, f2, lb, state = await three_streaming(pg)
    await ticks_until(lb, state, SPEC, lambda: through_slot(leader, "db-1") and through_slot(leader, "db-2"),
                      "both followers stream through their slots")
    assert slots(f1) == {}  # a standby has none of its leader's slots
    sql(leader, "create table t (id int primary key)")
    sql(leader, "insert into t select generate_series(1, 50)")
    await wait_for(lambda: all(try_sql(f, "select count(*) from t") == [(50,)] for f in (f1, f2)),
                   what="both followers replicate")
    await kill_vouched_leader(lb, "db-0")

    obs = await lb.observe()
    step = d.decide(obs, state, SPEC, time.time(), d.Memory(leader_lost_since=time.time() - 2))
    assert step.kind == "failover" and step.record is not None
    new = await lb.failover(step.record, state, SPEC)
    new_leader, other = (f1, "db-2") if new == "db-1" else (f2, "db-1")
    # Slots for every other member, the old leader's included (it rejoins), and the survivor streams
    # through its own right away.
    assert set(slots(new_leader)) == {names.db_slot(n) for n in ("db-0", "db-1", "db-2") if n != new}
    await wait_for(lambda: through_slot(new_leader, other), what=f"{other} streams through its new slot")
    assert slots(new_leader)[names.db_slot("db-0")] == (False, "reserved")  # holds WAL for the old leader
    sql(new_leader, "insert into t values (51)")
    other_inst = f2 if other == "db-2" else f1
    await wait_for(lambda: try_sql(other_inst, "select count(*) from t") == [(51,)], what="it replicates")
    # The steady state afterwards has nothing to change about slots.
    step = await lb.steady(d.State(current_leader=new), SPEC)
    assert not [a for a in step.actions if isinstance(a, d.CreateSlots | d.DropSlots | d.Repoint)]
    assert streaming_from(new_leader, other)


async def test_a_primary_is_never_rebuilt(pg):
    from archop.failover.act import rebuild
    from archop.health.probe import Target

    from testsupport.postgres import init_leader

    leader = pg.add(init_leader(pg.base, "db-0"))
    with pytest.raises(RuntimeError, match="never rebuilt"):
        await rebuild(Target(host="127.0.0.1", port=leader.port))  # loopback sets no cluster_name
    assert sql(leader, "select pg_is_in_recovery()") == [(False,)]
    assert not (leader.datadir / "archop-rebuild").exists()
