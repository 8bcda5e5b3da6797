"""Read-your-writes with consistency tokens, against a follower that is certainly behind.

Replay on the follower is paused (`pg_wal_replay_pause()`), so nothing written meanwhile is on the follower
until the test resumes it: whatever a read answers is decided by the app, not by how fast replication
happens to be. Every wait for the follower is a bounded poll of a condition, never a sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from aiohttp.test_utils import TestClient
from conftest import AppFactory, PgPair, get_metric, settings_for, wait_replayed
from demoapp.consistency import Lsn
from demoapp.routes import LIST_MAX_AGE

from testsupport.nginx import start_cdn
from testsupport.redis import RedisServer

pytestmark = pytest.mark.integration
ITERATIONS = 200
REPLAY_TIMEOUT = 30.0  # s: the most the follower may take to catch up once replay resumes


class Replay:
    """Pause and resume WAL replay on the follower (superuser functions, run on the follower itself)."""

    def __init__(self, pg: PgPair) -> None:
        self.pg = pg
        self.paused = False

    def _run(self, sql: str) -> Any:
        with psycopg.connect(self.pg.follower.dsn(), autocommit=True) as conn:
            row = conn.execute(sql).fetchone()
            return row[0] if row else None

    async def pause(self) -> None:
        # Takes effect before the next record is applied: nothing written after this returns is replayed.
        await asyncio.to_thread(self._run, "SELECT pg_wal_replay_pause()")
        self.paused = True
        state = await asyncio.to_thread(self._run, "SELECT pg_get_wal_replay_pause_state()")
        assert state in ("pause requested", "paused"), state

    async def resume(self) -> None:
        await asyncio.to_thread(self._run, "SELECT pg_wal_replay_resume()")
        self.paused = False
        await asyncio.to_thread(wait_replayed, self.pg, REPLAY_TIMEOUT)

    def resume_now(self) -> None:
        if self.paused:
            self._run("SELECT pg_wal_replay_resume()")
            self.paused = False


@pytest.fixture
def replay(pg: PgPair) -> Iterator[Replay]:
    r = Replay(pg)
    yield r
    r.resume_now()  # the follower is shared with the other tests


class Place(Enum):
    """Where a read carries its token."""

    HEADER = "X-Min-LSN header"
    ARG = "min_lsn argument"
    COOKIE = "commit_lsn cookie"


@dataclass
class Answer:
    status: int
    headers: Any  # CIMultiDictProxy
    body: Any

    @property
    def commit_lsn(self) -> Lsn:
        return Lsn.parse(self.headers["X-Commit-LSN"])

    @property
    def read_lsn(self) -> Lsn:
        return Lsn.parse(self.headers["X-Read-LSN"])

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class Http:
    """One cookie-less session (an API client) for the app and for the CDN in front of it."""

    def __init__(self, session: aiohttp.ClientSession, app: str, cdn: str) -> None:
        self.s, self.app, self.cdn = session, app, cdn

    async def call(self, method: str, base: str, path: str, *, token: Lsn | None = None,
                   place: Place = Place.HEADER, headers: dict[str, str] | None = None,
                   json: Any = None) -> Answer:
        h = dict(headers or {})
        if token is not None:
            if place is Place.HEADER:
                h["X-Min-LSN"] = str(token)
            elif place is Place.ARG:
                path += ("&" if "?" in path else "?") + f"min_lsn={token}"
            else:
                h["Cookie"] = f"commit_lsn={token}"
        async with self.s.request(method, base + path, headers=h, json=json) as r:
            return Answer(r.status, r.headers, await r.json())

    async def create(self, name: str) -> Answer:
        a = await self.call("POST", self.cdn, "/users", json={"name": name})
        assert a.status == 201, a.body
        return a

    async def follow(self, uid: int, target: int) -> Answer:
        a = await self.call("POST", self.cdn, f"/users/{uid}/follow", json={"target": target})
        assert a.status == 200 and a.body["changed"], a.body
        return a


@dataclass
class Stack:
    client: TestClient  # the app itself (metrics)
    http: Http


@dataclass
class Edge:
    follower: int
    target: int
    token: Lsn  # of the follow


@pytest.fixture
async def stack(pg: PgPair, redis_server: RedisServer, make_client: AppFactory,
                tmp_path: Path) -> AsyncIterator[Stack]:
    """The app as in a pod (rw -> leader, ro -> follower, Redis) behind the CDN sidecar's config. A token
    read waits 10 ms for the follower here: with replay paused every one of them waits it out."""
    client = await make_client(settings_for(pg.leader.port, pg.follower.port, redis_server, ryw_wait_ms=10))
    ngx, cdn = await asyncio.to_thread(start_cdn, client.server.port or 0, tmp_path)
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
            yield Stack(client, Http(s, f"http://127.0.0.1:{client.server.port}", cdn))
    finally:
        await asyncio.to_thread(ngx.stop)


def at_least(answer: Answer, token: Lsn) -> bool:
    """X-Read-LSN covers the token. A leader reports its position minus one byte (repo.POSITION_SQL), so a
    leader read right after the write, with no WAL written in between, says token - 1 and still has it."""
    slack = 1 if answer.header("X-DB-Pool") == "rw" else 0
    return answer.read_lsn.value >= token.value - slack


async def test_token_reads_always_see_their_write_while_replay_is_paused(
        stack: Stack, replay: Replay, pg: PgPair) -> None:
    client, http = stack.client, stack.http
    targets = [(await http.create(f"ryw-b{i}")).body for i in range(ITERATIONS)]
    await asyncio.to_thread(wait_replayed, pg, REPLAY_TIMEOUT)
    for b in targets:  # the CDN and Redis now hold every target's follower list (empty)
        a = await http.call("GET", http.cdn, f"/users/{b['id']}/followers")
        assert a.status == 200 and a.body["count"] == 0
    fallbacks0 = await get_metric(client, "demoapp_ryw_fallbacks_total")
    waits0 = await get_metric(client, "demoapp_ryw_wait_seconds_count", pool="rw")
    too_old0 = await get_metric(client, "demoapp_cache_too_old_total", kind="followers")

    await replay.pause()
    edges: list[Edge] = []
    places = list(Place)
    for i, b in enumerate(targets):
        place = places[i % len(places)]
        created = await http.create(f"ryw-a{i}")
        a, t1 = created.body, created.commit_lsn
        assert created.header("Set-Cookie") == f"commit_lsn={t1}; Max-Age=60; Path=/; HttpOnly; SameSite=Lax"
        # What issue 10 saw: without the token the follower does not have the new user.
        assert (await http.call("GET", http.cdn, f"/users/{a['id']}")).status == 404
        got = await http.call("GET", http.cdn, f"/users/{a['id']}", token=t1, place=place)
        assert got.status == 200 and got.body == a, (place, got.body)
        assert got.header("X-Cache-Status") == "BYPASS" and got.header("X-DB-Pool") == "rw"
        assert got.header("Cache-Control") == "no-store" and at_least(got, t1)

        t2 = (await http.follow(a["id"], b["id"])).commit_lsn
        path = f"/users/{b['id']}/followers"
        # Plain reads are stale: the CDN page from before, and the follower (which refills Redis with it).
        assert (await http.call("GET", http.cdn, path)).body["count"] == 0
        stale = await http.call("GET", http.app, path)
        assert stale.body["count"] == 0 and stale.read_lsn < t2
        # The token read passes both: the CDN, and the Redis value read before the token.
        got = await http.call("GET", http.cdn, path, token=t2, place=place)
        want = {"id": b["id"], "followers": [a["id"]], "count": 1, "truncated": False}
        assert got.status == 200 and got.body == want, place
        assert got.header("X-Cache-Status") == "BYPASS" and got.header("X-App-Cache") == "MISS"
        assert got.header("X-DB-Pool") == "rw" and at_least(got, t2)
        edges.append(Edge(a["id"], b["id"], t2))

    # Every token read went to the follower, found it behind, and fell back to the leader.
    assert await get_metric(client, "demoapp_ryw_fallbacks_total") == fallbacks0 + 2 * ITERATIONS
    assert await get_metric(client, "demoapp_ryw_wait_seconds_count", pool="rw") == waits0 + 2 * ITERATIONS
    # The Redis value the follower refilled was still there, too old, for (nearly) every token read; only the
    # second delete a second after each write could remove it first.
    assert await get_metric(client, "demoapp_cache_too_old_total", kind="followers") > too_old0

    await replay.resume()  # returns once the follower has replayed everything written so far
    # Every token stays good, and the follower (or a Redis value new enough) serves it now.
    for e in edges:
        got = await http.call("GET", http.cdn, f"/users/{e.target}/followers", token=e.token)
        assert got.body["followers"] == [e.follower] and got.header("X-DB-Pool") in (None, "ro")
        assert at_least(got, e.token)
    ro0 = await get_metric(client, "demoapp_ryw_wait_seconds_count", pool="ro")
    for j in range(20):
        created = await http.create(f"ryw-c{j}")
        await asyncio.to_thread(wait_replayed, pg, REPLAY_TIMEOUT)
        got = await http.call("GET", http.cdn, f"/users/{created.body['id']}", token=created.commit_lsn)
        assert got.status == 200 and got.body == created.body
        assert got.header("X-DB-Pool") == "ro" and got.read_lsn >= created.commit_lsn
    assert await get_metric(client, "demoapp_ryw_wait_seconds_count", pool="ro") == ro0 + 20


async def test_a_cached_value_older_than_the_token_is_not_served(
        stack: Stack, replay: Replay, pg: PgPair, make_client: AppFactory) -> None:
    """Deterministic Redis path: the write goes through a pod without the cache, so no delete reaches Redis
    and the old value stays there until a read with the token passes it by."""
    client, http = stack.client, stack.http
    other = await make_client(settings_for(pg.leader.port, pg.follower.port, None))
    a, b = (await http.create("rc-a")).body, (await http.create("rc-b")).body
    await asyncio.to_thread(wait_replayed, pg, REPLAY_TIMEOUT)
    path = f"/users/{b['id']}"
    first = await http.call("GET", http.app, path)
    assert first.header("X-App-Cache") == "MISS" and first.header("X-DB-Pool") == "ro"

    await replay.pause()
    async with other.post(f"/users/{a['id']}/follow", json={"target": b["id"]}) as r:
        assert r.status == 200
        token = Lsn.parse(r.headers["X-Commit-LSN"])
    cached = await http.call("GET", http.app, path)
    assert cached.header("X-App-Cache") == "HIT" and cached.body["follower_count"] == 0
    assert cached.read_lsn == first.read_lsn < token
    too_old0 = await get_metric(client, "demoapp_cache_too_old_total", kind="user")
    # Several tokens: the highest counts (a low one alone would be happy with the cached value).
    got = await http.call("GET", http.app, f"{path}?min_lsn={first.read_lsn}",
                          headers={"X-Min-LSN": str(token)})
    assert got.body["follower_count"] == 1 and got.header("X-App-Cache") == "MISS"
    assert got.header("X-DB-Pool") == "rw"
    assert await get_metric(client, "demoapp_cache_too_old_total", kind="user") == too_old0 + 1
    # That read refilled Redis with the leader's answer, which is new enough for any older token.
    low = await http.call("GET", http.app, path, token=first.read_lsn)
    assert low.header("X-App-Cache") == "HIT" and low.body["follower_count"] == 1

    await replay.resume()
    for _ in range(2):  # a value at least as new as the token lands in Redis; then it is served from there
        got = await http.call("GET", http.app, path, token=token)
        assert got.body["follower_count"] == 1 and got.header("X-DB-Pool") in (None, "ro")
    assert got.header("X-App-Cache") == "HIT" and got.read_lsn >= token


async def test_eventual_reads_may_be_stale_and_converge_within_the_bound(
        pg: PgPair, redis_server: RedisServer, make_client: AppFactory, replay: Replay,
        tmp_path: Path) -> None:
    """A plain read after a write may be stale by up to replica lag + the Redis TTL + the CDN max-age
    (app/README.md, "Consistency"); once the follower has caught up, it is fresh within TTL + max-age."""
    ttl = 2
    client = await make_client(settings_for(pg.leader.port, pg.follower.port, redis_server,
                                            cache_ttl_seconds=ttl))
    ngx, cdn = await asyncio.to_thread(start_cdn, client.server.port or 0, tmp_path)
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
            http = Http(s, f"http://127.0.0.1:{client.server.port}", cdn)
            a, b = (await http.create("ev-a")).body, (await http.create("ev-b")).body
            await asyncio.to_thread(wait_replayed, pg, REPLAY_TIMEOUT)
            path = f"/users/{b['id']}/followers"
            first = await http.call("GET", http.cdn, path)
            assert first.body["count"] == 0 and first.header("X-Cache-Status") == "MISS"
            assert first.header("Cache-Control") == f"public, max-age={LIST_MAX_AGE}"
            assert first.header("Vary") == "Cookie, X-Consistency, X-Min-LSN"

            await replay.pause()
            await http.follow(a["id"], b["id"])
            for base in (http.cdn, http.app):  # the CDN's page, then the follower (through a Redis miss)
                assert (await http.call("GET", base, path)).body["count"] == 0

            await replay.resume()
            caught_up = time.monotonic()
            bound = ttl + LIST_MAX_AGE + 2.0  # + nginx's whole seconds, one stale answer while it refreshes
            seen = []
            while time.monotonic() - caught_up < bound:
                got = await http.call("GET", http.cdn, path)
                seen.append((round(time.monotonic() - caught_up, 1), got.header("X-Cache-Status")))
                if got.body["count"] == 1:
                    break
                await asyncio.sleep(0.1)
            assert got.body == {"id": b["id"], "followers": [a["id"]], "count": 1, "truncated": False}, seen
    finally:
        await asyncio.to_thread(ngx.stop)


async def test_token_edges(stack: Stack, replay: Replay) -> None:
    http = stack.http
    created = await http.create("edge")
    uid, token = created.body["id"], created.commit_lsn
    path = f"/users/{uid}"
    # Malformed tokens: 400 naming where the bad one was, wherever it was.
    for place, raw in ((Place.HEADER, "yesterday"), (Place.ARG, "0/"), (Place.COOKIE, "1/2/3")):
        headers = {"X-Min-LSN": raw} if place is Place.HEADER else (
            {"Cookie": f"commit_lsn={raw}"} if place is Place.COOKIE else {})
        url = f"{path}?min_lsn={raw}" if place is Place.ARG else path
        bad = await http.call("GET", http.cdn, url, headers=headers)
        assert bad.status == 400 and bad.body["error"] == "bad_request", (place, bad.body)
        assert bad.body["message"].startswith(f"{place.value} must be a WAL position like 0/16B3740")

    await replay.pause()
    # A token beyond anything any server has (a write lost in an asynchronous failover, or made up) does
    # not hang: the follower is given DEMOAPP_RYW_WAIT_MS, then the leader answers with what it has.
    start = time.monotonic()
    beyond = Lsn.parse("FFFFFFFF/FFFFFFFF")
    got = await http.call("GET", http.cdn, path, token=beyond)
    assert time.monotonic() - start < 2.0
    assert got.status == 200 and got.body == created.body and got.header("X-DB-Pool") == "rw"
    assert got.read_lsn < beyond  # the answer says it is older than asked
    # Strong stays as it was: the leader, no caches, whatever token comes along.
    strong = await http.call("GET", http.cdn, path, token=token, headers={"X-Consistency": "strong"})
    assert strong.body == created.body and strong.header("X-DB-Pool") == "rw"
    assert strong.header("X-App-Cache") == "BYPASS" and strong.header("Cache-Control") == "no-store"
    # An idempotent replay answers with a token too, at least as new as the original write's.
    key = {"Idempotency-Key": f"edge-{uid}"}
    first = await http.call("POST", http.cdn, "/users", json={"name": "again"}, headers=key)
    again = await http.call("POST", http.cdn, "/users", json={"name": "again"}, headers=key)
    assert again.header("Idempotent-Replayed") == "true" and again.body == first.body
    assert again.commit_lsn >= first.commit_lsn
    got = await http.call("GET", http.cdn, f"/users/{first.body['id']}", token=again.commit_lsn)
    assert got.status == 200 and got.body == first.body


async def test_a_browser_reads_its_writes_through_the_cookie(
        stack: Stack, replay: Replay) -> None:
    """A client that keeps cookies gets read-your-writes without knowing about tokens."""
    http = stack.http
    await replay.pause()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.post(http.cdn + "/users", json={"name": "browser"}) as r:
            assert r.status == 201
            user = await r.json()
        async with browser.get(f"{http.cdn}/users/{user['id']}") as r:
            assert r.status == 200 and await r.json() == user
            assert r.headers["X-Cache-Status"] == "BYPASS" and r.headers["X-DB-Pool"] == "rw"
        # The token read put the fresh user into Redis: once the cookie is gone (Max-Age passed), a plain
        # read may find it there, cached by the CDN from now on as any plain read.
        browser.cookie_jar.clear()
        async with browser.get(f"{http.cdn}/users/{user['id']}") as r:
            assert r.status == 200 and r.headers["X-App-Cache"] == "HIT"
            assert r.headers["X-Cache-Status"] == "MISS" and r.headers["Cache-Control"].startswith("public")
