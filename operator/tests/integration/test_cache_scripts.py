"""The Redis pod on a real redis-server: requirepass from the mounted file, TLS only, the probe's AUTH + PING
over TLS, and clients that verify the server.

The texts are exactly what build/cache.py puts in the Deployment (start_script, its args, ping_script),
pointed at a loopback port and scratch files that are readable as in the pod: owner root, group of the
server's user, 0440 (the kubelet's Secret volumes with fsGroup). The certificate and key are those the
reconcile's tls.plan puts in Secret N-cache-tls.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from archop import names
from archop.build import app, cache, tls
from archop.build.secrets import build_secrets
from archop.spec import ArchitectureSpec
from demoapp.cache import tls_options
from demoapp.config import Settings
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError

from testsupport.nginx import wait_port
from testsupport.postgres import free_port

pytestmark = pytest.mark.integration

RUN_AS = "postgres"  # any unprivileged user: the pod's 999 is the redis user
NASTY = "a'b\\'c \"d\" $HOME %s `x` ;|&"  # every character the quoting must carry through
ARCH, NS = "shop", "demo"
SERVICE = names.service_host(names.cache(ARCH), NS)  # shop-cache.demo.svc: what the app dials


def _as_user() -> dict[str, Any]:
    return {"user": RUN_AS, "group": RUN_AS, "extra_groups": []} if os.geteuid() == 0 else {}


def _pod_file(path: Path, text: str) -> Path:
    """A file of a Secret volume as the kubelet makes it with fsGroup: root, group of the server's user,
    0440."""
    path.write_text(text)
    if os.geteuid() == 0:
        os.chown(path, 0, pwd.getpwnam(RUN_AS).pw_gid)
    os.chmod(path, 0o440)
    return path


def _password_file(tmp: Path, password: str, name: str = "password") -> Path:
    return _pod_file(tmp / name, password)


def _workdir(tmp: Path) -> Path:
    d = tmp / "data"
    d.mkdir()
    if os.geteuid() == 0:
        shutil.chown(d, RUN_AS, RUN_AS)
    return d


@dataclasses.dataclass(frozen=True)
class Certs:
    tls_dir: Path  # tls.crt, tls.key, ca.crt of Secret shop-cache-tls, as the pod's volume has them
    ca_file: Path
    other_ca_file: Path  # a CA that did not sign the server's certificate


@pytest.fixture
def scratch() -> Iterator[Path]:
    # Not under pytest's tmp_path: its parents are 0700 and the unprivileged user must reach the files.
    tmp = Path(tempfile.mkdtemp(prefix="archop-it-"))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def certs(scratch: Path) -> Certs:
    """What the reconcile creates for a new Architecture: the CA and Secret shop-cache-tls (tls.plan)."""
    plan = tls.plan(ARCH, NS, {})
    (secret,) = [s for s in plan.create if s["metadata"]["name"] == names.cache_tls_secret(ARCH)]
    d = scratch / "tls"
    d.mkdir()
    for key, value in secret["data"].items():
        _pod_file(d / key, base64.b64decode(value).decode())
    other = scratch / "other-ca.crt"
    other.write_text(tls.Issuer().new_ca("another CA").cert_pem)
    return Certs(d, d / tls.CA_CERT, other)


def _args(port: int, workdir: Path, tls_dir: Path) -> list[str]:
    """The Deployment's args, on a loopback port, a scratch directory and the scratch certificate files."""
    (dep, _) = cache.build_cache(ARCH, NS, ArchitectureSpec(), "redis:7")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    args = [a.replace(cache.TLS_DIR, str(tls_dir)) for a in container["args"]]
    assert args[args.index("--port") + 1] == "0"  # no plain TCP port: only the TLS one is moved
    args[args.index("--tls-port") + 1] = str(port)
    return [*args, "--bind", "127.0.0.1", "--dir", str(workdir)]


