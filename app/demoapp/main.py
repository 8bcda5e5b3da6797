"""Console entry point `demoapp`: settings from the environment, JSON logs, serve until SIGTERM."""

from __future__ import annotations

import logging
import os

from aiohttp import web

from demoapp import jsonlog
from demoapp.app import create_app, describe, serve_metrics
from demoapp.config import Settings


def main() -> None:
    jsonlog.setup(os.environ.get("DEMOAPP_LOG_LEVEL", "INFO"))
    settings = Settings.from_env()
    log = logging.getLogger("demoapp")
    log.info("starting", extra={"port": settings.port, **describe(settings)})
    app = create_app(settings)
    app.cleanup_ctx.append(serve_metrics)  # /metrics on its own port, never on the API port
    web.run_app(
        app, host=settings.host, port=settings.port, print=None,
        access_log_class=jsonlog.AccessLogger, access_log=logging.getLogger("demoapp.access"),
        shutdown_timeout=10.0,  # in-flight requests finish; the Pod's grace period is longer
    )


if __name__ == "__main__":
    main()
