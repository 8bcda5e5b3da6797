"""The aiohttp application: wiring, startup (non-blocking migration) and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from demoapp import repo, routes
from demoapp.cache import Cache
from demoapp.config import Settings
from demoapp.db import Db, DbUnavailable
from demoapp.metrics import Metrics
from demoapp.middleware import MAX_BODY, METRICS, errors_middleware, metrics_middleware
from demoapp.migrate import migrate
from demoapp.routes import CACHE, DB, SETTINGS, STATE, State, add_routes

log = logging.getLogger("demoapp")
KEY_EXPIRY_EVERY = 600.0  # s between sweeps of idempotency keys older than a day


async def _migrate_until_done(app: web.Application) -> None:
    """Migrate against rw, retrying forever: the pod starts (and stays unready) while the DB comes up."""
    db, state = app[DB], app[STATE]
    while True:
        try:
            await db.write(migrate)
            state.migrated = True
            log.info("schema ready")
            return
        except DbUnavailable as exc:
            log.warning("migration waiting for the database", extra={"error": str(exc)})
            await asyncio.sleep(1.0)


async def _expire_keys(app: web.Application) -> None:
    while True:
        await asyncio.sleep(KEY_EXPIRY_EVERY)
        if not app[STATE].migrated:
            continue
        try:
            removed = await app[DB].write(repo.expire_keys)
            log.info("expired idempotency keys", extra={"removed": removed})
        except DbUnavailable:
            pass  # next sweep


async def _lifespan(app: web.Application) -> AsyncIterator[None]:
    db = app[DB]
    await db.open()
    tasks = [asyncio.create_task(_migrate_until_done(app)), asyncio.create_task(_expire_keys(app))]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    cache = app.get(CACHE)
    if cache is not None:
        await cache.close()
    await db.close()


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "demoapp"  # not the framework and its version


async def _on_shutdown(app: web.Application) -> None:
    app[STATE].shutting_down = True  # /readyz turns 503 while in-flight requests finish


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[metrics_middleware, errors_middleware], client_max_size=MAX_BODY)
    metrics = Metrics()
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[STATE] = State()
    app[DB] = Db(settings, metrics)
    if settings.cache_active:
        app[CACHE] = Cache(settings, metrics)
    add_routes(app)
    app.cleanup_ctx.append(_lifespan)
    app.on_shutdown.append(_on_shutdown)
    app.on_response_prepare.append(_server_header)
    return app


def create_metrics_app(metrics: Metrics) -> web.Application:
    """GET /metrics alone, for its own port (DEMOAPP_METRICS_PORT): the API port does not serve it, so
    nothing that reaches the API (the Ingress, the CDN sidecar) can read the metrics."""
    app = web.Application()
    app[METRICS] = metrics
    app.router.add_get("/metrics", routes.metrics)
    app.on_response_prepare.append(_server_header)
    return app


async def serve_metrics(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx of the API app: the metrics app on settings.metrics_port while the API app runs."""
    settings = app[SETTINGS]
    runner = web.AppRunner(create_metrics_app(app[METRICS]), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.metrics_port).start()
    log.info("metrics served", extra={"port": settings.metrics_port})
    yield
    await runner.cleanup()


def describe(settings: Settings) -> dict[str, Any]:
    """What the app is wired to, for the startup log line (no passwords)."""
    return {
        "db_rw": f"{settings.db_rw_host}:{settings.db_rw_port}",
        "db_ro": f"{settings.db_ro_host}:{settings.db_ro_port}" if settings.db_ro_host else None,
        "db_name": settings.db_name, "db_user": settings.db_user,
        "cache": settings.redis_url if settings.cache_active else "off",
        "cache_ttl_seconds": settings.cache_ttl_seconds, "metrics_port": settings.metrics_port,
    }
