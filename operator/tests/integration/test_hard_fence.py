"""The fence on real Postgres 15, tried with the client tricks that defeat a read-only default.

The soft fence (default_transaction_read_only plus ended sessions) is a per-session default: a client that
says BEGIN READ WRITE, or turns the default off for its session, still commits. The hard fence (Stop) shuts
the postmaster down and leaves a marker on the volume: nothing commits any more, and the start script brings
the instance back only as a follower of the new leader, never as a primary on its own.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import psycopg
import pytest
from archop.failover import act

from testsupport.postgres import clone_follower, free_port, init_leader, run_script_function, script_env

from .loopback import Loopback, sql, streaming_from, wait_for

pytestmark = pytest.mark.integration

TRICKS = (
    ("begin read write", "insert into t values (%s)", "commit"),
    ("set default_transaction_read_only = off", "insert into t values (%s)"),
    ("set session characteristics as transaction read write", "insert into t values (%s)"),
)


def commit(inst, trick: tuple[str, ...], value: int) -> None:
    with psycopg.connect(inst.dsn(), autocommit=True) as c:
        for statement in trick:
            c.execute(statement.replace("%s", str(value)))


async def test_the_read_only_default_is_advisory_and_the_stop_is_not(pg):
    leader = pg.add(init_leader(pg.base, "db-0"))
    follower = pg.add(clone_follower(leader, pg.base, "db-1"))
    sql(leader, "create table t (id int primary key)")
    lb = Loopback({"db-0": leader, "db-1": follower})
    target = lb.target("db-0")
    assert target is not None

    await act.fence(target)
    for i, trick in enumerate(TRICKS):
        commit(leader, trick, i)  # every trick commits on a soft-fenced primary ...
    assert sql(leader, "select count(*) from t") == [(len(TRICKS),)]

    await act.stop(target)  # ... and none does once it is stopped
    assert (Path(leader.datadir) / act.FENCE_MARKER).exists()
    for i, trick in enumerate(TRICKS, start=100):
        with pytest.raises(psycopg.OperationalError):
            commit(leader, trick, i)
    # The follower has every commit the fenced leader acknowledged.
    assert sql(follower, "select count(*) from t") == [(len(TRICKS),)]


async def test_a_clean_stop_hands_a_streaming_follower_every_commit(pg):
    """A switchover stops the old leader with a fast shutdown: its WAL senders first send connected
    followers all the WAL, including what a client committed with BEGIN READ WRITE after the soft fence."""
    leader = pg.add(init_leader(pg.base, "db-0"))
    follower = pg.add(clone_follower(leader, pg.base, "db-1"))
    sql(leader, "create table t (id int primary key)")
    await act.fence(Loopback({"db-0": leader}).target("db-0"))  # type: ignore[arg-type]
    commit(leader, TRICKS[0], 1)
    before = sql(leader, "select pg_current_wal_lsn()::text")[0][0]
    await act.stop(Loopback({"db-0": leader}).target("db-0"), clean=True)  # type: ignore[arg-type]
    got = sql(follower, f"select pg_last_wal_receive_lsn() >= '{before}'::pg_lsn")
    assert got == [(True,)]
    await wait_for(lambda: sql(follower, "select count(*) from t") == [(1,)], what="replay on the follower")


async def test_a_fenced_old_leader_restarts_only_as_a_follower_of_the_new_one(pg):
    leader = pg.add(init_leader(pg.base, "db-0"))
    follower = pg.add(clone_follower(leader, pg.base, "db-1"))
    sql(leader, "create table t (id int primary key)")
    sql(leader, "insert into t values (1)")
    await wait_for(lambda: streaming_from(leader, "db-1"), what="streaming")
    await act.stop(Loopback({"db-0": leader}).target("db-0"))  # type: ignore[arg-type]

    # The container restarts while no other primary answers on rw: without the marker start.sh would start
    # it as a primary after its grace; with the marker it keeps waiting for a new leader.
    env = script_env(pg.base, "db-0", leader.port, leader.port) | {"ARCHOP_RESTART_GRACE_SECONDS": "1"}
    body = ("prepare >/dev/null; prepare_pgdata & pid=$!; sleep 5; "
            "if kill -0 $pid 2>/dev/null; then echo still-waiting; kill $pid; fi")
    r = run_script_function("start.sh", env, body)
    assert r.stdout.strip() == "still-waiting", (r.stdout, r.stderr)
    assert "fenced by the operator" in r.stderr

    # The follower is promoted and writes on: the fenced instance rewinds onto its timeline.
    sql(follower, "select pg_promote(true, 30)")
    sql(follower, "checkpoint")
    sql(follower, "insert into t values (2)")
    env = script_env(pg.base, "db-0", leader.port, follower.port)
    r = run_script_function("start.sh", env, "prepare >/dev/null; prepare_pgdata")
    assert r.returncode == 0 and r.stdout.strip() == "rewind", (r.stdout, r.stderr)
    assert not (Path(leader.datadir) / act.FENCE_MARKER).exists()
    assert (Path(leader.datadir) / "standby.signal").exists()
    leader.start()
    await wait_for(lambda: streaming_from(follower, "db-0"), what="the old leader streams from the new one")
    await wait_for(lambda: sql(leader, "select count(*) from t") == [(2,)], what="replay")
    assert sql(leader, "select pg_is_in_recovery()") == [(True,)]


def test_stop_reports_a_refusal_and_fails_on_a_silence():
    """Nothing listening at the address: the stop says so (NothingListens), and whether that proves the
    postmaster gone is decide.refusal_proves_down's call (an enforcer can forge the refusal). An address
    that accepts but never answers (a frozen postmaster) proves nothing: the stop fails within its bound, so
    the phase runs again instead of claiming success."""
    started = time.monotonic()
    with pytest.raises(act.NothingListens):
        asyncio.run(act.stop(act.Target(host="127.0.0.1", port=free_port()), timeout=2))
    assert time.monotonic() - started < 3
    with socket.socket() as frozen:
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(8)  # the kernel completes handshakes; nobody ever speaks
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            asyncio.run(act.stop(act.Target(host="127.0.0.1", port=frozen.getsockname()[1]),
                                 connect_timeout=1.0))
        assert time.monotonic() - started < 4
