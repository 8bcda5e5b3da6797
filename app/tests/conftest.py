"""Fixtures: a real Postgres leader + streaming follower, a real Redis, and the app on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import pytest
from aiohttp import DummyCookieJar
from aiohttp.test_utils import TestClient, TestServer
from demoapp.app import create_app
from demoapp.config import Settings
from demoapp.middleware import METRICS
from prometheus_client import generate_latest

from testsupport.postgres import PgInstance, clone_follower, init_leader, make_base
from testsupport.redis import RedisServer, start_redis

APP_PASSWORD = "app-secret-never-logged"


@dataclass
class PgPair:
    leader: PgInstance
    follower: PgInstance

    def stop(self) -> None:
        for inst in (self.follower, self.leader):
            if inst.running:  # a killed leader leaves a stale postmaster.pid
                inst.thaw()
                inst.stop(mode="immediate")


def setup_app_db(leader: PgInstance, dbname: str = "app") -> None:
    with psycopg.connect(leader.dsn(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'app'").fetchone():
            conn.execute(f"CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}'")
        conn.execute(f"CREATE DATABASE {dbname} OWNER app")


def wait_replayed(pair: PgPair, timeout: float = 10.0) -> None:
    """Block until the follower has replayed everything the leader has written so far."""
    with psycopg.connect(pair.leader.dsn(), autocommit=True) as conn:
        lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
    deadline = time.monotonic() + timeout
    with psycopg.connect(pair.follower.dsn(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()
            if row and row[0]:
                return
            time.sleep(0.05)
    raise TimeoutError("follower did not catch up")


def make_pair(base_dir: Path, synchronous: bool = False) -> PgPair:
    base = make_base(base_dir)
    leader = init_leader(base, "pg-0")
    follower = clone_follower(leader, base, "pg-1")
    if synchronous:
        # Every commit waits for the follower: a promoted follower then has every acknowledged write.
        with psycopg.connect(leader.dsn(), autocommit=True) as conn:
            conn.execute("""ALTER SYSTEM SET synchronous_standby_names = '"pg-1"'""")
            conn.execute("SELECT pg_reload_conf()")
    setup_app_db(leader)
    pair = PgPair(leader, follower)
    wait_replayed(pair)
    return pair


@contextlib.contextmanager
def pg_dir() -> Iterator[Path]:
    """A scratch dir the postgres user can reach (pytest's tmp dirs sit under 0700 parents)."""
    path = Path(tempfile.mkdtemp(prefix="archop-app-pg-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgPair]:
    """Shared by the tests that do not break the database (each test makes its own users)."""
    with pg_dir() as base:
        pair = make_pair(base)
        yield pair
        pair.stop()


@pytest.fixture
def pg_sync_pair() -> Iterator[PgPair]:
    """A private synchronous pair for tests that kill or fence the leader."""
    with pg_dir() as base:
        pair = make_pair(base, synchronous=True)
        yield pair
        pair.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = start_redis(tmp_path_factory.mktemp("redis-shared"))
    yield srv
    srv.thaw()
    srv.stop()


def settings_for(rw_port: int, ro_port: int | None, redis: RedisServer | None, **kw: object) -> Settings:
    s = Settings(
        host="127.0.0.1", db_rw_host="127.0.0.1", db_rw_port=rw_port,
        db_ro_host="127.0.0.1" if ro_port else None, db_ro_port=ro_port or rw_port,
        db_name="app", db_user="app", db_password=APP_PASSWORD,
        redis_host="127.0.0.1" if redis else None, redis_port=redis.port if redis else 6379,
        redis_password=redis.password if redis else "", cache_enabled=redis is not None,
        cache_ttl_seconds=30, retry_budget_seconds=8.0,
    )
    return replace(s, **kw)  # type: ignore[arg-type]


AppFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def make_client() -> AsyncIterator[AppFactory]:
    """Start the real app (create_app) on 127.0.0.1; wait=True waits until /readyz says 200.
    The client keeps no cookies, like an API client: a read carries a consistency token only when a test
    gives it one (TestClient's own jar would send every write's commit_lsn cookie back)."""
    clients: list[TestClient] = []

    async def factory(settings: Settings, wait: bool = True) -> TestClient:
        client = TestClient(TestServer(create_app(settings), host="127.0.0.1"), cookie_jar=DummyCookieJar())
        await client.start_server()
        clients.append(client)
        if wait:
            deadline = time.monotonic() + 15
            while True:
                async with client.get("/readyz") as r:
                    if r.status == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"app not ready: {await r.text()}")
                await asyncio.sleep(0.1)
        return client

    yield factory
    for client in clients:
        await client.close()


@pytest.fixture
async def client(pg: PgPair, redis_server: RedisServer, make_client: AppFactory) -> TestClient:
    """The app wired like in a pod: rw -> leader, ro -> follower, cache on."""
    return await make_client(settings_for(pg.leader.port, pg.follower.port, redis_server))


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (Prometheus text format)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric_name = head.split("{", 1)[0]
        if metric_name != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


async def get_metric(client: TestClient, name: str, **labels: str) -> float:
    """From the app's registry: /metrics is served on its own port (create_metrics_app), not the client's."""
    text = generate_latest(client.server.app[METRICS].registry).decode()
    return metric(text, name, **labels)
