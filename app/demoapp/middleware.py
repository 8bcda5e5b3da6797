"""Middlewares: every error is a JSON body without internals; every request is timed by route."""

from __future__ import annotations

import logging
from time import perf_counter
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from demoapp.db import DbUnavailable
from demoapp.metrics import Metrics
from demoapp.repo import KeyReused, NotFound

log = logging.getLogger("demoapp.http")
METRICS = web.AppKey("metrics", Metrics)
NO_STORE = "no-store"
MAX_BODY = 64 * 1024  # client_max_size: the API takes tiny JSON bodies only

_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 409: "conflict",
          413: "payload_too_large", 415: "unsupported_media_type", 422: "unprocessable", 503: "unavailable"}


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": _CODES.get(status, "error"), "message": message}
    return web.json_response(body, status=status, headers={"Cache-Control": NO_STORE, **(headers or {})})


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except NotFound as exc:
        return json_error(404, str(exc))
    except KeyReused:
        return json_error(422, "Idempotency-Key was already used with a different request")
    except DbUnavailable:
        # The database is failing over or down: a retry in a moment will most likely succeed.
        return json_error(503, "database unavailable, retry shortly", {"Retry-After": "1"})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like are not errors
        message = exc.reason
        if exc.status == 413:
            message = f"request body larger than {MAX_BODY} bytes"
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return json_error(exc.status, message, allow)
    except Exception:
        # Full details go to the log only; the client learns nothing about the internals.
        log.exception("unhandled error", extra={"method": request.method, "path": request.path})
        return json_error(500, "internal error")


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        resource = request.match_info.route.resource
        # The route template (bounded label values), never the raw path.
        route = resource.canonical if resource is not None else "unmatched"
        request.app[METRICS].request_seconds.labels(route, request.method, str(status)).observe(
            perf_counter() - start)
