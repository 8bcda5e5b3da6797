"""Pure units: the env contract, conninfo, the Redis breaker, pool replacement policy, JSON logs, consistency
tokens."""

from __future__ import annotations

import json
import logging
import time

import psycopg
import pytest
from demoapp.cache import Breaker, decode, encode, tls_options
from demoapp.config import Settings
from demoapp.consistency import (
    BadToken,
    Consistency,
    Freshness,
    Lsn,
    Versioned,
    cookie_header,
    highest_token,
)
from demoapp.db import Backend, Pool
from demoapp.jsonlog import JsonFormatter
from demoapp.repo import Position, position, request_hash
from psycopg_pool import PoolTimeout

# The connection contract as the operator gives it (docs/connecting.md), here with plain TCP, plus the knobs.
ENV = {
    "DEMOAPP_PORT": "9090",
    "DATABASE_URL": "postgresql://app:pg-pw-123@shop-db-rw.ns.svc:5433/app",
    "DATABASE_RO_URL": "postgresql://app:pg-pw-123@shop-db-ro.ns.svc:5433/app",
    "REDIS_URL": "redis://:redis-pw-456@shop-cache.ns.svc:6380/0", "DEMOAPP_CACHE_ENABLED": "false",
    "DEMOAPP_CACHE_TTL_SECONDS": "45", "DEMOAPP_RYW_WAIT_MS": "20",
}
# The same with what the operator puts in the URLs: TLS, verified against the mounted CA.
CA = "/etc/archop-db-ca/ca.crt"
TLS_ENV = {
    **ENV,
    "DATABASE_URL": f"{ENV['DATABASE_URL']}?sslmode=verify-full&sslrootcert={CA}",
    "DATABASE_RO_URL": f"{ENV['DATABASE_RO_URL']}?sslmode=verify-full&sslrootcert={CA}",
    "REDIS_URL": "rediss://:redis-pw-456@shop-cache.ns.svc:6380/0", "ARCHOP_CA_FILE": CA,
}


def test_env_contract() -> None:
    s = Settings.from_env(ENV)
    assert (s.port, s.db_rw_host, s.db_ro_host, s.db_rw_port, s.db_ro_port) == (
        9090, "shop-db-rw.ns.svc", "shop-db-ro.ns.svc", 5433, 5433)
    assert (s.db_name, s.db_user, s.db_password) == ("app", "app", "pg-pw-123")
    assert (s.redis_host, s.redis_port, s.redis_password, s.redis_db) == ("shop-cache.ns.svc", 6380,
                                                                          "redis-pw-456", 0)
    assert (s.cache_enabled, s.cache_active, s.cache_ttl_seconds, s.ryw_wait_ms) == (False, False, 45, 20)
    d = Settings.from_env({})
    assert (d.port, d.db_rw_port, d.db_name, d.redis_port, d.cache_enabled, d.cache_ttl_seconds) == (
        8080, 5432, "app", 6379, True, 30)
    assert d.ryw_wait_ms == 50
    assert Settings.from_env({"DEMOAPP_RYW_WAIT_MS": "-5"}).ryw_wait_ms == 0  # 0: never wait for a follower
    assert d.db_ro_host is None and not d.cache_active  # no REDIS_URL: no cache
    on = Settings.from_env({k: v for k, v in ENV.items() if k != "DEMOAPP_CACHE_ENABLED"})
    assert on.cache_active  # REDIS_URL alone turns the cache on
    with pytest.raises(ValueError):
        Settings.from_env({"DEMOAPP_CACHE_ENABLED": "perhaps"})


def test_the_urls_are_decoded_as_the_contract_encodes_them() -> None:
    """Any character in a password survives the URLs (the contract percent-encodes them); a user name and a
    database number in REDIS_URL are used too."""
    pw = "p@ss:w/rd?#%&=+ 'x\\"
    enc = "p%40ss%3Aw%2Frd%3F%23%25%26%3D%2B%20%27x%5C"
    s = Settings.from_env({"DATABASE_URL": f"postgresql://app:{enc}@rw.ns.svc:5432/app",
                           "REDIS_URL": f"rediss://cacheuser:{enc}@cache.ns.svc/3"})
    assert (s.db_password, s.redis_password, s.redis_username, s.redis_port, s.redis_db) == (
        pw, pw, "cacheuser", 6379, 3)
    assert s.db_ro_host is None and "host=rw.ns.svc" in s.conninfo("ro")  # no DATABASE_RO_URL: reads go to rw
    assert pw not in repr(s) and enc not in repr(s)


