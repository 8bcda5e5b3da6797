"""A query to a server that stops answering ends within its bound, on real Postgres 15.

psycopg answers a cancelled query with a cancel request and up to 10 s of waiting, which a frozen or
partitioned server never satisfies; the operator's probes and lease renewals must not inherit that
(a lease renewal stuck that long once delayed every failover of a partitioned leader by 10 s)."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from archop.failover import act, lease
from archop.health.probe import Target, bounded, connect, probe

from testsupport.postgres import init_leader

pytestmark = pytest.mark.integration


async def test_a_query_to_a_frozen_server_ends_within_its_bound_and_closes_the_connection(pg):
    leader = pg.add(init_leader(pg.base, "db-0"))
    target = Target("127.0.0.1", leader.port)
    conn = await connect(target, 1.0, None)
    await conn.execute("select 1")
    session = act.LeaseSession()
    assert await session.renew("db-0", target) is lease.Renewal.RENEWED
    leader.freeze_all()
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await bounded(conn, conn.execute("select 1"), 1.0)
        assert time.monotonic() - started < 2.5
        assert conn.closed
        started = time.monotonic()
        # The established session timed out: it counts as broken (a frozen postmaster; the refusal that
        # would make that proof of death never comes from a frozen one).
        assert await session.renew("db-0", target) is lease.Renewal.BROKEN
        assert time.monotonic() - started < 3.0
        started = time.monotonic()
        assert not (await probe(target, 1.0)).reachable
        assert time.monotonic() - started < 3.5
    finally:
        leader.thaw()
        await session.close()
    # The server itself is fine once thawed: a new connection works.
    async with await connect(target, 2.0, None) as again:
        assert await (await again.execute("select 1")).fetchone() == (1,)


async def test_an_answer_within_the_bound_is_returned(pg):
    leader = pg.add(init_leader(pg.base, "db-0"))
    async with await connect(Target("127.0.0.1", leader.port), 1.0, None) as conn:
        cur = await bounded(conn, conn.execute("select 41 + 1"), 2.0)
        assert await cur.fetchone() == (42,)
        with pytest.raises(psycopg.errors.DivisionByZero):
            await bounded(conn, conn.execute("select 1 / 0"), 2.0)
        assert not conn.closed
    await asyncio.sleep(0)
