"""The pods' start.sh on real Postgres 15: bootstrap, clone, and rejoin of an old leader by pg_rewind."""

from __future__ import annotations

import psycopg
import pytest

from testsupport.postgres import clone_follower, free_port, init_leader, run_script_function, start_by_script

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
