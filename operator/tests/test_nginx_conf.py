"""The CDN sidecar's nginx.conf: rendered, checked by `nginx -t`, and run for real in front of an upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from archop.build.nginx_conf import HEALTH_PATH, nginx_command, render_nginx_conf

from testsupport.nginx import check_config, start_nginx
from testsupport.postgres import free_port


def test_renders_the_contract() -> None:
    conf = render_nginx_conf(8081, 8080, "100m", 60)
    for line in (
        "pid /tmp/nginx.pid;",
        "error_log stderr warn;",
        "access_log /dev/stdout cdn;",
        "listen 8081;",
        "server 127.0.0.1:8080;",
        "proxy_cache_path /var/cache/nginx/cdn levels=1:2 keys_zone=cdn:10m max_size=100m",
        "proxy_cache_valid 200 60s;",
        "add_header X-Cache-Status $upstream_cache_status always;",
        "proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;",
        "proxy_cache_lock on;",
        f"location = {HEALTH_PATH}",
        "proxy_cache_methods GET HEAD;",
        'map "$http_x_min_lsn$arg_min_lsn$cookie_commit_lsn" $cdn_token {',
        "proxy_cache_bypass $cdn_strong_header $cdn_strong_arg $cdn_not_get $cdn_token;",
    ):
        assert line in conf, line
    for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert f"{temp}_temp_path /tmp/" in conf
    no_cache = conf.split("proxy_no_cache ", 1)[1].split(";", 1)[0].split()
    assert no_cache == ["$cdn_strong_header", "$cdn_strong_arg", "$cdn_not_get", "$cdn_token",
                        "$upstream_http_set_cookie"]
    assert "proxy_ignore_headers" not in conf  # nginx's own refusal to cache Set-Cookie stays on too
    assert "user " not in conf  # non-root in the pod: a user directive would only warn
    assert "daemon" not in conf  # given by nginx_command, so images whose CMD adds it still work
    assert nginx_command("/etc/nginx/cdn/nginx.conf")[-2:] == ["-g", "daemon off;"]


@pytest.mark.parametrize("kwargs", [
    {"cache_size": "100Mi"}, {"cache_size": "1g;"}, {"ttl_seconds": 0}, {"listen_port": 0},
    {"upstream_port": 70000},
])
def test_rejects_bad_values(kwargs: dict) -> None:
    args = {"listen_port": 8081, "upstream_port": 8080, "cache_size": "100m", "ttl_seconds": 60, **kwargs}
    with pytest.raises(ValueError):
        render_nginx_conf(**args)


def _local_conf(tmp_path: Path, listen: int, upstream: int, ttl: int = 60) -> str:
    (tmp_path / "cache").mkdir(exist_ok=True)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    # `user root`: the tests run as root and the workers must write into the root-owned tmp dir.
    return render_nginx_conf(listen, upstream, "10m", ttl, cache_dir=str(tmp_path / "cache"),
                             temp_dir=str(tmp_path / "tmp"), user="root")


@pytest.mark.integration
def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(_local_conf(tmp_path, free_port(), free_port()))
    result = check_config(conf)
    assert result.returncode == 0, result.stderr
    broken = tmp_path / "broken.conf"
    broken.write_text(conf.read_text().replace("proxy_cache_lock on;", "proxy_cache_lock maybe;"))
    assert check_config(broken).returncode != 0  # the check can fail


class Upstream:
    """A tiny app: /item has max-age=1, /plain has no Cache-Control, /cookie sets one; bodies count upstream
    hits."""

    def __init__(self) -> None:
        self.hits = 0

    async def item(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.json_response({"hits": self.hits}, headers={"Cache-Control": "public, max-age=1"})

    async def plain(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.json_response({"hits": self.hits})

    async def private(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.json_response({"hits": self.hits}, headers={"Cache-Control": "no-store"})

    async def cookie(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.json_response({"hits": self.hits}, headers={
            "Cache-Control": "public, max-age=60", "Set-Cookie": "commit_lsn=0/16B3740; Max-Age=60; Path=/"})


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, web.AppRunner, int]]:
    up = Upstream()
    app = web.Application()
    app.router.add_route("*", "/item", up.item)
    app.router.add_get("/plain", up.plain)
    app.router.add_get("/private", up.private)
    app.router.add_get("/cookie", up.cookie)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield up, runner, port
    await runner.cleanup()


@pytest.mark.integration
async def test_cdn_caches_bypasses_and_serves_stale(tmp_path: Path, upstream) -> None:
    up, runner, up_port = upstream
    port = free_port()
    ngx = await asyncio.to_thread(start_nginx, _local_conf(tmp_path, port, up_port), port, tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:

            async def get(path: str, **kw) -> tuple[str, dict]:
                async with s.get(base + path, **kw) as r:
                    assert r.status == 200, await r.text()
                    return r.headers.get("X-Cache-Status", ""), await r.json()

            assert await get("/item") == ("MISS", {"hits": 1})
            assert await get("/item") == ("HIT", {"hits": 1})
            # Strong reads and non-GETs go through and are not stored.
            assert await get("/item", headers={"X-Consistency": "strong"}) == ("BYPASS", {"hits": 2})
            assert await get("/item?consistency=strong") == ("BYPASS", {"hits": 3})
            async with s.post(base + "/item") as r:
                assert (await r.json()) == {"hits": 4} and r.headers.get("X-Cache-Status") != "HIT"
            assert await get("/item") == ("HIT", {"hits": 1})
            # A consistency token, in any of its three places: never answered from the cache (the page there
            # may predate the client's write), and the answer is not stored either.
            token = "0/16B3740"
            assert await get("/item", headers={"X-Min-LSN": token}) == ("BYPASS", {"hits": 5})
            assert await get(f"/item?min_lsn={token}") == ("BYPASS", {"hits": 6})
            assert await get("/item", headers={"Cookie": f"commit_lsn={token}"}) == ("BYPASS", {"hits": 7})
            quoted = {"Cookie": f'a=1; commit_lsn="{token}"'}  # as aiohttp's cookie jar sends it
            assert await get("/item", headers=quoted) == ("BYPASS", {"hits": 8})
            assert await get("/item", headers={"Cookie": "a=1"}) == ("HIT", {"hits": 1})  # other cookies
            assert await get("/item") == ("HIT", {"hits": 1})
            # No Cache-Control from the app: ttl_seconds applies. no-store: never cached.
            assert await get("/plain") == ("MISS", {"hits": 9})
            assert await get("/plain") == ("HIT", {"hits": 9})
            assert (await get("/private"))[1] == {"hits": 10}
            assert (await get("/private"))[1] == {"hits": 11}
            # A response that sets a cookie belongs to one client: never stored, whatever its Cache-Control.
            assert await get("/cookie") == ("MISS", {"hits": 12})
            assert await get("/cookie") == ("MISS", {"hits": 13})

            await asyncio.sleep(2.1)  # /item's max-age=1 has passed (nginx keeps whole seconds)
            await runner.cleanup()  # the app is gone
            assert await get("/item") == ("STALE", {"hits": 1})
            async with s.get(base + "/plain?never-cached") as r:  # nothing stale to serve: JSON 503
                assert r.status == 503 and r.headers["Retry-After"] == "1"
                assert await r.json() == {"error": "unavailable", "message": "app unavailable, retry shortly"}
            async with s.get(base + HEALTH_PATH) as r:
                assert r.status == 200 and await r.json() == {"status": "ok"}
    finally:
        await asyncio.to_thread(ngx.stop)
    log = ngx.logs()
    assert '"cache":"HIT"' in log and '"cache":"STALE"' in log  # JSON access log with the cache status
