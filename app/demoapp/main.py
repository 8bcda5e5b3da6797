"""Console entry point `demoapp`: settings from the environment, JSON logs, serve until SIGTERM."""

from __future__ import annotations

import logging
import os

from aiohttp import web

from demoapp import jsonlog
from demoapp.app import create_app, describe
from demoapp.config import Settings


def main() -> None:
    jsonlog.setup(os.environ.get("DEMOAPP_LOG_LEVEL", "INFO"))
    settings = Settings.from_env()
    log = logging.getLogger("demoapp")
    log.info("starting", extra={"port": settings.port, **describe(settings)})
    web.run_app(
        create_app(settings), host=settings.host, port=settings.port, print=None,
        access_log_class=jsonlog.AccessLogger, access_log=logging.getLogger("demoapp.access"),
        shutdown_timeout=10.0,  # in-flight requests finish; the Pod's grace period is longer
    )


if __name__ == "__main__":
    main()
