"""Cache-aside against a real Redis: hits, misses, invalidation, TTL, and a Redis that dies or hangs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from conftest import AppFactory, PgPair, get_metric, settings_for, wait_replayed
from test_api import new_user

from testsupport.redis import RedisServer, start_redis

pytestmark = pytest.mark.integration


async def read(client: TestClient, path: str) -> tuple[str, dict]:
    async with client.get(path) as r:
        assert r.status == 200, await r.text()
        return r.headers["X-App-Cache"], await r.json()


async def follow(client: TestClient, uid: int, target: int) -> None:
    async with client.post(f"/users/{uid}/follow", json={"target": target}) as r:
        assert r.status == 200, await r.text()


async def test_hit_miss_and_invalidation(client: TestClient, pg: PgPair) -> None:
    a, b = await new_user(client, "a"), await new_user(client, "b")
    await asyncio.to_thread(wait_replayed, pg)
    hits0 = await get_metric(client, "demoapp_cache_hits_total", kind="user")
    misses0 = await get_metric(client, "demoapp_cache_misses_total", kind="user")

    assert await read(client, f"/users/{b['id']}") == ("MISS", b)
    assert await read(client, f"/users/{b['id']}") == ("HIT", b)
    assert (await read(client, f"/users/{b['id']}/followers"))[0] == "MISS"
    assert await read(client, f"/users/{b['id']}/followers") == (
        "HIT", {"id": b["id"], "followers": [], "count": 0, "truncated": False})
    assert await get_metric(client, "demoapp_cache_hits_total", kind="user") == hits0 + 1
    assert await get_metric(client, "demoapp_cache_misses_total", kind="user") == misses0 + 1

    # A write drops every key it affects; the next read goes to the database and sees it.
    await follow(client, a["id"], b["id"])
    await asyncio.to_thread(wait_replayed, pg)
    status, fresh = await read(client, f"/users/{b['id']}")
    assert status == "MISS" and fresh["follower_count"] == 1
    assert await read(client, f"/users/{b['id']}/followers") == (
        "MISS", {"id": b["id"], "followers": [a["id"]], "count": 1, "truncated": False})
    assert (await read(client, f"/users/{a['id']}/following"))[1]["following"] == [b["id"]]
    # Strong reads never use the cache.
    async with client.get(f"/users/{b['id']}", headers={"X-Consistency": "strong"}) as r:
        assert r.headers["X-App-Cache"] == "BYPASS" and r.headers["X-DB-Pool"] == "rw"


async def test_ttl_expires_entries(pg: PgPair, redis_server: RedisServer, make_client: AppFactory) -> None:
    client = await make_client(settings_for(pg.leader.port, None, redis_server, cache_ttl_seconds=1))
    u = await new_user(client)
    assert (await read(client, f"/users/{u['id']}"))[0] == "MISS"
    assert (await read(client, f"/users/{u['id']}"))[0] == "HIT"
    await asyncio.sleep(1.3)
    assert (await read(client, f"/users/{u['id']}"))[0] == "MISS"


async def test_cache_disabled(pg: PgPair, redis_server: RedisServer, make_client: AppFactory) -> None:
    client = await make_client(settings_for(pg.leader.port, None, redis_server, cache_enabled=False))
    u = await new_user(client)
    for _ in range(2):
        assert (await read(client, f"/users/{u['id']}"))[0] == "OFF"
    async with client.get("/readyz") as r:
        assert (await r.json())["cache"] == "off"


@pytest.fixture
def own_redis(tmp_path: Path):
    srv = start_redis(tmp_path / "redis")
    yield srv
    srv.thaw()
    srv.stop()


async def test_redis_dies_mid_run(pg: PgPair, own_redis: RedisServer, make_client: AppFactory) -> None:
    client = await make_client(settings_for(pg.leader.port, None, own_redis))
    u = await new_user(client)
    path = f"/users/{u['id']}"
    assert [(await read(client, path))[0] for _ in range(3)] == ["MISS", "HIT", "HIT"]

    own_redis.stop()  # killed
    errors0 = await get_metric(client, "demoapp_cache_errors_total")
    misses0 = await get_metric(client, "demoapp_cache_misses_total", kind="user")
    start = time.monotonic()
    for _ in range(40):
        status, body = await read(client, path)
        assert status == "MISS" and body == u  # still answered, from the database
    # The breaker keeps a dead Redis off the request path: far less than 40 socket timeouts.
    assert time.monotonic() - start < 3.0
    assert await get_metric(client, "demoapp_cache_misses_total", kind="user") == misses0 + 40
    assert await get_metric(client, "demoapp_cache_errors_total") >= errors0 + 40
    async with client.get("/readyz") as r:
        assert r.status == 200 and (await r.json())["cache"] == "down"

    own_redis.start()  # back on the same port: the breaker closes again on its own
    deadline = time.monotonic() + 15
    statuses = []
    while time.monotonic() < deadline and statuses[-2:] != ["MISS", "HIT"]:
        statuses.append((await read(client, path))[0])
        await asyncio.sleep(0.1)
    assert statuses[-2:] == ["MISS", "HIT"]


async def test_hung_redis_never_serves_what_a_write_invalidated(
        pg: PgPair, own_redis: RedisServer, make_client: AppFactory) -> None:
    client = await make_client(settings_for(pg.leader.port, None, own_redis))
    a, b = await new_user(client, "a"), await new_user(client, "b")
    path = f"/users/{b['id']}"
    assert [(await read(client, path))[0] for _ in range(2)] == ["MISS", "HIT"]

    own_redis.freeze()  # hangs: socket timeouts, not refusals
    start = time.monotonic()
    await follow(client, a["id"], b["id"])  # its cache delete cannot reach Redis
    for _ in range(10):
        assert (await read(client, path))[1]["follower_count"] == 1
    assert time.monotonic() - start < 3.0
    own_redis.thaw()  # Redis still holds the stale b (follower_count 0)

    deadline = time.monotonic() + 15
    seen = []
    while time.monotonic() < deadline and seen[-1:] != ["HIT"]:
        status, body = await read(client, path)
        assert body["follower_count"] == 1, "stale cache entry served after Redis came back"
        seen.append(status)
        await asyncio.sleep(0.1)
    assert seen[-1] == "HIT"
