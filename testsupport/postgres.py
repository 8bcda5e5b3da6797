"""Real Postgres 15 instances on loopback for integration tests: a leader and streaming followers.

Postgres refuses to run as root, so when the tests run as root every server command runs as the
`postgres` system user (created by Debian's postgresql package).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("ARCHOP_PG_BIN", "/usr/lib/postgresql/15/bin"))
RUN_AS = "postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", RUN_AS, "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(_as_postgres(cmd), check=True, capture_output=True, text=True, **kw)


def _own(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, RUN_AS, RUN_AS)


@dataclass
class PgInstance:
    name: str
    port: int
    datadir: Path
    sockdir: Path

    def dsn(self, dbname: str = "postgres", user: str = "postgres", **extra: object) -> str:
        parts = [f"host=127.0.0.1 port={self.port} dbname={dbname} user={user} connect_timeout=2"]
        parts += [f"{k}={v}" for k, v in extra.items()]
        return " ".join(parts)

    @property
    def conninfo_for_followers(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres application_name={{name}}"

    def start(self, wait: bool = True) -> None:
        log = self.datadir.parent / f"{self.name}.log"
        if not log.exists():
            log.touch()
            _own(log)
        cmd = [
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(log),
            "-o",
            f"-p {self.port} -k {self.sockdir}",
            "start",
        ]
        if wait:
            cmd.insert(1, "-w")
        else:
            cmd.insert(1, "-W")
        _run(cmd)

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            _run([str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"])

    def postmaster_pid(self) -> int | None:
        pidfile = self.datadir / "postmaster.pid"
        try:
            return int(pidfile.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    @property
    def running(self) -> bool:
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would (children exit once they notice)."""
        pid = self.postmaster_pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):  # gone already (a stale postmaster.pid)
                os.kill(pid, signal.SIGKILL)
            for _ in range(100):
                if not self.running:
                    break
                time.sleep(0.05)

    def freeze(self) -> None:
        """SIGSTOP the postmaster only: running sessions and WAL senders go on (a gray failure)."""
        self._signal([self.postmaster_pid()], signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal([self.postmaster_pid(), *self.children()], signal.SIGCONT)

    def freeze_all(self) -> None:
        """SIGSTOP the postmaster and every child (backends, WAL senders): a frozen machine."""
        self._signal([self.postmaster_pid(), *self.children()], signal.SIGSTOP)

    def children(self) -> list[int]:
        pid = self.postmaster_pid()
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
        return out

    @staticmethod
    def _signal(pids: list[int | None], sig: signal.Signals) -> None:
        for pid in pids:
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)


LEADER_CONF = """
listen_addresses = '127.0.0.1'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '256MB'
wal_log_hints = on
hot_standby = on
hot_standby_feedback = on
wal_receiver_timeout = '4s'
wal_sender_timeout = '4s'
wal_receiver_status_interval = '1s'
wal_retrieve_retry_interval = '500ms'
fsync = off
full_page_writes = on
"""

HBA = """
local all all trust
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
"""


def make_base(tmp: Path) -> Path:
    base = tmp / "pg"
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, 0o755)
    _own(base)
    return base


def init_leader(base: Path, name: str = "pg-0", port: int | None = None) -> PgInstance:
    datadir = base / name
    inst = PgInstance(name=name, port=port or free_port(), datadir=datadir, sockdir=base)
    _run([str(PG_BIN / "initdb"), "-D", str(datadir), "-U", "postgres", "--data-checksums", "-A", "trust"])
    with open(datadir / "postgresql.conf", "a") as f:
        f.write(LEADER_CONF)
    (datadir / "pg_hba.conf").write_text(HBA)
    inst.start()
    return inst


def clone_follower(leader: PgInstance, base: Path, name: str, port: int | None = None) -> PgInstance:
    """pg_basebackup -R from the leader, then start as a streaming follower."""
    datadir = base / name
    inst = PgInstance(name=name, port=port or free_port(), datadir=datadir, sockdir=base)
    _run(
        [
            str(PG_BIN / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(leader.port),
            "-U",
            "postgres",
            "-D",
            str(datadir),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "-d",
            f"host=127.0.0.1 port={leader.port} user=postgres application_name={name}",
        ]
    )
    inst.start()
    return inst


# --------------------------------------------------------------------------------------------------------
# Running the operator's own database scripts (archop/scripts/start.sh, fence.sh) against loopback instances,
# so the integration tests exercise exactly what the pods run.


def _scripts_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("archop").joinpath("scripts")))


def tls_dir(base: Path) -> Path:
    return base / "tls"


def write_tls(base: Path, files: dict[str, str]) -> Path:
    """The pods' N-db-tls Secret volume ({tls.crt, tls.key, ca.crt}: PEM text) in tls_dir(base), as the
    kubelet makes it: owner root, group postgres (fsGroup), mode 0440. Write it before the first
    script_env of `base`: the instances of a base with certificates run the shipped pg_hba.conf (TLS only)
    without its loopback trust line, so their TCP connections on loopback take the path remote ones take."""
    d = tls_dir(base)
    d.mkdir(exist_ok=True)
    for name, text in files.items():
        f = d / name
        f.write_text(text)
        if os.geteuid() == 0:
            shutil.chown(f, "root", RUN_AS)
            os.chmod(f, 0o440)
        else:
            os.chmod(f, 0o600)
    return d


