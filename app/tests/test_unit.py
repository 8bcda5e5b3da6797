"""Pure units: the env contract, conninfo, the Redis breaker, pool replacement policy, JSON logs."""

from __future__ import annotations

import json
import logging
import time

import psycopg
import pytest
from demoapp.cache import Breaker
from demoapp.config import Settings
from demoapp.db import Backend
from demoapp.jsonlog import JsonFormatter
from demoapp.repo import request_hash
from psycopg_pool import PoolTimeout

ENV = {
    "DEMOAPP_PORT": "9090", "DEMOAPP_DB_RW_HOST": "shop-db-rw.ns.svc",
    "DEMOAPP_DB_RO_HOST": "shop-db-ro.ns.svc", "DEMOAPP_DB_PORT": "5433", "DEMOAPP_DB_NAME": "app",
    "DEMOAPP_DB_USER": "app", "DEMOAPP_DB_PASSWORD": "pg-pw-123", "DEMOAPP_REDIS_HOST": "shop-cache.ns.svc",
    "DEMOAPP_REDIS_PORT": "6380", "DEMOAPP_REDIS_PASSWORD": "redis-pw-456", "DEMOAPP_CACHE_ENABLED": "false",
    "DEMOAPP_CACHE_TTL_SECONDS": "45",
}


def test_env_contract() -> None:
    s = Settings.from_env(ENV)
    assert (s.port, s.db_rw_host, s.db_ro_host, s.db_rw_port, s.db_ro_port) == (
        9090, "shop-db-rw.ns.svc", "shop-db-ro.ns.svc", 5433, 5433)
    assert (s.db_name, s.db_user, s.db_password) == ("app", "app", "pg-pw-123")
    assert (s.redis_host, s.redis_port, s.redis_password) == ("shop-cache.ns.svc", 6380, "redis-pw-456")
    assert (s.cache_enabled, s.cache_active, s.cache_ttl_seconds) == (False, False, 45)
    d = Settings.from_env({})
    assert (d.port, d.db_rw_port, d.db_name, d.redis_port, d.cache_enabled, d.cache_ttl_seconds) == (
        8080, 5432, "app", 6379, True, 30)
    assert d.db_ro_host is None and not d.cache_active  # no Redis host: no cache
    with pytest.raises(ValueError):
        Settings.from_env({"DEMOAPP_CACHE_ENABLED": "perhaps"})


def test_secrets_stay_out_of_strings() -> None:
    s = Settings.from_env(ENV)
    for text in (repr(s), s.conninfo("rw"), s.conninfo("ro")):
        assert "pg-pw-123" not in text and "redis-pw-456" not in text
    assert "host=shop-db-rw.ns.svc port=5433" in s.conninfo("rw")
    assert "target_session_attrs=read-write" in s.conninfo("rw")  # never a follower or a fenced leader
    assert "host=shop-db-ro.ns.svc" in s.conninfo("ro")
    assert "host=shop-db-rw.ns.svc" in Settings.from_env({**ENV, "DEMOAPP_DB_RO_HOST": ""}).conninfo("ro")


def test_breaker_backs_off_and_allows_one_trial() -> None:
    b = Breaker(base=0.05, cap=0.2, trial_timeout=0.05)
    assert b.allow() and b.closed
    b.failure()
    assert not b.allow() and not b.closed
    time.sleep(0.06)
    assert b.allow()  # the trial call
    assert not b.allow()  # only one at a time
    b.failure()  # the trial failed: open for longer (0.1 s)
    time.sleep(0.06)
    assert not b.allow()
    time.sleep(0.05)
    assert b.allow()
    b.success()
    assert b.closed and b.allow()


async def test_pool_replacement_policy() -> None:
    backend = Backend("rw", "host=127.0.0.1 port=1", "", 2, get_timeout=1.0)
    assert backend.should_replace(psycopg.OperationalError("server closed the connection"))
    assert backend.should_replace(psycopg.errors.ReadOnlySqlTransaction())
    assert not backend.should_replace(psycopg.errors.SerializationFailure())  # one transaction, not the link
    assert not backend.should_replace(psycopg.errors.DeadlockDetected())
    assert backend.should_replace(PoolTimeout())  # nothing has worked lately: the server is gone
    backend.ok_at = time.monotonic()
    assert not backend.should_replace(PoolTimeout())  # others succeed: overload, keep the connections


def test_request_hash_identifies_the_request() -> None:
    h = request_hash("POST", "/users", {"name": "a", "x": 1})
    assert h == request_hash("POST", "/users", {"x": 1, "name": "a"})  # key order does not matter
    assert h != request_hash("POST", "/users", {"name": "b", "x": 1})
    assert h != request_hash("POST", "/users/1/follow", {"name": "a", "x": 1})


def test_json_log_lines() -> None:
    record = logging.LogRecord("demoapp", logging.WARNING, __file__, 1, "pool %s", ("rw",), None)
    record.error = "OperationalError"
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "warning" and line["msg"] == "pool rw" and line["error"] == "OperationalError"
    assert line["ts"].endswith("Z")
