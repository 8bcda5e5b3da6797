"""Synchronous mode on real Postgres 15: no acknowledged write is lost when the leader is SIGKILLed with a
writer running, and writes never hang on a stale synchronous_standby_names (after failover, after a scale
change)."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace

import psycopg
import pytest
from archop.failover import decide as d
from archop.failover import report
from archop.spec import DatabaseSpec, Durability, FailoverSpec

from .loopback import sql, streaming_from, three_streaming, wait_for

pytestmark = pytest.mark.integration
SPEC = DatabaseSpec(
    followers=2, synchronous=True, sync_replicas=1, failover=FailoverSpec(leader_timeout_seconds=1)
)


class Writer(threading.Thread):
    """Inserts ids one by one; remembers every id whose COMMIT was acknowledged."""

    def __init__(self, dsn: str):
        super().__init__(daemon=True)
        self.dsn, self.acked, self.error = dsn, [], None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as c:
                for i in range(1, 1_000_000):
                    c.execute("insert into t values (%s)", (i,))
                    self.acked.append(i)
        except psycopg.Error as exc:
            self.error = exc


def insert_in_thread(inst, value: int) -> threading.Thread:
    def go():
        sql(inst, f"insert into t values ({value})", timeout_ms=20000)

    th = threading.Thread(target=go, daemon=True)
    th.start()
    return th


async def test_sync_failover_loses_no_acknowledged_write(pg):
    leader, f1, f2, lb, state = await three_streaming(pg)
    step = await lb.steady(state, SPEC)
    assert sql(leader, "show synchronous_standby_names") == [('ANY 1 ("db-1", "db-2")',)]
    await wait_for(
        lambda: sql(leader, "select count(*) from pg_stat_replication where sync_state = 'quorum'") == [(2,)],
        what="quorum",
    )
    sql(leader, "create table t (id int primary key)")
    # What the monitor persisted last is what a restarted operator would decide from.
    step = await lb.steady(state, SPEC)
    status = report.database_status(await lb.observe(), "db-0", 3, step.last_seen)
    state = d.State.from_status(status)
    assert state.last_seen is not None and state.last_seen.quorum == d.SyncQuorum(1, ("db-1", "db-2"))

    writer = Writer(leader.dsn())
    writer.start()
    await asyncio.sleep(1.5)
    leader.kill()
    writer.join(timeout=10)
    assert writer.error is not None and len(writer.acked) > 50

    obs = await lb.observe()
    step = d.decide(obs, state, SPEC, time.time(), d.Memory(leader_lost_since=time.time() - 2))
    assert step.kind == "failover" and step.record is not None
    new = await lb.failover(step.record, state, SPEC)
    new_leader, other = (f1, f2) if new == "db-1" else (f2, f1)
    rows = {r[0] for r in sql(new_leader, "select id from t")}
    assert set(writer.acked) <= rows, f"lost acknowledged writes: {sorted(set(writer.acked) - rows)[:10]}"

    # dataDurability required: the new leader names every other instance at once, so nothing it
    # acknowledges exists on it alone; a commit goes through once the other follower streams from it.
    assert sql(new_leader, "show synchronous_standby_names") == [(f'ANY 1 ("db-0", "{other.name}")',)]
    await wait_for(lambda: streaming_from(new_leader, other.name), what="the other follower streams")
    sql(new_leader, "insert into t values (-1)", timeout_ms=10000)
    new_state = d.State(current_leader=new)
    await lb.steady(new_state, SPEC)
    assert sql(new_leader, "show synchronous_standby_names") == [(f'ANY 1 ("db-0", "{other.name}")',)]

    # The only streaming follower goes away: commits wait, and keep waiting through the monitor's ticks
    # (required never degrades to asynchronous) ...
    other.stop()
    pending = insert_in_thread(new_leader, -3)
    await asyncio.sleep(1.0)
    await lb.steady(new_state, SPEC)
    await asyncio.sleep(1.0)
    assert pending.is_alive(), "a commit must wait for a synchronous standby in required mode"
    assert sql(new_leader, "select count(*) from t where id = -3") == [(0,)]
    # ... until a follower streams again.
    other.start()
    await wait_for(lambda: streaming_from(new_leader, other.name), what="the follower is back")
    pending.join(timeout=10)
    assert not pending.is_alive()
    assert sql(new_leader, "select count(*) from t where id = -3") == [(1,)]


async def test_preferred_durability_degrades_to_asynchronous(pg):
    """dataDurability preferred: only streaming followers are named, '' when none streams, so writes go on."""
    spec = replace(SPEC, durability=Durability.PREFERRED)
    leader, f1, f2, lb, state = await three_streaming(pg)
    await lb.steady(state, spec)
    assert sql(leader, "show synchronous_standby_names") == [('ANY 1 ("db-1", "db-2")',)]
    sql(leader, "create table t (id int primary key)")
    f1.stop()
    f2.stop()
    pending = insert_in_thread(leader, 1)
    await asyncio.sleep(1.0)
    assert pending.is_alive(), "the commit waits while the standbys are still named"
    await lb.steady(state, spec)
    assert sql(leader, "show synchronous_standby_names") == [("",)]
    pending.join(timeout=5)
    assert not pending.is_alive()
    assert sql(leader, "select count(*) from t where id = 1") == [(1,)]