def script_env(base: Path, name: str, port: int, primary_port: int, **extra: str) -> dict[str, str]:
    """The environment the StatefulSet gives a database pod, pointed at loopback. Without certificates
    (write_tls) the servers run without TLS and the scripts connect with sslmode=disable."""
    conf = base / "conf"
    tls = tls_dir(base).exists()
    if not conf.exists():
        conf.mkdir()
        shipped = ("postgresql.conf", "stop.sql")  # as in the pods' N-db-config ConfigMap (HBA: see above)
        for f in shipped:
            shutil.copy(_scripts_dir() / f, conf / f)
        if tls:
            hba = (_scripts_dir() / "pg_hba.conf").read_text().splitlines(keepends=True)
            (conf / "pg_hba.conf").write_text("".join(line for line in hba if "127.0.0.1/32" not in line))
        else:
            (conf / "pg_hba.conf").write_text(HBA)
            with open(conf / "postgresql.conf", "a") as settings:
                settings.write("ssl = off\n")
        for p in (conf, *(conf / f for f in shipped), conf / "pg_hba.conf"):
            _own(p)
    env = {
        "PATH": f"{PG_BIN}:/usr/bin:/bin",
        "PGDATA": str(base / name),
        "POD_NAME": name,
        "PGPORT": str(port),
        "ARCHOP_RUN_DIR": str(base),
        "ARCHOP_CONF_DIR": str(conf),
        "ARCHOP_PRIMARY_HOST": "127.0.0.1",
        "ARCHOP_PRIMARY_PORT": str(primary_port),
        "ARCHOP_LISTEN": "127.0.0.1",
        "ARCHOP_EXTRA_OPTS": "-c fsync=off -c shared_buffers=32MB",
        "ARCHOP_PASSFILE": str(base / f"{name}.pgpass"),
        "ARCHOP_LOCKFILE": str(base / f"{name}.lock"),  # one lock per instance, as one volume per pod
        "ARCHOP_WAIT_PRIMARY_SECONDS": "15",
        # The pods' password files (see write_secrets); none unless a test writes them, so trust auth.
        "ARCHOP_SECRETS_DIR": str(base / "secrets"),
        "POSTGRES_USER": "postgres",
        "REPLICATION_USER": "postgres",
        "ARCHOP_TLS_DIR": str(tls_dir(base)),
    }
    if not tls:
        env["ARCHOP_SSLMODE"] = "disable"
    env.update(extra)
    return env


def write_secrets(base: Path, passwords: dict[str, str]) -> Path:
    """The pods' password files ({superuser,replication,app}-password) in script_env's ARCHOP_SECRETS_DIR,
    readable as the kubelet's Secret volume makes them: owner root, group postgres (fsGroup), mode 0440."""
    secrets_dir = base / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    for user, password in passwords.items():
        f = secrets_dir / f"{user}-password"
        f.write_text(password)
        if os.geteuid() == 0:
            shutil.chown(f, "root", RUN_AS)
        os.chmod(f, 0o440)
    return secrets_dir


def run_script(script: str, env: dict[str, str], log: Path, args: str = "") -> subprocess.Popen:
    """Start `bash <script>` as the postgres user in the background, output to `log`."""
    if not log.exists():
        log.touch()
        _own(log)
    cmd = [
        "env",
        "-i",
        *(f"{k}={v}" for k, v in env.items()),
        "bash",
        "-c",
        f'{args}source "{_scripts_dir() / script}"',
    ]
    out = open(log, "a")  # noqa: SIM115 - the child keeps it
    # A process group of its own: runuser does not pass SIGKILL on, so only stop_script ends the script.
    return subprocess.Popen(_as_postgres(cmd), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_script(proc: subprocess.Popen) -> None:
    """SIGKILL a script started by run_script and everything it started (its whole process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def run_script_function(script: str, env: dict[str, str], body: str) -> subprocess.CompletedProcess:
    """Source `script` without running main and run `body` (bash) with its functions, as postgres."""
    env = {**env, "ARCHOP_SOURCE_ONLY": "1"}
    cmd = [
        "env",
        "-i",
        *(f"{k}={v}" for k, v in env.items()),
        "bash",
        "-c",
        f'source "{_scripts_dir() / script}"; {body}',
    ]
    return subprocess.run(_as_postgres(cmd), capture_output=True, text=True, timeout=120)


def wait_ready(inst: PgInstance, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(inst.port)])
        if r.returncode == 0:
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{inst.name}: start script exited with {proc.returncode}")
        time.sleep(0.2)
    raise TimeoutError(f"{inst.name} not ready after {timeout}s")


def start_by_script(
    base: Path, name: str, primary_port: int, port: int | None = None, **extra: str
) -> tuple[PgInstance, subprocess.Popen]:
    """Run the pods' start.sh for `name` (it decides: bootstrap, clone, follower, rewind, primary)."""
    port = port or free_port()
    inst = PgInstance(name=name, port=port, datadir=base / name, sockdir=base)
    proc = run_script("start.sh", script_env(base, name, port, primary_port, **extra), base / f"{name}.log")
    wait_ready(inst, proc=proc)
    return inst, proc
