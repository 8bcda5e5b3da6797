"""Read routing (ro, falling back to rw) and readiness, with real Postgres behind switchable proxies."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import AppFactory, PgPair, get_metric, settings_for, wait_replayed
from tcpproxy import TcpProxy
from test_api import new_user

from testsupport.postgres import free_port

pytestmark = pytest.mark.integration


async def test_reads_fall_back_to_rw_while_ro_is_down(pg: PgPair, make_client: AppFactory) -> None:
    ro = TcpProxy(pg.follower.port)
    await ro.start()
    client = await make_client(settings_for(pg.leader.port, ro.port, None))
    try:
        u = await new_user(client)
        await asyncio.to_thread(wait_replayed, pg)
        path = f"/users/{u['id']}"
        async with client.get(path) as r:
            assert r.status == 200 and r.headers["X-DB-Pool"] == "ro"

        await ro.stop()  # no follower ready: N-db-ro has no endpoints
        start = time.monotonic()
        for _ in range(30):
            async with client.get(path) as r:
                assert r.status == 200 and await r.json() == u
                assert r.headers["X-DB-Pool"] == "rw"
        # Only the first read pays for discovering ro is gone; the rest go straight to rw.
        assert time.monotonic() - start < 3.0
        assert await get_metric(client, "demoapp_db_ro_fallback_total") >= 30

        await ro.start()  # a follower is back: reads return to it by themselves
        deadline, pools = time.monotonic() + 20, []
        while time.monotonic() < deadline and pools[-1:] != ["ro"]:
            async with client.get(path) as r:
                assert r.status == 200
                pools.append(r.headers["X-DB-Pool"])
            await asyncio.sleep(0.2)
        assert pools[-1] == "ro"
    finally:
        await ro.stop()


async def test_ro_never_reachable_serves_from_rw(pg: PgPair, make_client: AppFactory) -> None:
    client = await make_client(settings_for(pg.leader.port, free_port(), None))
    u = await new_user(client)
    for _ in range(5):
        async with client.get(f"/users/{u['id']}/following") as r:
            assert r.status == 200 and r.headers["X-DB-Pool"] == "rw"


async def test_readiness_follows_the_leader(pg: PgPair, make_client: AppFactory) -> None:
    rw = TcpProxy(pg.leader.port)
    await rw.start()
    try:
        client = await make_client(settings_for(rw.port, None, None, retry_budget_seconds=1.0))
        async with client.get("/readyz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ready"

        await rw.stop()  # the leader is unreachable
        deadline = time.monotonic() + 5  # a success less than 2 s old still counts
        while True:
            async with client.get("/readyz") as r:
                body = await r.json()
                if r.status == 503:
                    break
            assert time.monotonic() < deadline, "still ready without a database"
            await asyncio.sleep(0.2)
        assert body == {"status": "not ready", "cache": "off", "reason": "database (rw) unreachable"}
        async with client.get("/healthz") as r:
            assert r.status == 200  # liveness never depends on the database
        async with client.post("/users", json={"name": "nobody"}) as r:
            assert r.status == 503 and r.headers["Retry-After"] == "1"
            assert (await r.json())["error"] == "unavailable"

        await rw.start()
        deadline = time.monotonic() + 10
        while True:
            async with client.get("/readyz") as r:
                if r.status == 200:
                    break
            assert time.monotonic() < deadline, "never ready again"
            await asyncio.sleep(0.1)
    finally:
        await rw.stop()


async def test_not_ready_until_the_database_exists(make_client: AppFactory) -> None:
    """A pod that starts before Postgres: it serves /healthz, stays unready, answers 503 JSON."""
    client = await make_client(settings_for(free_port(), None, None, retry_budget_seconds=0.5), wait=False)
    async with client.get("/healthz") as r:
        assert r.status == 200
    async with client.get("/readyz") as r:
        assert r.status == 503 and (await r.json())["reason"] == "schema not migrated yet"
    async with client.get("/users/1") as r:
        assert r.status == 503 and (await r.json())["error"] == "unavailable"