def _start(password_file: Path, port: int, workdir: Path, tls_dir: Path) -> subprocess.Popen:
    cmd = ["sh", "-c", cache.start_script(str(password_file)), "redis-server", *_args(port, workdir, tls_dir)]
    return subprocess.Popen(cmd, env={"PATH": "/usr/bin:/bin"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, **_as_user())


def _probe(password_file: Path, port: int, ca_file: Path) -> int:
    return subprocess.run(["sh", "-c", cache.ping_script(str(password_file), port, str(ca_file))],
                          env={"PATH": "/usr/bin:/bin"}, capture_output=True, timeout=10,
                          **_as_user()).returncode


@pytest.fixture
def server(scratch: Path, certs: Certs) -> Iterator[tuple[subprocess.Popen, int, Path]]:
    """A running cache pod's Redis: (process, port, password file)."""
    secret = _password_file(scratch, NASTY)
    port = free_port()
    proc = _start(secret, port, _workdir(scratch), certs.tls_dir)
    try:
        wait_port(port)
        yield proc, port, secret
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


class ResolvedSSLConnection(SSLConnection):
    """redis-py's TLS connection, dialling 127.0.0.1 (at `address_port` when given) while it verifies the
    certificate for `host` (curl's --resolve): the Service's name resolves only inside a cluster, and the name
    checked is the point."""

    def __init__(self, *, address: str = "127.0.0.1", address_port: int | None = None, **kwargs: Any) -> None:
        self.address, self.address_port = address, address_port
        super().__init__(**kwargs)

    def _connection_arguments(self) -> Mapping:
        args = {**super()._connection_arguments(), "host": self.address, "server_hostname": self.host}
        if self.address_port is not None:
            args["port"] = self.address_port
        return args


def contract_secret(password: str) -> dict[str, str]:
    """Secret N-cache as a new Architecture gets it (build_secrets), with this password."""
    (cache_secret,) = [s for s in build_secrets(ARCH, NS, password=lambda: password)
                       if s["metadata"]["name"] == names.cache(ARCH)]
    return dict(cache_secret["stringData"])


def app_settings(port: int, password: str, ca_file: Path) -> Settings:
    """The demo app's settings from the env the operator renders: REDIS_URL by secretKeyRef from Secret
    N-cache (its `url`, built with this test's password) and ARCHOP_CA_FILE (this test's CA file stands for
    the mounted ConfigMap N-db-ca). Only the port differs from the cluster's: this Redis listens elsewhere."""
    env = {e["name"]: e for e in app.app_env(ARCH, ArchitectureSpec())}
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": names.cache(ARCH), "key": "url"}
    assert env["ARCHOP_CA_FILE"]["value"] == tls.CLIENT_CA_FILE
    settings = Settings.from_env({"REDIS_URL": contract_secret(password)["url"],
                                  "ARCHOP_CA_FILE": str(ca_file)})
    assert (settings.redis_host, settings.redis_port, settings.redis_tls) == (SERVICE, cache.PORT, True)
    return dataclasses.replace(settings, redis_port=port)


def ask(settings: Settings, *command: str, host: str | None = None, **options: Any) -> Any:
    """One command through redis-py over TLS, with the app's TLS options (tls_options), dialling 127.0.0.1
    and verifying the certificate for `host` (default: the Service's name, as the app does)."""
    opts = {**tls_options(settings), **options}
    assert opts.pop("ssl") is True

    async def run() -> Any:
        pool = ConnectionPool(connection_class=ResolvedSSLConnection, host=host or settings.redis_host,
                              port=settings.redis_port, password=settings.redis_password or None,
                              socket_timeout=5, socket_connect_timeout=5, **opts)
        client = Redis(connection_pool=pool)
        try:
            return await client.execute_command(*command)
        finally:
            await client.aclose()
            await pool.aclose()

    return asyncio.run(run())


def tls_version(port: int, ca_file: Path, maximum: ssl.TLSVersion | None = None) -> str | None:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if maximum is not None:
        ctx.maximum_version = maximum
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=SERVICE) as conn:
        return conn.version()


def test_redis_takes_its_password_from_the_file_and_the_probe_authenticates(
        server: tuple[subprocess.Popen, int, Path], certs: Certs, scratch: Path) -> None:
    proc, port, secret = server
    # exec: the shell became redis-server (pid 1 in the pod, so it gets the kubelet's SIGTERM).
    assert Path(f"/proc/{proc.pid}/comm").read_text().strip() == "redis-server"
    # The password is in neither its argv nor its environment.
    for what in ("cmdline", "environ"):
        assert NASTY.encode() not in Path(f"/proc/{proc.pid}/{what}").read_bytes(), what
    assert _probe(secret, port, certs.ca_file) == 0
    # Without the password, or with a wrong one, Redis refuses and the probe fails.
    out = subprocess.run(["redis-cli", "--tls", "--cacert", str(certs.ca_file), "-p", str(port), "ping"],
                         capture_output=True, text=True, timeout=10)
    assert "NOAUTH" in out.stdout + out.stderr
    assert _probe(_password_file(scratch, NASTY + "x", "wrong"), port, certs.ca_file) != 0
    # A server the CA did not sign fails the probe, as does plain TCP (redis-cli without --tls).
    assert _probe(secret, port, certs.other_ca_file) != 0
    plain = subprocess.run(["sh", "-c", cache.ping_script(str(secret), port).replace("--tls ", "")],
                           env={"PATH": "/usr/bin:/bin"}, capture_output=True, timeout=10, **_as_user())
    assert plain.returncode != 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0  # a clean shutdown


