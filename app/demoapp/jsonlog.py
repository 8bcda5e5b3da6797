"""Structured logs: one JSON object per line on stdout."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

_STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # `extra={...}` fields become top-level keys.
        out.update({k: v for k, v in vars(record).items() if k not in _STD})
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class AccessLogger(AbstractAccessLogger):
    """aiohttp access log as JSON; probes and /metrics are not logged (noise)."""

    QUIET = frozenset({"/healthz", "/readyz", "/metrics"})

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        if request.path in self.QUIET and response.status < 400:
            return
        self.logger.info("request", extra={
            "method": request.method, "path": request.path, "status": response.status,
            "duration_ms": round(time * 1000, 2), "cache": response.headers.get("X-App-Cache", ""),
        })
