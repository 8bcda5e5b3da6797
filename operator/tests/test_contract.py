"""The connection contract's keys (build/secrets.py, docs/connecting.md): their format, any password carried
through intact, and the completion of Secrets that exist without them. Pure: no API, no server (the real
servers are operator/tests/integration/test_contract.py and test_cache_scripts.py)."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from archop.build import secrets, tls
from psycopg.conninfo import conninfo_to_dict

NS = "demo"
NASTY = ["0123abcd" * 6, "p@ss:w/rd?#%&=+ 'x\"\\ $HOME;", "ü€ unicode/ü", ":\\:\\\\", "%41%2F", "a b\tc"]


@pytest.mark.parametrize("password", NASTY)
def test_the_database_uris_carry_any_password(password: str) -> None:
    keys = secrets.database_keys("shop", NS, "app", password)
    for key, host in (("uri", "shop-db-rw.demo.svc"), ("ro-uri", "shop-db-ro.demo.svc")):
        # libpq's own reading of the URI: everything intact, verify-full against the mounted CA.
        assert conninfo_to_dict(keys[key]) == {
            "user": "app", "password": password, "host": host, "port": "5432", "dbname": "app",
            "sslmode": "verify-full", "sslrootcert": tls.CLIENT_CA_FILE}
        # And a generic URL parser's: the password is one percent-encoded user-info component.
        url = urlsplit(keys[key])
        assert (url.scheme, url.hostname, url.port, url.path) == ("postgresql", host, 5432, "/app")
        assert (unquote(url.username or ""), unquote(url.password or "")) == ("app", password)
    jdbc = urlsplit(keys["jdbc-uri"].removeprefix("jdbc:"))
    assert (jdbc.scheme, jdbc.hostname, jdbc.port, jdbc.path) == (
        "postgresql", "shop-db-rw.demo.svc", 5432, "/app")
    assert parse_qs(jdbc.query, keep_blank_values=True) == {
        "user": ["app"], "password": [password], "sslmode": ["verify-full"],
        "sslrootcert": [tls.CLIENT_CA_FILE]}
    assert (keys["host"], keys["ro-host"], keys["port"], keys["dbname"], keys["user"]) == (
        "shop-db-rw.demo.svc", "shop-db-ro.demo.svc", "5432", "app", "app")


def _pgpass_fields(line: str) -> list[str]:
    """A .pgpass line split as libpq does: `\\` escapes the next character, `:` separates."""
    fields, cur, escaped = [], "", False
    for ch in line:
        if escaped:
            cur, escaped = cur + ch, False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            fields, cur = [*fields, cur], ""
        else:
            cur += ch
    return [*fields, cur]


@pytest.mark.parametrize("password", NASTY)
def test_the_pgpass_lines_name_both_services(password: str) -> None:
    keys = secrets.database_keys("shop", NS, "app", password)
    assert keys["pgpass"].endswith("\n") and keys["pgpass"].count("\n") == 2
    assert [_pgpass_fields(line) for line in keys["pgpass"].splitlines()] == [
        ["shop-db-rw.demo.svc", "5432", "app", "app", password],
        ["shop-db-ro.demo.svc", "5432", "app", "app", password]]


@pytest.mark.parametrize("password", NASTY)
def test_the_redis_url_carries_any_password(password: str) -> None:
    keys = secrets.cache_keys("shop", NS, password)
    url = urlsplit(keys["url"])
    assert (url.scheme, url.hostname, url.port, url.path, url.username) == (
        "rediss", "shop-cache.demo.svc", 6379, "/0", "")
    assert unquote(url.password or "") == password
    assert (keys["host"], keys["port"]) == ("shop-cache.demo.svc", "6379")


def _read(name: str, data: dict[str, str], **meta: Any) -> dict[str, Any]:
    """A Secret as the API returns it: base64 data."""
    return {"metadata": {"name": name, "namespace": NS, **meta},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def _decode(patch: dict[str, str]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in patch.items()}


def test_an_old_secret_gets_every_contract_key_and_keeps_its_password() -> None:
    """Architectures from before the contract have N-db-app and N-cache with the password alone."""
    old_db = _read("shop-db-app", {"username": "app", "password": "0ld-pw"})
    patch = _decode(secrets.completion("shop", NS, old_db))
    assert patch == secrets.database_keys("shop", NS, "app", "0ld-pw")
    assert "password" not in patch and "username" not in patch  # never written: the database has them
    old_cache = _read("shop-cache", {"password": "0ld-cache-pw"})
    assert _decode(secrets.completion("shop", NS, old_cache)) == secrets.cache_keys(
        "shop", NS, "0ld-cache-pw")


def test_a_complete_secret_needs_nothing_and_a_changed_key_is_rewritten() -> None:
    (*_, db, cache) = secrets.build_secrets("shop", NS)
    assert secrets.completion("shop", NS, _read("shop-db-app", db["stringData"])) == {}
    assert secrets.completion("shop", NS, _read("shop-cache", cache["stringData"])) == {}
    edited = {**db["stringData"], "uri": "postgresql://elsewhere/app"}
    assert _decode(secrets.completion("shop", NS, _read("shop-db-app", edited))) == {
        "uri": db["stringData"]["uri"]}
    # The keys follow the Secret's password and user name as they are now (the database has those).
    rotated = {**db["stringData"], "password": "new-pw"}
    patch = _decode(secrets.completion("shop", NS, _read("shop-db-app", rotated)))
    assert set(patch) == {"uri", "ro-uri", "jdbc-uri", "pgpass"} and "new-pw" in patch["uri"]


def test_nothing_is_derived_without_a_password_or_for_other_secrets() -> None:
    assert secrets.completion("shop", NS, _read("shop-db-app", {"username": "app"})) == {}
    assert secrets.lacks_password("shop", _read("shop-db-app", {"username": "app"}))
    assert secrets.lacks_password("shop", {"metadata": {"name": "shop-cache"}, "data": {"password": "%%%"}})
    for other in ("shop-db-superuser", "shop-db-replication", "shop-ca", "other-db-app"):
        assert secrets.completion("shop", NS, _read(other, {"username": "u", "password": "p"})) == {}
        assert not secrets.lacks_password("shop", _read(other, {}))
