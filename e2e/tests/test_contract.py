"""The connection contract (docs/connecting.md) and the app tier's off switch (spec.app.enabled).

One Architecture: two app pods with the CDN sidecar, Redis, the Ingress, a database with one follower.

- N-db-app holds every key of the contract (host, port, dbname, user, password, uri, jdbc-uri, ro-host,
  ro-uri, pgpass), each derived from its user and password as documented; N-cache holds host, port,
  password and url. The app container gets the URLs by reference to those keys, never as values, and the
  CA where the URIs say it is.
- spec.app.enabled false prunes the whole app tier: its Deployment, Service, PodDisruptionBudget and
  NetworkPolicy, the CDN ConfigMap and the Ingress. The database, the cache and the Secrets stay, the same
  objects; AppReady says TierDisabled.
- With no app tier, a pod of your own (the Postgres image, labelled as the app tier so that the database's
  NetworkPolicy admits it, ConfigMap N-db-ca mounted where the URIs point) connects with `uri` to the leader
  and with `ro-uri` to a follower, over TLS verified against that CA (sslmode=verify-full).
- Enabling the app again brings every pruned object back, and the site takes writes and serves reads.

The Secrets' values are compared, never printed: the failures name the keys that are wrong.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest
from archop.build.secrets import cache_keys, database_keys
from conftest import (
    condition,
    get_json,
    http_call,
    kubectl,
    secret_data,
    serving_stack,
    wait_for,
    wait_until_serving,
)

from bench.failover.harness import Arch, _client_pod, _secret_ref

NAME = "ctr"
ARCH = "architectures.archop.io"
READY_TIMEOUT = 600
PRUNE_TIMEOUT = 180
CA_DIR = "/etc/archop-db-ca"  # where the URIs' sslrootcert points (docs/connecting.md)
CLIENT = "own-client"
DB_KEYS = {"username", "password", "host", "port", "dbname", "user", "uri", "jdbc-uri", "ro-host", "ro-uri",
           "pgpass"}
CACHE_KEYS = {"password", "host", "port", "url"}
# The app tier: what spec.app.enabled false removes.
APP_TIER = [("deployment", f"{NAME}-app"), ("service", f"{NAME}-app"), ("poddisruptionbudget", f"{NAME}-app"),
            ("networkpolicy", f"{NAME}-app"), ("configmap", f"{NAME}-cdn"),
            ("ingress.networking.k8s.io", f"{NAME}-ingress")]
# What stays without it.
STAYS = [("statefulset", f"{NAME}-db"), ("service", f"{NAME}-db-rw"), ("service", f"{NAME}-db-ro"),
         ("networkpolicy", f"{NAME}-db"), ("deployment", f"{NAME}-cache"), ("service", f"{NAME}-cache"),
         ("networkpolicy", f"{NAME}-cache"), ("secret", f"{NAME}-db-app"), ("secret", f"{NAME}-cache"),
         ("configmap", f"{NAME}-db-ca")]


@pytest.fixture(scope="module")
def site(namespace: str) -> str:
    return serving_stack(namespace, NAME, READY_TIMEOUT)


def failed(checks: dict[str, bool]) -> list[str]:
    """The names of the checks that did not hold."""
    return sorted(name for name, ok in checks.items() if not ok)


def test_the_database_secret_holds_the_contract(namespace: str, site: str) -> None:
    data = secret_data(namespace, f"{NAME}-db-app")
    assert set(data) >= DB_KEYS, f"missing keys: {sorted(DB_KEYS - set(data))}"
    host, ro_host = f"{NAME}-db-rw.{namespace}.svc", f"{NAME}-db-ro.{namespace}.svc"
    assert (data["host"], data["ro-host"], data["port"], data["dbname"]) == (host, ro_host, "5432", "app")
    assert data["user"] == data["username"] == "app"
    password = data["password"]
    uri, ro_uri = urllib.parse.urlsplit(data["uri"]), urllib.parse.urlsplit(data["ro-uri"])
    query = dict(urllib.parse.parse_qsl(uri.query))
    pgpass = data["pgpass"].splitlines()
    want = database_keys(NAME, namespace, data["username"], password)
    checks = {
        "password: 48 hex characters": len(password) == 48 and all(c in "0123456789abcdef" for c in password),
        "uri: postgresql://app@host:5432/app": (uri.scheme, uri.username, uri.hostname, uri.port, uri.path)
        == ("postgresql", "app", host, 5432, "/app"),
        "uri: the password": urllib.parse.unquote(uri.password or "") == password,
        "uri: verify-full against the mounted CA": query == {"sslmode": "verify-full",
                                                             "sslrootcert": f"{CA_DIR}/ca.crt"},
        "ro-uri: as uri, with ro-host": ro_uri._replace(netloc=ro_uri.netloc.replace(ro_host, host)) == uri,
        "jdbc-uri: host, port, database, user, password, verify-full": data["jdbc-uri"] == (
            f"jdbc:postgresql://{host}:5432/app?user=app&password={password}&sslmode=verify-full"
            f"&sslrootcert={CA_DIR}/ca.crt"),
        "pgpass: a line for host and one for ro-host": pgpass == [f"{host}:5432:app:app:{password}",
                                                                  f"{ro_host}:5432:app:app:{password}"],
        "every derived key as build/secrets.database_keys makes it": all(
            data[k] == v for k, v in want.items()),
    }
    assert not failed(checks), f"N-db-app: {failed(checks)}"


def test_the_cache_secret_holds_the_contract(namespace: str, site: str) -> None:
    data = secret_data(namespace, f"{NAME}-cache")
    assert set(data) >= CACHE_KEYS, f"missing keys: {sorted(CACHE_KEYS - set(data))}"
    host = f"{NAME}-cache.{namespace}.svc"
    assert (data["host"], data["port"]) == (host, "6379")
    password = data["password"]
    url = urllib.parse.urlsplit(data["url"])
    checks = {
        "password: 48 hex characters": len(password) == 48 and all(c in "0123456789abcdef" for c in password),
        "url: rediss://host:6379/0 (TLS)": (url.scheme, url.username, url.hostname, url.port, url.path)
        == ("rediss", "", host, 6379, "/0"),
        "url: the password": urllib.parse.unquote(url.password or "") == password,
        "every derived key as build/secrets.cache_keys makes it": all(
            data[k] == v for k, v in cache_keys(NAME, namespace, password).items()),
    }
    assert not failed(checks), f"N-cache: {failed(checks)}"


def test_the_app_gets_the_contract_by_reference(namespace: str, site: str) -> None:
    dep = get_json("deployment", f"{NAME}-app", namespace=namespace)
    pod = dep["spec"]["template"]["spec"]
    app = next(c for c in pod["containers"] if c["name"] == "app")
    env = {e["name"]: e for e in app.get("env") or []}
    refs = {name: env[name].get("valueFrom", {}).get("secretKeyRef")
            for name in ("DATABASE_URL", "DATABASE_RO_URL", "REDIS_URL") if name in env}
    assert refs == {"DATABASE_URL": {"name": f"{NAME}-db-app", "key": "uri"},
                    "DATABASE_RO_URL": {"name": f"{NAME}-db-app", "key": "ro-uri"},
                    "REDIS_URL": {"name": f"{NAME}-cache", "key": "url"}}, refs
    assert env["ARCHOP_CA_FILE"].get("value") == f"{CA_DIR}/ca.crt"
    mounts = {m["mountPath"]: m for m in app.get("volumeMounts") or []}
    assert mounts[CA_DIR].get("readOnly") is True
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[CA_DIR]["name"])
    assert volume.get("configMap", {}).get("name") == f"{NAME}-db-ca", volume
    passwords = [secret_data(namespace, s)["password"] for s in (f"{NAME}-db-app", f"{NAME}-cache")]
    in_manifest = [p in json.dumps(dep) for p in passwords]
    assert not any(in_manifest), "a password is in the app Deployment"


def set_app_enabled(namespace: str, enabled: bool) -> None:
    kubectl("patch", ARCH, NAME, "-n", namespace, "--type", "merge", "-p",
            json.dumps({"spec": {"app": {"enabled": enabled}}}))


def uids(namespace: str, objects: list[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
    out = {}
    for kind, name in objects:
        obj = get_json(kind, name, namespace=namespace, missing_ok=True)
        out[(kind, name)] = obj["metadata"]["uid"] if obj else None
    return out


def app_condition(namespace: str, disabled: bool) -> dict[str, Any]:
    """AppReady once it is True for the tier disabled (reason TierDisabled) or for running pods; else {}."""
    cond = condition(get_json(ARCH, NAME, namespace=namespace), "AppReady") or {}
    ok = cond.get("status") == "True" and (cond.get("reason") == "TierDisabled") == disabled
    return cond if ok else {}


def is_ready(namespace: str) -> bool:
    return (condition(get_json(ARCH, NAME, namespace=namespace), "Ready") or {}).get("status") == "True"


@pytest.fixture(scope="module")
def disabled(namespace: str, site: str) -> dict[tuple[str, str], str | None]:
    """spec.app.enabled false, once every object of the app tier and every app pod is gone. Returns the
    uids of what stays, as they were before."""
    stays = uids(namespace, STAYS)
    assert all(stays.values()), f"missing before: {[o for o, uid in stays.items() if not uid]}"
    set_app_enabled(namespace, False)

    def pruned() -> bool:
        left = [o for o, uid in uids(namespace, APP_TIER).items() if uid]
        pods = get_json("pods", "-l", f"archop.io/architecture={NAME},app.kubernetes.io/component=app",
                        namespace=namespace)["items"]
        return not left and not pods

    wait_for(pruned, PRUNE_TIMEOUT, "the app tier's objects and pods gone")
    return stays


def test_disabling_the_app_prunes_its_tier_only(namespace: str, disabled: dict[tuple[str, str], str | None]
                                                ) -> None:
    assert uids(namespace, STAYS) == disabled, "an object the app tier does not own was replaced or removed"
    wait_for(lambda: app_condition(namespace, disabled=True), 120, "AppReady=True with reason TierDisabled")
    wait_for(lambda: is_ready(namespace), 120, "Ready=True without an app tier")


def client_sql(namespace: str, variable: str, sql: str) -> str:
    """psql in the client pod with the connection string in `variable` (a contract key by reference)."""
    script = ('for d in /usr/lib/postgresql/*/bin; do [ -d "$d" ] && PATH="$d:$PATH"; done; '
              f'PGCONNECT_TIMEOUT=5 psql "${variable}" -XAtc "{sql}"')
    return kubectl("exec", "-n", namespace, CLIENT, "--", "bash", "-c", script, timeout=60).stdout.strip()


def test_a_pod_of_your_own_connects_with_the_contract(namespace: str,
                                                      disabled: dict[tuple[str, str], str | None]) -> None:
    """The uri reaches the leader and the ro-uri a follower, both over TLS verified against N-db-ca."""
    env = {"DATABASE_URL": _secret_ref(f"{NAME}-db-app", "uri"),
           "DATABASE_RO_URL": _secret_ref(f"{NAME}-db-app", "ro-uri")}
    sql = "select pg_is_in_recovery(), ssl, current_user from pg_stat_ssl where pid = pg_backend_pid()"
    try:
        _client_pod(Arch(name=NAME, namespace=namespace, followers=1), CLIENT, "exec sleep infinity", env,
                    config_maps={f"{NAME}-db-ca": CA_DIR})
        assert client_sql(namespace, "DATABASE_URL", sql) == "f|t|app"
        wait_for(lambda: client_sql(namespace, "DATABASE_RO_URL", sql) == "t|t|app", 60,
                 "ro-uri reaching a follower over TLS")
    finally:
        # Labelled as the app tier: gone before the app comes back, or its Service would route to it.
        kubectl("delete", "pod", CLIENT, "-n", namespace, "--ignore-not-found", "--wait=true", timeout=90)


def test_enabling_the_app_brings_it_back(namespace: str, site: str,
                                         disabled: dict[tuple[str, str], str | None]) -> None:
    kubectl("delete", "pod", CLIENT, "-n", namespace, "--ignore-not-found", "--wait=true", timeout=90)
    set_app_enabled(namespace, True)
    wait_for(lambda: all(uids(namespace, APP_TIER).values()), PRUNE_TIMEOUT, "every object of the app tier")
    kubectl("rollout", "status", f"deployment/{NAME}-app", "-n", namespace, "--timeout=300s", timeout=330)
    wait_until_serving(site, 300)
    status, _, user = http_call(site, "POST", "/users", {"name": "back"})
    assert status == 201, (status, user)
    status, _, same = http_call(site, "GET", f"/users/{user['id']}", headers={"X-Consistency": "strong"})
    assert status == 200 and same["id"] == user["id"], (status, same)
    cond = wait_for(lambda: app_condition(namespace, disabled=False), 120, "AppReady=True for running pods")
    assert cond["message"] == "2/2 app pods ready", cond
    wait_for(lambda: is_ready(namespace), 120, "Ready=True with the app tier back")