def test_redis_speaks_only_tls_and_clients_verify_it(server: tuple[subprocess.Popen, int, Path],
                                                     certs: Certs) -> None:
    _, port, _ = server
    settings = app_settings(port, NASTY, certs.ca_file)
    # The app's client: TLS, the certificate verified against the CA for the Service's name, then AUTH.
    assert ask(settings, "PING") is True
    assert ask(settings, "SET", "k", "v") is True and ask(settings, "GET", "k") == b"v"
    assert tls_version(port, certs.ca_file) == "TLSv1.3"
    with pytest.raises(ssl.SSLError):  # TLS 1.2 and older: no handshake
        tls_version(port, certs.ca_file, maximum=ssl.TLSVersion.TLSv1_2)
    # The password still counts: none, or a wrong one, is refused over the verified channel.
    with pytest.raises(AuthenticationError):
        ask(dataclasses.replace(settings, redis_password=""), "GET", "k")
    with pytest.raises((AuthenticationError, ResponseError)):
        ask(dataclasses.replace(settings, redis_password="wrong"), "PING")
    # Plain TCP: there is no plain port; the TLS port drops a client that does not start a handshake.
    async def plain() -> Any:
        client = Redis(host="127.0.0.1", port=port, password=NASTY, socket_timeout=5,
                       socket_connect_timeout=5)
        try:
            return await client.ping()
        finally:
            await client.aclose()

    with pytest.raises(ConnectionError):
        asyncio.run(plain())
    # A CA that did not sign it, or a name the certificate does not carry: no connection, no password sent.
    with pytest.raises(ConnectionError, match="certificate verify failed"):
        ask(settings, "PING", ssl_ca_certs=str(certs.other_ca_file))
    for name in ("shop-db-rw.demo.svc", "127.0.0.1", "shop-cache.other.svc"):
        with pytest.raises(ConnectionError, match="certificate verify failed"):
            ask(settings, "PING", host=name)
    # Every name the certificate carries (the Service's short, namespaced and fully qualified forms) works.
    for name in tls.cache_server_names(ARCH, NS):
        assert ask(settings, "PING", host=name) is True


def test_a_client_with_only_the_url_connects(server: tuple[subprocess.Popen, int, Path],
                                             certs: Certs) -> None:
    """Secret N-cache's `url` as any app would use it (read by redis-py's own URL parser, from_url's), plus
    the CA file: TLS verified for the Service's name, then AUTH with the password from the URL, every
    character of it intact. Only the address is this machine's (the Service's name resolves in a cluster)."""
    _, port, _ = server
    secret = contract_secret(NASTY)
    assert secret["url"].startswith("rediss://:") and secret["url"].endswith(f"@{SERVICE}:6379/0")
    assert (secret["host"], secret["port"], secret["password"]) == (SERVICE, "6379", NASTY)

    async def run(url: str, ca_file: Path) -> Any:
        options = parse_url(url)
        assert options.pop("connection_class") is SSLConnection  # rediss://: TLS
        pool = ConnectionPool(connection_class=ResolvedSSLConnection, address_port=port,
                              ssl_ca_certs=str(ca_file), socket_timeout=5, socket_connect_timeout=5,
                              **options)
        client = Redis(connection_pool=pool)
        try:
            return await client.execute_command("SET", "contract", "ok"), await client.get("contract")
        finally:
            await client.aclose()
            await pool.aclose()

    assert asyncio.run(run(secret["url"], certs.ca_file)) == (True, b"ok")
    with pytest.raises(ConnectionError, match="certificate verify failed"):  # verified, not just encrypted
        asyncio.run(run(secret["url"], certs.other_ca_file))
    with pytest.raises((AuthenticationError, ResponseError)):  # the password in the URL is what counts
        asyncio.run(run(contract_secret(NASTY + "x")["url"], certs.ca_file))


@pytest.mark.parametrize("content", [None, ""])
def test_redis_never_starts_without_a_password(scratch: Path, certs: Certs, content: str | None) -> None:
    secret = scratch / "password" if content is None else _password_file(scratch, content)
    proc = _start(secret, free_port(), _workdir(scratch), certs.tls_dir)
    try:
        assert proc.wait(timeout=10) == 1
        assert proc.stderr is not None and b"archop: no password in" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert _probe(secret, free_port(), certs.ca_file) != 0
