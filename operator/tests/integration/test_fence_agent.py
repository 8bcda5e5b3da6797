"""The pods' self-fencing agent (fence.sh) on real Postgres 15: a primary fences itself only when it has lost
both the API server and every streaming follower, within 10 seconds, ending client sessions."""

from __future__ import annotations

import asyncio
import socket
import time

import psycopg
import pytest
from archop.failover import act
from archop.health.probe import Target

from testsupport.postgres import clone_follower, free_port, init_leader, run_script, script_env

from .loopback import sql, streaming_from, wait_for

pytestmark = pytest.mark.integration


def read_only(inst) -> bool:
    return sql(inst, "show default_transaction_read_only") == [("on",)]


def agent(pg, leader, api_port: int):
    env = script_env(
        pg.base,
        leader.name,
        leader.port,
        leader.port,
        ARCHOP_API_HOST="127.0.0.1",
        ARCHOP_API_PORT=str(api_port),
        ARCHOP_FENCE_AFTER_SECONDS="2",
        ARCHOP_FENCE_INTERVAL_SECONDS="0.5",
    )
    proc = run_script("fence.sh", env, pg.base / f"{leader.name}-fence-{api_port}.log")
    pg.procs.append(proc)
    return proc


async def test_fences_only_without_api_and_followers(pg):
    leader = pg.add(init_leader(pg.base, "db-0"))
    follower = pg.add(clone_follower(leader, pg.base, "db-1"))
    await wait_for(lambda: streaming_from(leader, "db-1"), what="streaming")
    proc = agent(pg, leader, api_port=free_port())  # nothing listens there: the API server is "gone"

    # API gone but a follower streams: a healthy leader must not fence itself.
    await asyncio.sleep(4)
    assert not read_only(leader)

    client = psycopg.connect(leader.dsn(), autocommit=True)
    follower.stop()
    lost = time.monotonic()
    await wait_for(lambda: read_only(leader), timeout=10, interval=0.1, what="self-fence")
    assert time.monotonic() - lost < 10
    await asyncio.sleep(0.5)  # the same psql run terminates sessions right after the reload
    with pytest.raises(psycopg.OperationalError):
        client.execute("select 1")  # its session was terminated
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        sql(leader, "create table t (id int)")
    proc.kill()

    # Only the operator lifts the fence.
    await act.unfence(Target("127.0.0.1", leader.port))
    assert not read_only(leader)


async def test_no_fence_while_api_server_answers(pg):
    leader = pg.add(init_leader(pg.base, "db-0"))
    with socket.socket() as api:
        api.bind(("127.0.0.1", 0))
        api.listen(16)
        agent(pg, leader, api_port=api.getsockname()[1])
        await asyncio.sleep(4)  # no follower at all, but the API server is reachable
        assert not read_only(leader)
