"""The Redis pod's shell on a real redis-server: requirepass from the mounted file, the probe's AUTH + PING.

The texts are exactly what build/cache.py puts in the Deployment (start_script, ping_script), pointed at a
loopback port and a scratch password file that is readable as in the pod: owner root, group of the server's
user, 0440 (the kubelet's Secret volume with fsGroup).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from archop.build import cache
from archop.spec import ArchitectureSpec

from testsupport.nginx import wait_port
from testsupport.postgres import free_port

pytestmark = pytest.mark.integration

RUN_AS = "postgres"  # any unprivileged user: the pod's 999 is the redis user
NASTY = "a'b\\'c \"d\" $HOME %s `x` ;|&"  # every character the quoting must carry through


def _as_user() -> dict[str, Any]:
    return {"user": RUN_AS, "group": RUN_AS, "extra_groups": []} if os.geteuid() == 0 else {}


def _password_file(tmp: Path, password: str, name: str = "password") -> Path:
    f = tmp / name
    f.write_text(password)
    if os.geteuid() == 0:
        os.chown(f, 0, pwd.getpwnam(RUN_AS).pw_gid)
    os.chmod(f, 0o440)
    return f


def _workdir(tmp: Path) -> Path:
    d = tmp / "data"
    d.mkdir()
    if os.geteuid() == 0:
        shutil.chown(d, RUN_AS, RUN_AS)
    return d


def _args(port: int, workdir: Path) -> list[str]:
    """The Deployment's args, on a loopback port and a scratch directory."""
    (dep, _) = cache.build_cache("shop", "demo", ArchitectureSpec(), "redis:7")
    args = list(dep["spec"]["template"]["spec"]["containers"][0]["args"])
    args[args.index("--port") + 1] = str(port)
    return [*args, "--bind", "127.0.0.1", "--dir", str(workdir)]


def _start(password_file: Path, port: int, workdir: Path) -> subprocess.Popen:
    cmd = ["sh", "-c", cache.start_script(str(password_file)), "redis-server", *_args(port, workdir)]
    return subprocess.Popen(cmd, env={"PATH": "/usr/bin:/bin"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, **_as_user())


def _probe(password_file: Path, port: int) -> int:
    return subprocess.run(["sh", "-c", cache.ping_script(str(password_file), port)],
                          env={"PATH": "/usr/bin:/bin"}, capture_output=True, timeout=10,
                          **_as_user()).returncode


@pytest.fixture
def scratch() -> Iterator[Path]:
    # Not under pytest's tmp_path: its parents are 0700 and the unprivileged user must reach the files.
    tmp = Path(tempfile.mkdtemp(prefix="archop-it-"))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_redis_takes_its_password_from_the_file_and_the_probe_authenticates(scratch: Path) -> None:
    secret = _password_file(scratch, NASTY)
    port = free_port()
    proc = _start(secret, port, _workdir(scratch))
    try:
        wait_port(port)
        # exec: the shell became redis-server (pid 1 in the pod, so it gets the kubelet's SIGTERM).
        assert Path(f"/proc/{proc.pid}/comm").read_text().strip() == "redis-server"
        # The password is in neither its argv nor its environment.
        for what in ("cmdline", "environ"):
            assert NASTY.encode() not in Path(f"/proc/{proc.pid}/{what}").read_bytes(), what
        assert _probe(secret, port) == 0
        # Without the password, or with a wrong one, Redis refuses and the probe fails.
        out = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True,
                             timeout=10)
        assert "NOAUTH" in out.stdout + out.stderr
        assert _probe(_password_file(scratch, NASTY + "x", "wrong"), port) != 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0  # a clean shutdown
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.parametrize("content", [None, ""])
def test_redis_never_starts_without_a_password(scratch: Path, content: str | None) -> None:
    secret = scratch / "password" if content is None else _password_file(scratch, content)
    proc = _start(secret, free_port(), _workdir(scratch))
    try:
        assert proc.wait(timeout=10) == 1
        assert proc.stderr is not None and b"archop: no password in" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert _probe(secret, free_port()) != 0
