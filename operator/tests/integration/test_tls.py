"""TLS on real Postgres 15 started by the pods' start.sh with the shipped postgresql.conf and pg_hba.conf
(less its loopback trust line, so loopback TCP goes the way remote connections go), and a certificate from
build/tls.py: verify-full by the right name works, anything else fails, and followers stream over it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from archop.build import tls
from archop.failover import act
from archop.health.probe import Target, Verify, probe

from testsupport.postgres import PgInstance, free_port, start_by_script, write_secrets, write_tls

pytestmark = pytest.mark.integration

PASSWORDS = {"superuser": "su-pw", "replication": "repl-pw", "app": "app-pw"}
POD0 = "db-0.shop-db-headless.demo.svc"  # names.db_pod_host("shop", "db-0", "demo")
POD1 = "db-1.shop-db-headless.demo.svc"


def socket_q(inst: PgInstance, sql: str) -> list[tuple]:
    """Over the unix socket (trust), as the fence agent does."""
    with psycopg.connect(host=str(inst.sockdir), port=inst.port, user="postgres", dbname="postgres",
                         autocommit=True) as c:
        cur = c.execute(sql)
        return cur.fetchall() if cur.description else []


def tcp(inst: PgInstance, **kw: object) -> psycopg.Connection:
    args = {"hostaddr": "127.0.0.1", "port": inst.port, "user": "postgres",
            "password": PASSWORDS["superuser"], "dbname": "postgres", "connect_timeout": 3,
            "autocommit": True, **kw}
    return psycopg.connect(**args)  # type: ignore[arg-type]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def wait_streaming_tls(leader: PgInstance, name: str) -> None:
    sql = ("select r.state, s.ssl from pg_stat_replication r join pg_stat_ssl s using (pid) "
           f"where r.application_name = '{name}'")
    wait_for(lambda: socket_q(leader, sql) == [("streaming", True)],
             f"{name} does not stream over TLS from {leader.name}")


@pytest.fixture
def certs(pg) -> tuple[Path, Path]:
    issuer = tls.Issuer()
    ca = issuer.new_ca("integration CA")
    server = issuer.issue_server(ca, (*tls.server_names("shop", "demo"), "localhost"))
    d = write_tls(pg.base, {"tls.crt": server.cert_pem, "tls.key": server.key_pem, "ca.crt": ca.cert_pem})
    other = pg.base / "other-ca.crt"
    other.write_text(issuer.new_ca("another CA").cert_pem)
    return d / "ca.crt", other


def test_tls_only_verified_and_replicated(pg, certs) -> None:
    ca_file, other_ca = certs
    write_secrets(pg.base, PASSWORDS)
    env = {"REPLICATION_USER": "replicator", "APP_USER": "app", "APP_DB": "app",
           "ARCHOP_BOOTSTRAP_LEADER": "db-0", "ARCHOP_PRIMARY_HOST": "localhost",
           "ARCHOP_PASSFILE_HOSTS": f"localhost {POD0} {POD1}"}
    port0 = free_port()
    leader, p0 = start_by_script(pg.base, "db-0", primary_port=free_port(), port=port0, **env)
    pg.add(leader, p0)

    # verify-full by every name the clients use: the Service's and the pod's (the wildcard).
    for name in ("localhost", POD0, "shop-db-rw.demo.svc"):
        with tcp(leader, host=name, sslmode="verify-full", sslrootcert=str(ca_file)) as c:
            assert c.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone() == (True,)
    # Plain TCP is refused by pg_hba.conf before any password is asked for.
    with pytest.raises(psycopg.OperationalError, match="rejects connection.*no encryption"):
        tcp(leader, host="127.0.0.1", sslmode="disable")
    # Another CA, or a name the certificate does not carry: no connection.
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        tcp(leader, host="localhost", sslmode="verify-full", sslrootcert=str(other_ca))
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        tcp(leader, host="db.example.org", sslmode="verify-full", sslrootcert=str(ca_file))

    # The operator's probe: verified, or unreachable (never in clear).
    target = Target(host="127.0.0.1", port=port0, password=PASSWORDS["superuser"],
                    verify=Verify(POD0, str(ca_file)))
    assert asyncio.run(probe(target, timeout=3.0)).is_primary
    wrong = asyncio.run(probe(Target(host="127.0.0.1", port=port0, password=PASSWORDS["superuser"],
                                     verify=Verify(POD0, str(other_ca))), timeout=3.0))
    assert not wrong.reachable and "certificate verify failed" in (wrong.error or "")

    # A follower clones (pg_basebackup) and streams over verify-full, by password from its scoped passfile.
    follower, p1 = start_by_script(pg.base, "db-1", primary_port=port0, **env)
    pg.add(follower, p1)
    wait_streaming_tls(leader, "db-1")
    conninfo = socket_q(follower, "show primary_conninfo")[0][0]
    assert f"sslmode=verify-full sslrootcert={ca_file}" in conninfo and "host=localhost" in conninfo
    lines = (pg.base / "db-1.pgpass").read_text().splitlines()
    assert {line.split(":", 1)[0] for line in lines} == {"localhost", POD0, POD1}

    # The operator repoints it at the leader's pod name and address (follower_conninfo), still verified.
    follower_target = Target(host="127.0.0.1", port=follower.port, password=PASSWORDS["superuser"],
                             verify=Verify(POD1, str(ca_file)))
    upstream = act.follower_conninfo(POD0, port0, "replicator", "db-1", str(pg.base / "db-1.pgpass"),
                                     hostaddr="127.0.0.1", sslrootcert=str(ca_file))
    asyncio.run(act.repoint(follower_target, upstream, None))
    receiver = ("select 1 from pg_stat_wal_receiver "
                "where status = 'streaming' and conninfo like '%host=db-0.%'")
    wait_for(lambda: bool(socket_q(follower, receiver)), "the follower was not repointed to the pod name")
    wait_streaming_tls(leader, "db-1")
    socket_q(leader, "create table t as select 1 as x")
    wait_for(lambda: bool(socket_q(follower, "select 1 from pg_class where relname = 't'")),
             "no WAL arrived over the repointed stream")
