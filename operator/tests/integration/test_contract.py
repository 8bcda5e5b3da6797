"""The connection contract against real servers: a client that has only Secret N-db-app's `uri` (or `ro-uri`,
or `pgpass`) and the CA reaches Postgres 15 over TLS with verify-full, as an app pod would.

The server is started by the pods' start.sh with the shipped postgresql.conf and pg_hba.conf (less its
loopback trust line: loopback TCP goes the way remote connections go), its certificate the one the
reconcile's tls.plan puts in Secret N-db-tls, and the app user's password the one in the Secret. The Redis
half (`url` of N-cache) is
operator/tests/integration/test_cache_scripts.py::test_a_client_with_only_the_url_connects.

The Services' names resolve only inside a cluster: the client keeps the host name of the URI (the name the
certificate must carry) and is given this machine's address and port (libpq's hostaddr, curl's --resolve).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import psycopg
import pytest
from archop import names
from archop.build import secrets, tls
from demoapp.config import Settings

from testsupport.postgres import free_port, start_by_script, write_secrets, write_tls

pytestmark = pytest.mark.integration

ARCH, NS = "shop", "demo"
# Every character a URI or a .pgpass line must carry through: @ : / ? # % & = + space quotes backslash.
APP_PASSWORD = "p@ss:w/rd?#%&=+ 'x\"\\ $HOME;"
PASSWORDS = {"superuser": "su-pw", "replication": "repl-pw", "app": APP_PASSWORD}
SQL = "select current_user, current_database(), s.ssl from pg_stat_ssl s where s.pid = pg_backend_pid()"


def contract() -> dict[str, str]:
    """Secret N-db-app as a new Architecture gets it (build_secrets), with these passwords."""
    order = iter([PASSWORDS["superuser"], PASSWORDS["replication"], PASSWORDS["app"], "cache-pw"])
    (app_secret,) = [s for s in secrets.build_secrets(ARCH, NS, password=lambda: next(order))
                     if s["metadata"]["name"] == names.db_secret(ARCH, "app")]
    return dict(app_secret["stringData"])


@pytest.fixture
def server(pg) -> tuple[int, Path, Path]:
    """A leader started by start.sh with the plan's CA and N-db-tls: (port, CA file, another CA's file)."""
    plan = tls.plan(ARCH, NS, {})
    (db_tls,) = [s for s in plan.create if s["metadata"]["name"] == names.db_tls_secret(ARCH)]
    files = {k: base64.b64decode(v).decode() for k, v in db_tls["data"].items()}
    ca_file = write_tls(pg.base, files) / tls.CA_CERT
    other = pg.base / "other-ca.crt"
    other.write_text(tls.Issuer().new_ca("another CA").cert_pem)
    write_secrets(pg.base, PASSWORDS)
    env = {"REPLICATION_USER": "replicator", "APP_USER": "app", "APP_DB": "app",
           "ARCHOP_BOOTSTRAP_LEADER": "db-0", "ARCHOP_PRIMARY_HOST": "localhost"}
    port = free_port()
    leader, proc = start_by_script(pg.base, "db-0", primary_port=free_port(), port=port, **env)
    pg.add(leader, proc)
    return port, ca_file, other


def connect(conninfo: str, port: int, ca_file: Path, **extra: object) -> psycopg.Connection:
    """`conninfo` as it is, but at 127.0.0.1:`port` and with the CA where this machine has it."""
    return psycopg.connect(conninfo, hostaddr="127.0.0.1", port=port, sslrootcert=str(ca_file),
                           connect_timeout=5, **extra)  # type: ignore[arg-type]


def test_the_uri_alone_connects_verified(server: tuple[int, Path, Path]) -> None:
    port, ca_file, other_ca = server
    keys = contract()
    rw = names.service_host(names.db_rw(ARCH), NS)
    assert (keys["host"], keys["port"], keys["dbname"], keys["user"]) == (rw, "5432", "app", "app")
    assert keys["uri"].endswith(f"@{rw}:5432/app?sslmode=verify-full&sslrootcert={tls.CLIENT_CA_FILE}")
    # What libpq reads from the URI: the password intact, verify-full, the CA where the app pod mounts it.
    parsed = psycopg.conninfo.conninfo_to_dict(keys["uri"])
    assert (parsed["password"], parsed["sslmode"], parsed["sslrootcert"]) == (
        APP_PASSWORD, "verify-full", tls.CLIENT_CA_FILE)
    with connect(keys["uri"], port, ca_file) as conn:
        assert conn.execute(SQL).fetchone() == ("app", "app", True)
        assert conn.info.host == rw  # the name verified against the certificate
    with connect(keys["ro-uri"], port, ca_file) as conn:  # the ro Service's name is on the certificate too
        assert conn.execute(SQL).fetchone() == ("app", "app", True)
        assert conn.info.host == names.service_host(names.db_ro(ARCH), NS)
    # Verified, not merely encrypted: another CA, or a name the certificate does not carry, gets nowhere.
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        connect(keys["uri"], port, other_ca)
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        connect(keys["uri"].replace(f"@{rw}:", "@shop-db-rw.other.svc:"), port, ca_file)
    # The password in the URI is what counts.
    wrong_uri = keys["uri"].replace("p%40ss", "q%40ss")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(wrong_uri, port, ca_file)


def test_the_demo_app_connects_with_the_contract_only(server: tuple[int, Path, Path]) -> None:
    """The demo app's settings from DATABASE_URL and DATABASE_RO_URL (what its pod gets by secretKeyRef):
    its own conninfo (read-write target, keepalives) plus the password, verified like the URI."""
    port, ca_file, _ = server
    keys = contract()
    settings = Settings.from_env({"DATABASE_URL": keys["uri"], "DATABASE_RO_URL": keys["ro-uri"]})
    assert settings.db_password == APP_PASSWORD and APP_PASSWORD not in repr(settings)
    for role in ("rw", "ro"):
        with connect(settings.conninfo(role), port, ca_file, password=settings.db_password) as conn:
            assert conn.execute(SQL).fetchone() == ("app", "app", True)


def test_the_pgpass_lines_give_the_password_to_those_hosts_only(server: tuple[int, Path, Path],
                                                                  tmp_path: Path) -> None:
    """libpq finds the password in `pgpass` by host, port, database and user (its `:` and `\\` escaped); the
    port field is this machine's port instead of 5432, the one change."""
    port, ca_file, _ = server
    keys = contract()
    lines = keys["pgpass"].splitlines()
    assert [line.split(":", 1)[0] for line in lines] == [keys["host"], keys["ro-host"]]
    passfile = tmp_path / "pgpass"
    passfile.write_text("".join(line.replace(":5432:", f":{port}:", 1) + "\n" for line in lines))
    os.chmod(passfile, 0o600)
    for host in (keys["host"], keys["ro-host"]):
        conninfo = f"host={host} dbname=app user=app sslmode=verify-full passfile={passfile}"
        with connect(conninfo, port, ca_file) as conn:
            assert conn.execute(SQL).fetchone() == ("app", "app", True)
    other = names.service_host(names.db_r(ARCH), NS)  # on the certificate, not in the passfile
    with pytest.raises(psycopg.OperationalError, match="no password supplied|password authentication failed"):
        connect(f"host={other} dbname=app user=app sslmode=verify-full passfile={passfile}", port, ca_file)
