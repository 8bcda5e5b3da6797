"""The HTTP API against real Postgres (leader + follower) and Redis: behaviour, errors, idempotency."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer
from conftest import APP_PASSWORD, PgPair, get_metric, settings_for, wait_replayed
from demoapp import repo
from demoapp.app import create_app, create_metrics_app, serve_metrics
from demoapp.middleware import METRICS

from testsupport.postgres import free_port

pytestmark = pytest.mark.integration
STRONG = {"X-Consistency": "strong"}


async def new_user(client: TestClient, name: str = "ada") -> dict:
    async with client.post("/users", json={"name": name}) as r:
        assert r.status == 201, await r.text()
        assert r.headers["Cache-Control"] == "no-store"
        body = await r.json()
        assert r.headers["Location"] == f"/users/{body['id']}"
        return body


async def test_user_lifecycle_and_denormalised_followers(client: TestClient, pg: PgPair) -> None:
    a, b, c = [await new_user(client, n) for n in ("ann", "bob", "cy")]
    assert a["name"] == "ann" and a["follower_count"] == 0 and a["following_count"] == 0

    # Writes answer with the fresh state of both users.
    async with client.post(f"/users/{a['id']}/follow", json={"target": b["id"]}) as r:
        assert r.status == 200
        res = await r.json()
    assert res["changed"] and res["following"]
    assert res["user"]["following_count"] == 1 and res["target"]["follower_count"] == 1
    async with client.post(f"/users/{c['id']}/follow", json={"target": b["id"]}) as r:
        assert r.status == 200
    # Following twice changes nothing.
    async with client.post(f"/users/{a['id']}/follow", json={"target": b["id"]}) as r:
        assert (await r.json())["changed"] is False

    async with client.get(f"/users/{b['id']}/followers", headers=STRONG) as r:
        assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
        assert await r.json() == {"id": b["id"], "followers": [a["id"], c["id"]], "count": 2,
                                  "truncated": False}
    async with client.get(f"/users/{a['id']}/following?consistency=strong") as r:
        assert await r.json() == {"id": a["id"], "following": [b["id"]], "count": 1, "truncated": False}

    async with client.delete(f"/users/{a['id']}/follow/{b['id']}") as r:
        assert r.status == 200
        res = await r.json()
    assert res["changed"] and not res["following"] and res["target"]["follower_count"] == 1
    async with client.post(f"/users/{c['id']}/unfollow", json={"target": b["id"]}) as r:
        assert (await r.json())["target"]["follower_count"] == 0

    # The array and counts agree with the normalised table.
    with psycopg.connect(pg.leader.dsn("app")) as conn:
        rows = conn.execute(
            "SELECT u.id, u.followers, u.follower_count, "
            " (SELECT array_agg(follower_id ORDER BY created_at) FROM follows f WHERE f.followee_id = u.id)"
            " FROM users u WHERE u.id = ANY(%s)", ([a["id"], b["id"], c["id"]],)).fetchall()
    for _, followers, count, truth in rows:
        assert followers == (truth or []) and count == len(followers)

    # Eventual reads come from the follower once it has replayed.
    await asyncio.to_thread(wait_replayed, pg)
    async with client.get(f"/users/{b['id']}") as r:
        assert r.status == 200 and r.headers["Cache-Control"] == "public, max-age=10"
        assert r.headers["X-DB-Pool"] == "ro"
        assert (await r.json())["follower_count"] == 0


async def test_idempotency_key_applies_once_and_replays(client: TestClient, pg: PgPair) -> None:
    key = str(uuid.uuid4())
    name = f"idem-{key[:8]}"
    headers = {"Idempotency-Key": key}
    async with client.post("/users", json={"name": name}, headers=headers) as r:
        first_status, first = r.status, await r.json()
        assert "Idempotent-Replayed" not in r.headers
    async with client.post("/users", json={"name": name}, headers=headers) as r:
        assert (r.status, await r.json()) == (first_status, first)
        assert r.headers["Idempotent-Replayed"] == "true"
    # Concurrent duplicates serialise on the key: still one user.
    results = await asyncio.gather(*[client.post("/users", json={"name": name}, headers=headers)
                                     for _ in range(5)])
    for r in results:
        assert r.status == 201 and (await r.json()) == first
        r.release()
    with psycopg.connect(pg.leader.dsn("app")) as conn:
        assert conn.execute("SELECT count(*) FROM users WHERE name = %s", (name,)).fetchone() == (1,)
    # The same key with another request is refused, not silently replayed.
    async with client.post("/users", json={"name": name + "x"}, headers=headers) as r:
        assert r.status == 422 and (await r.json())["error"] == "unprocessable"
    assert await get_metric(client, "demoapp_idempotent_replays_total") >= 6


async def test_error_responses_are_json_without_internals(client: TestClient) -> None:
    u = await new_user(client)
    cases = [
        ("GET", "/users/999999999", None, None, 404),
        ("GET", "/users/99999999999999999999", None, None, 404),  # beyond bigint
        ("GET", "/users/abc", None, None, 404),
        ("GET", "/nowhere", None, None, 404),
        ("POST", f"/users/{u['id']}/follow", None, {"target": 999999999}, 404),
        ("POST", "/users", b"{not json", None, 400),
        ("POST", "/users", None, ["a", "list"], 400),
        ("POST", "/users", None, {"name": ""}, 400),
        ("POST", "/users", None, {"name": "x" * 101}, 400),
        ("POST", "/users", None, {"name": "nul\x00byte"}, 400),
        ("POST", "/users", None, {}, 400),
        ("POST", f"/users/{u['id']}/follow", None, {"target": "7"}, 400),
        ("POST", f"/users/{u['id']}/follow", None, {"target": True}, 400),
        ("POST", f"/users/{u['id']}/follow", None, {"target": u["id"]}, 400),
        ("GET", f"/users/{u['id']}?consistency=maybe", None, None, 400),
        ("POST", "/users", b"x" * (65 * 1024), None, 413),
        ("PUT", "/users", None, {"name": "x"}, 405),
    ]
    for method, path, data, js, status in cases:
        async with client.request(method, path, data=data, json=js) as r:
            text = await r.text()
            assert r.status == status, (method, path, text)
            assert r.content_type == "application/json", (path, text)
            body = await r.json()
            assert set(body) == {"error", "message"}, body
            assert "Traceback" not in text and "psycopg" not in text
            assert r.headers["Cache-Control"] == "no-store"
    async with client.post("/users", json={"name": "k"}, headers={"Idempotency-Key": "x" * 201}) as r:
        assert r.status == 400


async def test_ops_endpoints(client: TestClient) -> None:
    async with client.get("/healthz") as r:
        assert r.status == 200 and await r.json() == {"status": "ok"}
        assert r.headers["Server"] == "demoapp"
    async with client.get("/readyz") as r:
        assert r.status == 200 and (await r.json())["cache"] == "up"
    await new_user(client)
    # The API port does not serve /metrics: the Ingress and the CDN reach only that port.
    async with client.get("/metrics") as r:
        assert r.status == 404 and "demoapp_" not in await r.text()
    metrics_client = TestClient(TestServer(create_metrics_app(client.server.app[METRICS]), host="127.0.0.1"))
    await metrics_client.start_server()
    try:
        async with metrics_client.get("/metrics") as r:
            text = await r.text()
            assert r.status == 200 and r.content_type == "text/plain"
            assert r.headers["Cache-Control"] == "no-store" and r.headers["Server"] == "demoapp"
    finally:
        await metrics_client.close()
    assert 'demoapp_request_duration_seconds_count{method="POST",route="/users",status="201"}' in text
    for sample in ('demoapp_cache_hits_total{kind="user"}', 'demoapp_cache_misses_total{kind="followers"}',
                   'demoapp_cache_errors_total{op="get"}', 'demoapp_db_retries_total{pool="rw"}',
                   "demoapp_db_ro_fallback_total", "demoapp_idempotent_replays_total"):
        assert sample in text, sample
    assert APP_PASSWORD not in text


async def test_metrics_are_served_on_their_own_port(pg: PgPair) -> None:
    """As in a pod: main() adds serve_metrics, which listens on DEMOAPP_METRICS_PORT next to the API."""
    port = free_port()
    app = create_app(settings_for(pg.leader.port, None, None, metrics_port=port))
    app.cleanup_ctx.append(serve_metrics)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        async with ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as r:
            assert r.status == 200 and "demoapp_request_duration_seconds" in await r.text()
        async with client.get("/metrics") as r:
            assert r.status == 404
    finally:
        await client.close()


async def test_an_id_of_thousands_of_digits_is_a_plain_404(client: TestClient,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """int() refuses more than 4,300 digits: such an id must be a 404, not a 500 with a traceback."""
    u = await new_user(client)
    huge = "9" * 4301
    cases = [("GET", f"/users/{huge}", None), ("GET", f"/users/{huge}/followers", None),
             ("GET", f"/users/{'0' * 5000}{u['id']}", None),
             ("POST", f"/users/{huge}/follow", {"target": u["id"]}),
             ("DELETE", f"/users/{u['id']}/follow/{huge}", None)]
    for method, path, body in cases:
        async with client.request(method, path, json=body) as r:
            text = await r.text()
            if path.endswith(str(u["id"])):
                assert r.status == 200, text  # leading zeros are still the same id
                continue
            assert r.status == 404, (path[:40], text)
            assert set(await r.json()) == {"error", "message"} and huge not in text
    assert "Traceback" not in caplog.text and "unhandled error" not in caplog.text


async def test_follower_lists_are_bounded(client: TestClient, pg: PgPair,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The stored array never holds more than LIST_LIMIT ids, responses say when they are cut, and an
    unfollow refills the array from `follows` in follow order."""
    monkeypatch.setattr(repo, "LIST_LIMIT", 3)
    star = await new_user(client, "star")
    fans = [await new_user(client, f"fan{i}") for i in range(5)]
    for fan in fans:
        async with client.post(f"/users/{fan['id']}/follow", json={"target": star["id"]}) as r:
            assert r.status == 200
    async with client.get(f"/users/{star['id']}/followers", headers=STRONG) as r:
        body = await r.json()
    assert body == {"id": star["id"], "followers": [f["id"] for f in fans[:3]], "count": 5, "truncated": True}
    async with client.post(f"/users/{fans[1]['id']}/unfollow", json={"target": star["id"]}) as r:
        assert r.status == 200
    with psycopg.connect(pg.leader.dsn("app")) as conn:
        row = conn.execute("SELECT followers, follower_count FROM users WHERE id = %s",
                           (star["id"],)).fetchone()
    assert row == ([fans[0]["id"], fans[2]["id"], fans[3]["id"]], 4)
    for fan in fans[2:]:
        async with client.post(f"/users/{fan['id']}/unfollow", json={"target": star["id"]}) as r:
            assert r.status == 200
    async with client.get(f"/users/{star['id']}/followers", headers=STRONG) as r:
        assert await r.json() == {"id": star["id"], "followers": [fans[0]["id"]], "count": 1,
                                  "truncated": False}
    async with client.get(f"/users/{fans[0]['id']}/following", headers=STRONG) as r:
        assert (await r.json())["truncated"] is False


async def test_concurrent_migrations_are_safe(pg: PgPair) -> None:
    """Many pods start at once: every one runs the migration, all succeed, the schema is there once."""
    from demoapp.migrate import migrate

    db = f"mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg.leader.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {db} OWNER app")
    conns = [await psycopg.AsyncConnection.connect(pg.leader.dsn(db, user="app")) for _ in range(6)]
    try:
        await asyncio.gather(*[migrate(c) for c in conns])
        await asyncio.gather(*[migrate(c) for c in conns])  # and again: nothing to do, no error
        cur = await conns[0].execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
        assert await cur.fetchone() == (3,)
    finally:
        for c in conns:
            await c.close()