@pytest.mark.parametrize(("env", "fragment"), [
    ({"DATABASE_URL": "mysql://app:pw@db/app"}, "DATABASE_URL is not a PostgreSQL"),
    ({"DATABASE_URL": "postgresql:///app"}, "DATABASE_URL names no host"),
    ({"DATABASE_RO_URL": "postgresql://app:pw@ro/app"}, "DATABASE_RO_URL is set without DATABASE_URL"),
    ({"DATABASE_URL": "postgresql://app:pw@rw/app", "DATABASE_RO_URL": "postgresql://app:other@ro/app"},
     "DATABASE_RO_URL must have the password of DATABASE_URL"),
    ({"REDIS_URL": "http://cache:6379"}, "REDIS_URL is not a redis://"),
    ({"REDIS_URL": "redis://cache:port/0"}, "REDIS_URL has a port"),
])
def test_bad_urls_are_refused_without_quoting_them(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as err:
        Settings.from_env(env)
    assert "pw" not in str(err.value) and "other" not in str(err.value)


def test_secrets_stay_out_of_strings() -> None:
    for s in (Settings.from_env(ENV), Settings.from_env(TLS_ENV)):
        for text in (repr(s), s.conninfo("rw"), s.conninfo("ro"), s.redis_url):
            assert "pg-pw-123" not in text and "redis-pw-456" not in text
        assert "host=shop-db-rw.ns.svc port=5433" in s.conninfo("rw")
        assert "target_session_attrs=read-write" in s.conninfo("rw")  # never a follower or a fenced leader
        assert "host=shop-db-ro.ns.svc" in s.conninfo("ro")
    assert "host=shop-db-rw.ns.svc" in Settings.from_env({**ENV, "DATABASE_RO_URL": ""}).conninfo("ro")


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
    backend = Backend(Pool.RW, "host=127.0.0.1 port=1", "", 2, get_timeout=1.0)
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


def test_lsn_parses_prints_and_orders_as_one_64_bit_number() -> None:
    assert Lsn.parse("0/16B3740") == Lsn(0x16B3740)
    assert Lsn.parse("1/0") == Lsn(1 << 32)
    assert Lsn.parse(" ffffffff/ffffffff ") == Lsn(2**64 - 1)
    assert str(Lsn.parse("a/00000b1c")) == "A/B1C"  # Postgres' own spelling: %X/%X
    # The halves are not compared as strings or one by one in the wrong order.
    assert Lsn.parse("0/FFFFFFFF") < Lsn.parse("1/0") < Lsn.parse("1/1") < Lsn.parse("2/0")
    assert Lsn.parse("0/9") < Lsn.parse("0/10")  # hex, not text: 9 < 0x10
    assert max(Lsn.parse("0/20"), Lsn.parse("0/1F")) == Lsn(0x20)
    for bad in ("", "16B3740", "0/", "/1", "0/123456789", "123456789/0", "0x1/2", "0/1/2", "0/G", "-1/0",
                "0 /1", "0/1;"):
        with pytest.raises(ValueError):
            Lsn.parse(bad)


def test_highest_token_takes_the_newest_and_names_a_bad_one() -> None:
    assert highest_token({"h": None, "a": None, "c": None}) is None
    assert highest_token({"h": "0/10", "a": None, "c": "0/F"}) == Lsn(0x10)
    assert highest_token({"h": "0/10", "a": "1/0", "c": "0/F"}) == Lsn(1 << 32)
    with pytest.raises(BadToken) as exc:
        highest_token({"X-Min-LSN header": "0/10", "min_lsn argument": "yesterday"})
    assert exc.value.source == "min_lsn argument"
    assert str(exc.value) == ("min_lsn argument must be a WAL position like 0/16B3740 (as in X-Commit-LSN), "
                              "got 'yesterday'")
    with pytest.raises(BadToken):
        highest_token({"h": ""})  # present but empty is a client bug too


def test_freshness_levels() -> None:
    token = Lsn(7)
    assert Freshness.of(strong=False, token=None) == Freshness(Consistency.EVENTUAL)
    assert Freshness.of(strong=False, token=token) == Freshness(Consistency.READ_YOUR_WRITES, token)
    assert Freshness.of(strong=True, token=token) == Freshness(Consistency.STRONG)  # the leader has it all


def test_commit_cookie() -> None:
    assert cookie_header(Lsn.parse("0/16B3740")) == (
        "commit_lsn=0/16B3740; Max-Age=60; Path=/; HttpOnly; SameSite=Lax")


def test_cache_entries_carry_their_position() -> None:
    entry = Versioned({"id": 1, "name": "ann"}, Lsn.parse("3/A0"))
    raw = encode(entry)
    assert raw == '{"lsn":"3/A0","value":{"id":1,"name":"ann"}}'
    assert decode(raw) == entry and decode(raw.encode()) == entry


def test_position_rows() -> None:
    assert position((True, "0/3000148")) == Position(True, Lsn(0x3000148))
    assert position((False, "1/0")) == Position(False, Lsn(1 << 32))
    assert position((True, None)) == Position(True, Lsn(0))  # a follower that has replayed nothing yet


def test_conninfo_verifies_the_database_when_told() -> None:
    s = Settings.from_env(TLS_ENV)
    for role in ("rw", "ro"):
        assert s.conninfo(role).endswith(f" sslmode=verify-full sslrootcert={CA}")
    assert "sslmode" not in Settings.from_env(ENV).conninfo("rw")  # not in the URL: libpq's defaults


def test_redis_tls_when_told() -> None:
    s = Settings.from_env(TLS_ENV)
    assert (s.redis_tls, s.redis_ca_file) == (True, CA)
    assert s.redis_url == "rediss://shop-cache.ns.svc:6380"  # no password in it
    # Verified against the CA file, and the certificate must name the host dialled.
    assert tls_options(s) == {"ssl": True, "ssl_ca_certs": CA,
                              "ssl_cert_reqs": "required", "ssl_check_hostname": True}
    plain = Settings.from_env({**ENV, "ARCHOP_CA_FILE": CA})  # redis://: plain TCP (the local tests' Redis)
    assert (plain.redis_tls, plain.redis_ca_file, plain.redis_url) == (False, None, "redis://shop-cache.ns.svc:6380")
    assert tls_options(plain) == {}
    system = Settings.from_env({**TLS_ENV, "ARCHOP_CA_FILE": ""})  # no CA file: the system's CAs
    assert system.redis_tls and system.redis_ca_file is None
