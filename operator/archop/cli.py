"""The `archop` console script. `archop run` (the default): metrics, health endpoint, Lease, then kopf."""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kopf

from archop import config, metrics
from archop.config import Settings

log = logging.getLogger("archop.cli")
# While kopf starts up its own liveness endpoint is not listening yet; that is not a failure.
KOPF_STARTUP_GRACE_SECONDS = 30.0
# After losing the Lease, kopf gets this long to stop before the process ends the hard way.
LOST_LEASE_EXIT_SECONDS = 3.0
EXIT_LOST_LEASE = 3


class Health:
    """What /healthz answers: healthy as a standby; as the leader, healthy while kopf says so."""

    def __init__(self, kopf_url: str | None) -> None:
        self.kopf_url = kopf_url
        self.leading_since: float | None = None
        self.lost = threading.Event()

    def check(self) -> tuple[int, str]:
        if self.lost.is_set():
            return 503, "lost the Lease; exiting"
        if self.leading_since is None or self.kopf_url is None:
            return 200, "standby" if self.leading_since is None else "leading"
        try:
            with urllib.request.urlopen(self.kopf_url, timeout=2) as response:  # loopback only
                if response.status == 200:
                    return 200, "leading"
                return 503, f"kopf answered {response.status}"
        except urllib.error.HTTPError as exc:
            return 503, f"kopf liveness failed: HTTP {exc.code}"
        except OSError as exc:
            if time.monotonic() - self.leading_since < KOPF_STARTUP_GRACE_SECONDS:
                return 200, "leading; kopf starting"
            return 503, f"kopf liveness unreachable: {exc}"


def serve_health(port: int, health: Health) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            if self.path.split("?")[0] != "/healthz":
                self.send_error(404)
                return
            code, text = health.check()
            body = (text + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: keep quiet
            return

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)  # the kubelet probes the pod IP
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


def run_kopf(settings: Settings, stop_flag: threading.Event | None) -> None:
    import archop.main  # noqa: F401 - registers the handlers with kopf's default registry

    # `kopf run --namespace X --namespace Y` when the watched namespaces are given, else --all-namespaces.
    namespaces = list(settings.watch_namespaces)
    log.info("watching Architectures in %s", ", ".join(namespaces) if namespaces else "all namespaces")
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://127.0.0.1:{settings.kopf_liveness_port}/healthz",
        stop_flag=stop_flag,
    )


def run(settings: Settings, leader_election: bool) -> int:
    metrics.serve(settings.metrics_port)
    health = Health(f"http://127.0.0.1:{settings.kopf_liveness_port}/healthz")
    serve_health(settings.health_port, health)
    if not leader_election:
        log.warning("leader election disabled: run a single replica only")
        health.leading_since = time.monotonic()
        metrics.operator_leader.set(1)
        run_kopf(settings, None)
        return 0

    from archop.election import LeaseElection, load_kube_config

    load_kube_config()
    election = LeaseElection(settings)
    election.acquire()
    health.leading_since = time.monotonic()
    stop_kopf = threading.Event()

    def on_lost() -> None:
        # Another replica may take over once the lease expires: stop acting now, and make sure we do.
        health.lost.set()
        stop_kopf.set()
        timer = threading.Timer(LOST_LEASE_EXIT_SECONDS, os._exit, args=(EXIT_LOST_LEASE,))
        timer.daemon = True
        timer.start()

    election.hold(on_lost)
    try:
        run_kopf(settings, stop_kopf)  # returns on SIGTERM/SIGINT (kopf's handlers) or on_lost
    finally:
        election.stop()
        if not election.lost.is_set():
            # A clean stop: hand over at once instead of letting the standby wait out the lease.
            election.release()
    if election.lost.is_set():
        log.error("exiting after losing the Lease; the pod restarts as a standby")
        return EXIT_LOST_LEASE
    return 0


# The Lease library logs every renewal at INFO on its own "leaderelection" logger (once a second with the
# default retry period); its warnings and errors still come through.
LEASE_LIBRARY_LOGGER = "leaderelection"


def quiet_noisy_loggers() -> None:
    logging.getLogger(LEASE_LIBRARY_LOGGER).setLevel(logging.WARNING)
    # kopf's liveness endpoint is probed every few seconds; its access log says nothing useful.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="archop", description="The archop Kubernetes operator.")
    sub = parser.add_subparsers(dest="command")
    run_parser = sub.add_parser("run", help="run the operator (default)")
    run_parser.add_argument("--no-leader-election", action="store_true",
                            help="skip the Lease (local development; never with more than one replica)")
    args = parser.parse_args(argv)
    kopf.configure(log_format=kopf.LogFormat.JSON, log_refkey="object", log_prefix=False)
    quiet_noisy_loggers()
    settings = Settings.from_env()
    config.install(settings)
    leader_election = settings.leader_election and not getattr(args, "no_leader_election", False)
    return run(settings, leader_election)
