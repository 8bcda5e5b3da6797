"""The pods' start.sh on real Postgres 15: bootstrap, clone, and rejoin of an old leader by pg_rewind."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from testsupport.postgres import (
    PgInstance,
    clone_follower,
    free_port,
    init_leader,
    run_script_function,
    start_by_script,
    write_secrets,
)

pytestmark = pytest.mark.integration


def q(inst, sql: str, dbname: str = "postgres"):
    with psycopg.connect(inst.dsn(dbname), autocommit=True) as c:
        cur = c.execute(sql)
        return cur.fetchall() if cur.description else []


def wait_streaming(leader, name: str, timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = q(leader, f"select state from pg_stat_replication where application_name = '{name}'")
        if rows and rows[0][0] == "streaming":
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} does not stream from {leader.name}")


def test_bootstrap_then_clone(pg):
    port0 = free_port()
    # No primary answers on the rw address and no peer is alive: the bootstrap leader runs initdb.
    leader, p0 = start_by_script(
        pg.base,
        "db-0",
        primary_port=free_port(),
        port=port0,
        ARCHOP_BOOTSTRAP_LEADER="db-0",
        APP_USER="app",
        APP_DB="app",
    )
    pg.add(leader, p0)
    assert q(leader, "select pg_is_in_recovery()") == [(False,)]
    assert q(leader, "select rolreplication from pg_roles where rolname = 'postgres'") == [(True,)]
    assert q(leader, "select pg_get_userbyid(datdba) from pg_database where datname = 'app'") == [("app",)]
    assert q(leader, "select current_setting('data_checksums'), current_setting('wal_log_hints')") == [
        ("on", "on")
    ]
    q(leader, "create table t (id int primary key)", "app")
    q(leader, "insert into t select generate_series(1, 100)", "app")
    # A second pod with empty PGDATA clones the primary that answers on rw and follows it.
    follower, p1 = start_by_script(pg.base, "db-1", primary_port=port0, ARCHOP_BOOTSTRAP_LEADER="db-0")
    pg.add(follower, p1)
    wait_streaming(leader, "db-1")
    assert q(follower, "select pg_is_in_recovery()") == [(True,)]
    assert q(follower, "select count(*) from t", "app") == [(100,)]
    conninfo = q(follower, "show primary_conninfo")[0][0]
    assert "password" not in conninfo and "passfile=" in conninfo and "application_name=db-1" in conninfo


def test_bootstrap_leader_with_a_live_peer_clones_instead(pg):
    leader = pg.add(init_leader(pg.base, "db-1"))
    env_peers = f"127.0.0.1:{leader.port}"
    inst, proc = start_by_script(
        pg.base, "db-0", primary_port=leader.port, ARCHOP_BOOTSTRAP_LEADER="db-0", ARCHOP_PEERS=env_peers
    )
    pg.add(inst, proc)
    wait_streaming(leader, "db-0")
    assert q(inst, "select pg_is_in_recovery()") == [(True,)]


def test_decide_mode_for_existing_data(pg):
    """prepare_pgdata: a follower stays a follower; a primary with no other primary on rw stays primary."""
    leader = pg.add(init_leader(pg.base, "db-0"))
    follower = pg.add(clone_follower(leader, pg.base, "db-1"))
    from testsupport.postgres import script_env

    follower.stop()
    env = script_env(pg.base, "db-1", follower.port, leader.port)
    r = run_script_function("start.sh", env, "prepare >/dev/null; prepare_pgdata")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "follower"
    leader.stop()
    env = script_env(pg.base, "db-0", leader.port, free_port()) | {"ARCHOP_RESTART_GRACE_SECONDS": "1"}
    r = run_script_function("start.sh", env, "prepare >/dev/null; prepare_pgdata")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "primary"
    assert "no other primary answers after 1s" in r.stderr  # it looked for a promoted follower first


# Passwords only over TCP, as in the pods (scripts/pg_hba.conf); the socket stays trust for the lease agent.
SCRAM_HBA = """
local all all trust
host all all 127.0.0.1/32 scram-sha-256
host replication all 127.0.0.1/32 scram-sha-256
"""
# Every character the passfile (: and backslash), SQL literal (') and shell quoting must carry through.
PASSWORDS = {"superuser": "su:per\\pw 1'", "replication": "re'pl:pw\\x", "app": 'app "pw" $HOME `x`'}


def q_as(inst: PgInstance, user: str, password: str, sql: str, dbname: str = "postgres"):
    # The password as its own argument: a conninfo string would need quoting.
    with psycopg.connect(f"host=127.0.0.1 port={inst.port} dbname={dbname} user={user} connect_timeout=2",
                         password=password, autocommit=True) as c:
        cur = c.execute(sql)
        return cur.fetchall() if cur.description else []


def wait_streaming_as(leader: PgInstance, name: str, timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = q_as(leader, "postgres", PASSWORDS["superuser"],
                    f"select state from pg_stat_replication where application_name = '{name}'")
        if rows and rows[0][0] == "streaming":
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} does not stream from {leader.name}")


def _process_tree(inst: PgInstance) -> list[int]:
    pid = inst.postmaster_pid()
    assert pid is not None
    return [pid, *inst.children()]


def test_passwords_come_from_the_mounted_files(pg):
    """The pods' Secret volume: initdb, the roles and the passfile take the passwords from the files; the
    clone then authenticates with scram (replication and superuser) through the passfile alone."""
    write_secrets(pg.base, PASSWORDS)
    hba = pg.base / "pg_hba.scram.conf"
    hba.write_text(SCRAM_HBA)
    env = {"REPLICATION_USER": "replicator", "APP_USER": "app", "APP_DB": "app", "ARCHOP_HBA_FILE": str(hba),
           "ARCHOP_BOOTSTRAP_LEADER": "db-0"}
    port0 = free_port()
    leader, p0 = start_by_script(pg.base, "db-0", primary_port=free_port(), port=port0, **env)
    pg.add(leader, p0)
    assert q_as(leader, "postgres", PASSWORDS["superuser"], "select pg_is_in_recovery()") == [(False,)]
    assert q_as(leader, "app", PASSWORDS["app"], "select current_user", "app") == [("app",)]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        q_as(leader, "postgres", "wrong", "select 1")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        q_as(leader, "replicator", PASSWORDS["app"], "select 1")

    follower, p1 = start_by_script(pg.base, "db-1", primary_port=port0, **env)
    pg.add(follower, p1)
    wait_streaming_as(leader, "db-1")
    conninfo = q_as(follower, "postgres", PASSWORDS["superuser"], "show primary_conninfo")[0][0]
    assert "user=replicator" in conninfo and "passfile=" in conninfo and "password" not in conninfo
    passfile = pg.base / "db-1.pgpass"  # script_env's ARCHOP_PASSFILE
    assert passfile.stat().st_mode & 0o077 == 0  # libpq ignores a passfile others may read
    # No password in the environment or argv of any process of either instance (the script exec'd postgres:
    # the postmaster's environment is the script's).
    for inst in (leader, follower):
        for pid in _process_tree(inst):
            for what in ("environ", "cmdline"):
                try:
                    data = Path(f"/proc/{pid}/{what}").read_bytes()
                except (FileNotFoundError, ProcessLookupError):
                    continue  # a backend that ended meanwhile
                assert not [n for n, pw in PASSWORDS.items() if pw.encode() in data], (inst.name, pid, what)


def test_the_passfile_comes_from_the_files_and_an_unreadable_one_fails(pg):
    """write_passfile escapes : and backslash; a file the postgres user cannot read (a Secret volume without
    the pod's fsGroup) stops the start instead of passing for an empty password."""
    from testsupport.postgres import script_env

    secrets_dir = write_secrets(pg.base, {"superuser": PASSWORDS["superuser"],
                                          "replication": PASSWORDS["replication"]})
    env = script_env(pg.base, "db-0", free_port(), free_port(), REPLICATION_USER="replicator")
    r = run_script_function("start.sh", env, "write_passfile")
    assert r.returncode == 0, r.stderr
    lines = (pg.base / "db-0.pgpass").read_text().splitlines()
    # Only the servers this pod's clients dial (here the rw address), never any host ("*").
    assert lines == ["127.0.0.1:*:*:postgres:su\\:per\\\\pw 1'", "127.0.0.1:*:*:replicator:re'pl\\:pw\\\\x"]
    (secrets_dir / "replication-password").chmod(0)
    r = run_script_function("start.sh", env, "write_passfile")
    assert r.returncode != 0 and "Permission denied" in r.stderr
