"""HTTP handlers of the social graph API and the ops endpoints.

Consistency (app/README.md, "Consistency", has the bounds and the guarantees):
- eventual: a plain GET may be served by the CDN, Redis or a follower, however far behind they are (bounded
  by max-age + the Redis TTL + replica lag).
- read-your-writes: every write answers with `X-Commit-LSN` (and the cookie `commit_lsn`), the WAL position
  of its commit. A GET that carries it back (`X-Min-LSN`, `?min_lsn=` or the cookie; the highest wins) skips
  the CDN, takes a Redis value only if it was read at that position or later, and reads a follower only once
  the follower has replayed it (waiting up to DEMOAPP_RYW_WAIT_MS), else the leader. Followers still serve
  almost all of those reads.
- strong: `X-Consistency: strong` (or `?consistency=strong`): the leader, no caches.
Every read answers with `X-Read-LSN`: the data reflects every write whose X-Commit-LSN is <= it. Writes also
answer with the fresh objects, read in the writing transaction.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg import AsyncConnection

from demoapp import cache as c
from demoapp import repo
from demoapp.cache import Cache
from demoapp.config import Settings
from demoapp.consistency import (
    COMMIT_HEADER,
    COOKIE,
    MIN_ARG,
    MIN_HEADER,
    READ_HEADER,
    BadToken,
    Consistency,
    Freshness,
    Lsn,
    Versioned,
    cookie_header,
    highest_token,
)
from demoapp.db import Db, DbUnavailable
from demoapp.middleware import METRICS, NO_STORE
from demoapp.repo import NotFound

MAX_ID = 2**63 - 1
MAX_ID_DIGITS = len(str(MAX_ID))
USER_MAX_AGE = 10  # s: a profile a few seconds old is fine for anyone but its author (who reads strong)
LIST_MAX_AGE = 5  # s: follower lists change more often; keep CDN copies shorter
NAME_MAX = 100
KEY_MAX = 200
# What makes a read answer differently. A browser's HTTP cache (or any shared cache but our CDN, which skips
# its cache for these by config) would otherwise answer a read that now carries a token, or asks for strong,
# with the page it stored before the write.
READ_VARY = f"Cookie, X-Consistency, {MIN_HEADER}"


@dataclass
class State:
    migrated: bool = False
    shutting_down: bool = False


SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", Db)
CACHE = web.AppKey("cache", Cache)  # absent when the cache is off
STATE = web.AppKey("state", State)

Conn = AsyncConnection[Any]


def bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(reason=message)


def _id(value: str) -> int:
    """A user id from the path. The route pattern guarantees digits, not how many: an id longer than any
    bigint is simply not found (and never reaches int(), which refuses more than 4,300 digits)."""
    digits = value.lstrip("0")
    if len(digits) > MAX_ID_DIGITS:
        raise web.HTTPNotFound(reason="user not found: no user id has that many digits")
    uid = int(digits or "0")
    if not 1 <= uid <= MAX_ID:
        raise NotFound(uid)
    return uid


def _strong(request: web.Request) -> bool:
    values = (request.headers.get("X-Consistency", ""), request.query.get("consistency", ""))
    wanted = {v.strip().lower() for v in values} - {""}
    if not wanted <= {"strong", "eventual"}:
        raise bad_request("consistency must be 'strong' or 'eventual'")
    return "strong" in wanted


def _token(request: web.Request) -> Lsn | None:
    try:
        return highest_token({
            f"{MIN_HEADER} header": request.headers.get(MIN_HEADER),
            f"{MIN_ARG} argument": request.query.get(MIN_ARG),
            f"{COOKIE} cookie": request.cookies.get(COOKIE),
        })
    except BadToken as exc:
        raise bad_request(str(exc)) from None


def _freshness(request: web.Request) -> Freshness:
    return Freshness.of(_strong(request), _token(request))


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read())  # raises HTTPRequestEntityTooLarge past client_max_size
    except (ValueError, UnicodeDecodeError):
        raise bad_request("body must be a JSON object") from None
    if not isinstance(body, dict):
        raise bad_request("body must be a JSON object")
    return body


def _target(body: dict[str, Any], uid: int) -> int:
    target = body.get("target")
    if not isinstance(target, int) or isinstance(target, bool) or not 1 <= target <= MAX_ID:
        raise bad_request("'target' must be a positive integer user id")
    if target == uid:
        raise bad_request("a user cannot follow themselves")
    return target


def _ready_db(request: web.Request) -> Db:
    if not request.app[STATE].migrated:
        raise DbUnavailable("schema not migrated yet")
    return request.app[DB]


# --- reads ------------------------------------------------------------------------------------------
async def _read(request: web.Request, kind: str, key: str, uid: int, max_age: int,
                load: Callable[[Conn], Awaitable[dict[str, Any] | None]]) -> web.Response:
    db = _ready_db(request)
    want = _freshness(request)
    strong = want.level is Consistency.STRONG
    cache = request.app.get(CACHE)
    # Only eventual answers may be kept by caches: a token or strong read is about this client's writes, and
    # a copy of it could later answer a read that carries a newer token.
    cache_control = f"public, max-age={max_age}" if want.level is Consistency.EVENTUAL else NO_STORE
    headers = {"Cache-Control": cache_control, "Vary": READ_VARY}
    entry: Versioned[Any] | None = None
    if cache is None or strong:
        headers["X-App-Cache"] = "BYPASS" if strong and cache is not None else c.OFF
    else:
        entry = await cache.get(kind, key, want.min_lsn)
        headers["X-App-Cache"] = c.HIT if entry is not None else c.MISS
    if entry is None:
        got = await db.read(load, want)
        if got.data.value is None:
            raise NotFound(uid)
        entry = got.data
        headers["X-DB-Pool"] = got.pool
        if cache is not None and not strong:
            await cache.set(key, entry)  # a token read refills too: its value is the freshest there is
    headers[READ_HEADER] = str(entry.lsn)
    return web.json_response(entry.value, headers=headers)


async def get_user(request: web.Request) -> web.Response:
    uid = _id(request.match_info["id"])
    return await _read(request, "user", c.user_key(uid), uid, USER_MAX_AGE,
                       lambda conn: repo.get_user(conn, uid))


async def get_followers(request: web.Request) -> web.Response:
    uid = _id(request.match_info["id"])
    return await _read(request, "followers", c.followers_key(uid), uid, LIST_MAX_AGE,
                       lambda conn: repo.get_followers(conn, uid))


async def get_following(request: web.Request) -> web.Response:
    uid = _id(request.match_info["id"])
    return await _read(request, "following", c.following_key(uid), uid, LIST_MAX_AGE,
                       lambda conn: repo.get_following(conn, uid))


# --- writes -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Committed:
    status: int
    body: Any
    replayed: bool  # answered from the stored result of an earlier request with the same key
    lsn: Lsn  # X-Commit-LSN


def _idempotency_key(request: web.Request) -> str:
    """The client's Idempotency-Key, or one of our own: a server-side retry after a commit whose outcome
    was lost (connection cut mid-COMMIT) must not apply the write twice either."""
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        return f"s:{uuid.uuid4()}"
    if not 1 <= len(raw) <= KEY_MAX or not raw.isprintable() or not raw.isascii():
        raise bad_request(f"Idempotency-Key must be 1..{KEY_MAX} printable ASCII characters")
    return f"c:{raw}"


async def _write(request: web.Request, body: Any, op: Callable[[Conn], Awaitable[tuple[int, Any]]],
                 invalidate: Callable[[Any], list[str]]) -> web.Response:
    db = _ready_db(request)
    key = _idempotency_key(request)
    req_hash = repo.request_hash(request.method, request.path, body)

    async def work(conn: Conn) -> Committed:
        async with conn.transaction():  # the write and its idempotency record commit together
            await repo.lock_key(conn, key)
            stored = await repo.stored_result(conn, key, req_hash)
            if stored is None:
                status, result = await op(conn)
                await repo.store_result(conn, key, req_hash, status, result)
            else:
                status, result = stored
        # The token, after COMMIT returned and in the same retried unit (a commit whose answer was lost is
        # replayed, and gets its token then). A replayed write's commit record was flushed (or, with
        # synchronous_commit=off, inserted) before it became visible to us, so it is behind this position too.
        return Committed(status, result, stored is not None, await repo.commit_lsn(conn))

    done = await db.write(work)
    headers = {"Cache-Control": NO_STORE, COMMIT_HEADER: str(done.lsn), "Set-Cookie": cookie_header(done.lsn)}
    if done.replayed:
        request.app[METRICS].idempotent_replays.inc()
        headers["Idempotent-Replayed"] = "true"
    cache = request.app.get(CACHE)
    keys = invalidate(done.body)
    if cache is not None and keys:
        await cache.invalidate(*keys)
    if done.status == 201:
        headers["Location"] = f"/users/{done.body['id']}"
    return web.json_response(done.body, status=done.status, headers=headers)


async def create_user(request: web.Request) -> web.Response:
    body = await _body(request)
    name = body.get("name")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= NAME_MAX or not name.isprintable():
        raise bad_request(f"'name' must be a string of 1..{NAME_MAX} characters")
    clean = name.strip()

    async def op(conn: Conn) -> tuple[int, Any]:
        return 201, await repo.create_user(conn, clean)

    return await _write(request, body, op, lambda _: [])


def _edge_keys(uid: int, target: int) -> list[str]:
    return [c.user_key(uid), c.user_key(target), c.followers_key(target), c.following_key(uid)]


async def _edge(request: web.Request, uid: int, target: int, body: Any, add: bool) -> web.Response:
    fn = repo.follow if add else repo.unfollow

    async def op(conn: Conn) -> tuple[int, Any]:
        return 200, await fn(conn, uid, target)

    return await _write(request, body, op, lambda _: _edge_keys(uid, target))


async def follow(request: web.Request) -> web.Response:
    uid = _id(request.match_info["id"])
    body = await _body(request)
    return await _edge(request, uid, _target(body, uid), body, add=True)


async def unfollow_post(request: web.Request) -> web.Response:
    uid = _id(request.match_info["id"])
    body = await _body(request)
    return await _edge(request, uid, _target(body, uid), body, add=False)


async def unfollow_delete(request: web.Request) -> web.Response:
    uid = _id(request.match_info["id"])
    target = _target({"target": _id(request.match_info["target"])}, uid)
    return await _edge(request, uid, target, None, add=False)


# --- ops ----------------------------------------------------------------------------------------------
async def index(request: web.Request) -> web.Response:
    return web.json_response({"service": "demoapp", "docs": "see app/README.md"},
                             headers={"Cache-Control": "public, max-age=60"})


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP. Never depends on the database or Redis."""
    return web.json_response({"status": "ok"}, headers={"Cache-Control": NO_STORE})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 only when the leader answers (and the schema exists). Redis does not count:
    without it the app still serves, only slower."""
    state = request.app[STATE]
    reason = None
    if state.shutting_down:
        reason = "shutting down"
    elif not state.migrated:
        reason = "schema not migrated yet"
    elif not await request.app[DB].ping():
        reason = "database (rw) unreachable"
    cache = request.app.get(CACHE)
    body = {"status": "ready" if reason is None else "not ready",
            "cache": "off" if cache is None else ("up" if cache.breaker.closed else "down")}
    if reason:
        body["reason"] = reason
    return web.json_response(body, status=200 if reason is None else 503,
                             headers={"Cache-Control": NO_STORE})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics: served only by the metrics app (create_metrics_app), on its own port, which the
    app's Service, and so the Ingress and the CDN, never expose."""
    data = generate_latest(request.app[METRICS].registry)
    resp = web.Response(body=data, headers={"Cache-Control": NO_STORE})
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


def add_routes(app: web.Application) -> None:
    uid = r"{id:\d+}"
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_post("/users", create_user)
    app.router.add_get(f"/users/{uid}", get_user)
    app.router.add_post(f"/users/{uid}/follow", follow)
    app.router.add_delete(f"/users/{uid}/follow/{{target:\\d+}}", unfollow_delete)
    app.router.add_post(f"/users/{uid}/unfollow", unfollow_post)
    app.router.add_get(f"/users/{uid}/followers", get_followers)
    app.router.add_get(f"/users/{uid}/following", get_following)
