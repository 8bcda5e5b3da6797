"""The leader is replaced while requests run: every request still succeeds, no write is applied twice.

N-db-rw is played by a TCP proxy on 127.0.0.1; "the operator" promotes the follower and moves the proxy.
The pair replicates synchronously, so every acknowledged write is on the follower that gets promoted.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import psycopg
import pytest
from aiohttp import ClientTimeout
from aiohttp.test_utils import TestClient
from conftest import AppFactory, PgPair, get_metric, settings_for
from tcpproxy import TcpProxy

pytestmark = pytest.mark.integration
WORKERS = 6


@dataclass
class Load:
    prefix: str = field(default_factory=lambda: f"fo-{uuid.uuid4().hex[:6]}")
    created: dict[str, int] = field(default_factory=dict)  # idempotency key -> user id
    follows: int = 0
    reads: int = 0
    failures: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


async def worker(client: TestClient, load: Load, n: int) -> None:
    timeout = ClientTimeout(total=20)
    mine: list[int] = []
    i = 0
    while not load.stop.is_set():
        i += 1
        key = f"{load.prefix}-{n}-{i}"
        try:
            async with client.post("/users", json={"name": key}, headers={"Idempotency-Key": key},
                                   timeout=timeout) as r:
                if r.status != 201:
                    load.failures.append(f"create {r.status} {await r.text()}")
                    continue
                uid = (await r.json())["id"]
                load.created[key] = uid
                mine.append(uid)
            if len(mine) >= 2:
                fkey = f"{key}-f"
                async with client.post(f"/users/{mine[-1]}/follow", json={"target": mine[-2]},
                                       headers={"Idempotency-Key": fkey}, timeout=timeout) as r:
                    if r.status != 200:
                        load.failures.append(f"follow {r.status} {await r.text()}")
                    else:
                        load.follows += 1
            async with client.get(f"/users/{uid}", headers={"X-Consistency": "strong"}, timeout=timeout) as r:
                if r.status != 200:
                    load.failures.append(f"read {r.status} {await r.text()}")
                else:
                    load.reads += 1
        except Exception as exc:  # a client-side failure is a failed request too
            load.failures.append(f"{type(exc).__name__}: {exc}")


async def run_with_failover(client: TestClient, failover: Callable[[], Awaitable[None]]) -> Load:
    load = Load()
    tasks = [asyncio.create_task(worker(client, load, n)) for n in range(WORKERS)]
    await asyncio.sleep(1.0)
    before = len(load.created)
    await failover()
    await asyncio.sleep(2.0)  # keep going on the new leader
    load.stop.set()
    await asyncio.gather(*tasks)
    assert before > 0 and len(load.created) > before, "no traffic before and after the failover"
    return load


def promote(pg: PgPair) -> None:
    with psycopg.connect(pg.follower.dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_promote(wait => true)")


def check_applied_once(pg: PgPair, load: Load) -> None:
    with psycopg.connect(pg.follower.dsn("app")) as conn:  # the new leader
        rows = conn.execute("SELECT name, id FROM users WHERE name LIKE %s", (load.prefix + "-%",)).fetchall()
        names = [r[0] for r in rows]
        assert len(names) == len(set(names)), "a create was applied twice"
        assert dict(rows) == load.created  # every acknowledged create exists, nothing else does
        bad = conn.execute(
            "SELECT u.id FROM users u WHERE u.name LIKE %s AND u.follower_count <>"
            " (SELECT count(*) FROM follows f WHERE f.followee_id = u.id)", (load.prefix + "-%",)).fetchall()
        assert bad == [], "denormalised follower counts drifted (a follow applied twice?)"


async def test_leader_killed_and_follower_promoted(pg_sync_pair: PgPair, make_client: AppFactory) -> None:
    pg = pg_sync_pair
    rw = TcpProxy(pg.leader.port)
    await rw.start()
    client = await make_client(settings_for(rw.port, pg.follower.port, None))
    started = time.monotonic()

    async def failover() -> None:
        await asyncio.to_thread(pg.leader.kill)  # crash: every connection to it breaks
        await asyncio.sleep(0.5)  # detection time
        await asyncio.to_thread(promote, pg)
        rw.retarget(pg.follower.port)  # N-db-rw now selects the new leader

    try:
        load = await run_with_failover(client, failover)
    finally:
        await rw.stop()
    assert load.failures == []
    assert await get_metric(client, "demoapp_db_retries_total", pool="rw") > 0
    assert time.monotonic() - started < 30
    await asyncio.to_thread(check_applied_once, pg, load)


async def test_fenced_leader_read_only_then_promoted(pg_sync_pair: PgPair, make_client: AppFactory) -> None:
    """The old leader stays up but read-only (self-fenced) and keeps its sessions: pooled connections get
    "cannot execute ... in a read-only transaction" and must be thrown away, not retried on."""
    pg = pg_sync_pair
    rw = TcpProxy(pg.leader.port)
    await rw.start()
    client = await make_client(settings_for(rw.port, pg.follower.port, None))

    def fence() -> None:
        with psycopg.connect(pg.leader.dsn(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            conn.execute("SELECT pg_reload_conf()")

    async def failover() -> None:
        await asyncio.to_thread(fence)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(promote, pg)
        rw.retarget(pg.follower.port, cut=False)  # open connections stay on the fenced leader

    try:
        load = await run_with_failover(client, failover)
    finally:
        await rw.stop()
    assert load.failures == []
    assert await get_metric(client, "demoapp_db_errors_total", pool="rw", error="ReadOnlySqlTransaction") > 0
    await asyncio.to_thread(check_applied_once, pg, load)
