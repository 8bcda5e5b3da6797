"""The CDN sidecar config in front of the real app: the app's Cache-Control drives what nginx keeps."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from conftest import PgPair, wait_replayed
from test_api import new_user

from testsupport.nginx import start_cdn

pytestmark = pytest.mark.integration


async def test_cdn_in_front_of_the_app(client: TestClient, pg: PgPair, tmp_path: Path) -> None:
    u = await new_user(client)
    await asyncio.to_thread(wait_replayed, pg)  # plain reads below come from the follower
    ngx, base = await asyncio.to_thread(start_cdn, client.server.port or 0, tmp_path)
    try:
        async with aiohttp.ClientSession() as s:

            async def status(method: str, path: str, **kw) -> tuple[int, str]:
                async with s.request(method, base + path, **kw) as r:
                    await r.read()
                    return r.status, r.headers.get("X-Cache-Status", "")

            user = f"/users/{u['id']}?consistency=strong"  # strong: the follower may lag behind
            assert await status("GET", user) == (200, "BYPASS")
            path = f"/users/{u['id']}/following"
            assert (await status("GET", path))[1] == "MISS"
            assert await status("GET", path) == (200, "HIT")  # public, max-age=5
            assert (await status("GET", path, headers={"X-Consistency": "strong"}))[1] == "BYPASS"
            assert (await status("GET", "/healthz"))[1] == "MISS"
            assert (await status("GET", "/healthz"))[1] == "MISS"  # no-store: never kept
            assert (await status("POST", "/users", json={"name": "via-cdn"}))[0] == 201
            assert (await status("GET", "/users/987654321"))[0] == 404
            assert (await status("GET", "/users/987654321"))[1] == "MISS"  # errors are no-store
            # The app's JSON 413, not nginx's HTML one.
            async with s.post(base + "/users", data=b"x" * (65 * 1024)) as r:
                assert r.status == 413 and (await r.json())["error"] == "payload_too_large"
    finally:
        await asyncio.to_thread(ngx.stop)
