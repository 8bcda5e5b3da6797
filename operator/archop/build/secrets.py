"""The Secrets of an Architecture: database users and the Redis password, and the connection contract.

The passwords are generated once and created only if absent (apply.create_if_absent): regenerating a password
on every reconcile would lock the running database and cache out of their own credentials.

Two of them are also the connection contract (docs/connecting.md), like CloudNativePG's `-app` Secret:
N-db-app and N-cache carry, besides the password, every way to reach the server with it (host, port, URIs,
a .pgpass). Those keys are derived from the Secret's own user name and password, never the other way round:
a new Secret is created with them, and an existing one (from before the contract, or with a key someone
changed) gets them written by the reconcile (`completion`), without its password ever changing.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from archop import names
from archop.build import meta, tls
from archop.build.cache import PORT as REDIS_PORT
from archop.build.database import PORT as DB_PORT

# Database users, by the secret suffix names.db_secret() takes.
DB_USERS = {"superuser": "postgres", "replication": "replicator", "app": "app"}
PASSWORD_BYTES = 24  # 48 hex characters: safe in conninfo strings, URLs and shell words alike
DB_NAME = "app"  # the app user's database (start.sh, APP_DB): the app user owns it

# The keys the Secrets are created with; the contract's other keys are derived from them.
USERNAME, PASSWORD = "username", "password"
# The contract's keys (docs/connecting.md). N-db-app:
HOST, PORT, DBNAME, USER = "host", "port", "dbname", "user"
URI, JDBC_URI, RO_HOST, RO_URI, PGPASS = "uri", "jdbc-uri", "ro-host", "ro-uri", "pgpass"
# N-cache (also HOST, PORT, PASSWORD):
URL = "url"
# Postgres clients verify the server's name against the Architecture's CA, mounted in the app pods here.
SSL_PARAMS = f"sslmode=verify-full&sslrootcert={quote(tls.CLIENT_CA_FILE, safe='/')}"
REDIS_DB = 0


def generate_password() -> str:
    return secrets.token_hex(PASSWORD_BYTES)


def _secret(arch: str, namespace: str, obj_name: str, component: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta(arch, namespace, obj_name, component),
        "type": "Opaque",
        "stringData": data,
    }


def _enc(text: str) -> str:
    """One URI component (user info, path segment or query value): everything but unreserved characters
    percent-encoded, so any password survives (they are hex today)."""
    return quote(text, safe="")


def _pgpass_field(text: str) -> str:
    """A .pgpass field: `:` and `\\` escaped with `\\` (libpq's rule)."""
    return text.replace("\\", "\\\\").replace(":", "\\:")


def database_keys(arch: str, namespace: str, username: str, password: str) -> dict[str, str]:
    """The contract keys of N-db-app derived from its user name and password: the read-write Service
    (N-db-rw, the leader) and the read-only one (N-db-ro, the followers), each by its name in the server
    certificate (build/tls.py), as URIs that verify it, and the same as .pgpass lines."""
    rw = names.service_host(names.db_rw(arch), namespace)
    ro = names.service_host(names.db_ro(arch), namespace)
    port = str(DB_PORT)
    auth = f"{_enc(username)}:{_enc(password)}"

    def uri(host: str) -> str:
        return f"postgresql://{auth}@{host}:{port}/{_enc(DB_NAME)}?{SSL_PARAMS}"

    def pgpass(host: str) -> str:
        return ":".join(_pgpass_field(f) for f in (host, port, DB_NAME, username, password)) + "\n"

    return {
        HOST: rw,
        PORT: port,
        DBNAME: DB_NAME,
        USER: username,
        URI: uri(rw),
        JDBC_URI: (f"jdbc:postgresql://{rw}:{port}/{_enc(DB_NAME)}?user={_enc(username)}"
                   f"&password={_enc(password)}&{SSL_PARAMS}"),
        RO_HOST: ro,
        RO_URI: uri(ro),
        PGPASS: pgpass(rw) + pgpass(ro),
    }


def cache_keys(arch: str, namespace: str, password: str) -> dict[str, str]:
    """The contract keys of N-cache derived from its password: the Service and a rediss:// URL (TLS only:
    Redis has no plain port; the client verifies it against the CA, build/cache.py)."""
    host = names.service_host(names.cache(arch), namespace)
    return {HOST: host, PORT: str(REDIS_PORT), URL: f"rediss://:{_enc(password)}@{host}:{REDIS_PORT}/{REDIS_DB}"}


def derived_keys(arch: str, namespace: str, secret_name: str, data: Mapping[str, str]
                 ) -> dict[str, str] | None:
    """The contract keys Secret `secret_name` should hold, from its own user name and password as they are
    (`data`, decoded). None when it is not a contract Secret, or has no password to derive them from."""
    password = data.get(PASSWORD)
    if not password:
        return None
    if secret_name == names.db_secret(arch, "app"):
        return database_keys(arch, namespace, data.get(USERNAME) or DB_USERS["app"], password)
    if secret_name == names.cache(arch):
        return cache_keys(arch, namespace, password)
    return None


def _decoded(secret: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's data as read from the API (base64), decoded; keys that do not decode are left out."""
    out = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, ValueError, TypeError):
            continue
    return out


def completion(arch: str, namespace: str, secret: Mapping[str, Any]) -> dict[str, str]:
    """The `data` patch (base64 values) that brings an existing Secret's contract keys in line with its
    password: the keys that are missing or differ. Empty when there is nothing to write (complete, not a
    contract Secret, or no password). Never the user name or the password themselves."""
    name = str((secret.get("metadata") or {}).get("name") or "")
    current = _decoded(secret)
    want = derived_keys(arch, namespace, name, current)
    if want is None:
        return {}
    return {k: base64.b64encode(v.encode()).decode() for k, v in sorted(want.items()) if current.get(k) != v}


def lacks_password(arch: str, secret: Mapping[str, Any]) -> bool:
    """A contract Secret (N-db-app, N-cache) without a readable password: nothing to derive its keys from."""
    name = (secret.get("metadata") or {}).get("name")
    return name in (names.db_secret(arch, "app"), names.cache(arch)) and not _decoded(secret).get(PASSWORD)


def build_secrets(arch: str, namespace: str, password: Callable[[], str] = generate_password) -> list[dict]:
    """N-db-superuser, N-db-replication (username/password), N-db-app (username/password and the
    connection keys) and N-cache (password and the connection keys)."""
    out = []
    for user, username in DB_USERS.items():
        data = {USERNAME: username, PASSWORD: password()}
        if user == "app":
            data.update(database_keys(arch, namespace, username, data[PASSWORD]))
        out.append(_secret(arch, namespace, names.db_secret(arch, user), names.DATABASE, data))
    # Created even while the cache is disabled, so enabling it later needs no new credentials.
    cache_password = password()
    out.append(_secret(arch, namespace, names.cache(arch), names.CACHE,
                       {PASSWORD: cache_password, **cache_keys(arch, namespace, cache_password)}))
    return out
