"""A real redis-server (Debian's /usr/bin/redis-server) on loopback with a password, for tests."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from testsupport.nginx import wait_port
from testsupport.postgres import free_port

REDIS_SERVER = os.environ.get("ARCHOP_REDIS_SERVER", "/usr/bin/redis-server")


@dataclass
class RedisServer:
    workdir: Path
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: secrets.token_hex(12))
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start (or restart on the same port and password); no persistence, loopback only."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "redis.conf"
        # The password goes in a file, not argv, so it never shows in `ps`.
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\nrequirepass {self.password}\nsave \"\"\nappendonly no\n"
            f"dir {self.workdir}\nprotected-mode yes\n")
        log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen([REDIS_SERVER, str(conf)], stdout=log, stderr=log)
        log.close()
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # as a crash would: the app must notice on its own
            self.proc.wait(timeout=10)
        self.proc = None

    def freeze(self) -> None:
        """SIGSTOP: connections hang (timeouts) instead of being refused, like a partition."""
        if self.proc:
            self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc:
            self.proc.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def start_redis(workdir: Path) -> RedisServer:
    srv = RedisServer(workdir=workdir)
    srv.start()
    return srv
