"""Password rotation on real Postgres 15 (docs/connecting.md, "Rotation"): what handlers/passwords.py does to
the leader, set_role_password in failover/act.py, over the operator's own way in (the superuser, TLS
verified against the Architecture's CA, SCRAM).

The server is started by the pods' start.sh with the shipped configuration (TLS only, SCRAM) and
log_statement = 'all', so the server log shows every statement as Postgres received it. The new password
must work for new logins, the old one must stop working, a session logged in before must go on (the
app's pool keeps writing while its pods roll), and the plaintext must appear nowhere Postgres could log it.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import psycopg
import pytest
from archop import names
from archop.build import secrets, tls
from archop.failover import act
from archop.health.probe import Target, Verify

from testsupport.postgres import PgInstance, free_port, start_by_script, write_secrets, write_tls

pytestmark = pytest.mark.integration

ARCH, NS = "shop", "demo"
OLD, NEW = "old-app-pw", "n3w p@ss:w'rd\\$"  # quotes, backslash, dollar: nothing of it may leak or break
PASSWORDS = {"superuser": "su-pw", "replication": "repl-pw", "app": OLD}
POD = "shop-db-0"


@pytest.fixture
def leader(pg) -> tuple[PgInstance, Path]:
    """A leader started by start.sh with the plan's CA and N-db-tls, logging every statement: (it, CA)."""
    plan = tls.plan(ARCH, NS, {})
    (db_tls,) = [s for s in plan.create if s["metadata"]["name"] == names.db_tls_secret(ARCH)]
    files = {k: base64.b64decode(v).decode() for k, v in db_tls["data"].items()}
    ca_file = write_tls(pg.base, files) / tls.CA_CERT
    write_secrets(pg.base, PASSWORDS)
    env = {"REPLICATION_USER": "replicator", "APP_USER": "app", "APP_DB": "app",
           "ARCHOP_BOOTSTRAP_LEADER": POD, "ARCHOP_PRIMARY_HOST": "localhost"}
    inst, proc = start_by_script(pg.base, POD, primary_port=free_port(), port=free_port(), **env)
    pg.add(inst, proc)
    with psycopg.connect(host=str(inst.sockdir), port=inst.port, user="postgres", dbname="postgres",
                         autocommit=True) as c:
        c.execute("alter system set log_statement = 'all'")
        c.execute("select pg_reload_conf()")
    return inst, ca_file


def app_login(inst: PgInstance, ca_file: Path, password: str) -> psycopg.Connection:
    """As an app pod: `uri` of N-db-app (verify-full by the rw Service's name), at this machine's port."""
    uri = secrets.database_keys(ARCH, NS, "app", password)[secrets.URI]
    return psycopg.connect(uri, hostaddr="127.0.0.1", port=inst.port, sslrootcert=str(ca_file),
                           connect_timeout=5, autocommit=True)


def server_log(pg) -> str:
    return (pg.base / f"{POD}.log").read_text(errors="replace")


def test_the_new_password_logs_in_the_old_one_no_longer_and_the_plaintext_is_never_sent(
        pg, leader: tuple[PgInstance, Path]) -> None:
    inst, ca_file = leader
    target = Target(host="127.0.0.1", port=inst.port, password=PASSWORDS["superuser"],
                    verify=Verify(names.db_pod_host(ARCH, POD, NS), str(ca_file)))
    # A session of the app's pool, logged in before the rotation, writing.
    before = app_login(inst, ca_file, OLD)
    before.execute("create table t (x int)")

    asyncio.run(act.set_role_password(target, "app", NEW))

    with app_login(inst, ca_file, NEW) as conn:
        conn.execute("insert into t values (1)")
        assert conn.execute("select current_user").fetchone() == ("app",)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        app_login(inst, ca_file, OLD)
    # Logged in before: it goes on writing (a password is checked only at login).
    before.execute("insert into t values (2)")
    assert before.execute("select count(*) from t").fetchone() == (2,)
    before.close()

    with psycopg.connect(host=str(inst.sockdir), port=inst.port, user="postgres", dbname="postgres") as c:
        (stored,) = c.execute("select rolpassword from pg_authid where rolname = 'app'").fetchone() or ("",)
    assert stored.startswith("SCRAM-SHA-256$4096:") and NEW not in stored
    log = server_log(pg)
    statements = [line for line in log.splitlines() if "alter role" in line.lower()]
    assert statements and all("SCRAM-SHA-256$" in line for line in statements)
    for fragment in (NEW, "n3w", "p@ss"):
        assert fragment not in log

    # Again with the same password: nothing changes for its clients.
    asyncio.run(act.set_role_password(target, "app", NEW))
    with app_login(inst, ca_file, NEW) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


@pytest.mark.parametrize(("role", "why"), [("postgres", "superuser or replication"),
                                           ("replicator", "superuser or replication"),
                                           ("nobody", "does not exist")])
def test_only_a_plain_login_role_is_ever_given_a_password(pg, leader: tuple[PgInstance, Path], role: str,
                                                          why: str) -> None:
    """The role's name comes from N-db-app, which the tenant may edit: never the superuser's or the
    replication user's password (the operator's own way in and the followers' would break)."""
    inst, ca_file = leader
    target = Target(host="127.0.0.1", port=inst.port, password=PASSWORDS["superuser"],
                    verify=Verify(names.db_pod_host(ARCH, POD, NS), str(ca_file)))
    with pytest.raises(act.RoleRefused, match=why):
        asyncio.run(act.set_role_password(target, role, NEW))
    # The superuser still logs in with its own password.
    with psycopg.connect(**target.kwargs(5.0, None)) as conn:
        assert conn.execute("select current_user").fetchone() == ("postgres",)
