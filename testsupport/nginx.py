"""A real nginx (Debian's /usr/sbin/nginx) with a rendered config, as a child process of the tests."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from testsupport.postgres import free_port

NGINX = os.environ.get("ARCHOP_NGINX", "/usr/sbin/nginx")


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def check_config(conf: Path) -> subprocess.CompletedProcess:
    """`nginx -t -c conf`; the caller asserts on returncode/stderr."""
    return subprocess.run([NGINX, "-t", "-q", "-e", "stderr", "-c", str(conf)],
                          capture_output=True, text=True, timeout=30)


@dataclass
class Nginx:
    conf: Path
    port: int
    proc: subprocess.Popen | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.conf.with_suffix(".log")

    def start(self) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.proc = subprocess.Popen([NGINX, "-c", str(self.conf), "-e", "stderr", "-g", "daemon off;"],
                                     stdout=out, stderr=out)
        out.close()
        try:
            wait_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"nginx did not start: {self.log.read_text()[-2000:]}") from None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: fast shutdown of master and workers
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def start_nginx(conf_text: str, port: int, workdir: Path) -> Nginx:
    """Write conf_text to workdir/nginx.conf and run it in the foreground until stop()."""
    conf = workdir / "nginx.conf"
    conf.write_text(conf_text)
    ngx = Nginx(conf=conf, port=port)
    ngx.start()
    return ngx


def start_cdn(upstream_port: int, workdir: Path) -> tuple[Nginx, str]:
    """The CDN sidecar's own rendered config in front of a local upstream: (nginx, its base URL)."""
    from archop.build.nginx_conf import render_nginx_conf

    port = free_port()
    for d in ("cache", "tmp"):
        (workdir / d).mkdir(exist_ok=True)
    conf = render_nginx_conf(port, upstream_port, "10m", 60, cache_dir=str(workdir / "cache"),
                             temp_dir=str(workdir / "tmp"), user="root")
    return start_nginx(conf, port, workdir), f"http://127.0.0.1:{port}"
