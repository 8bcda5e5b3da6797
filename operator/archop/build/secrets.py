"""The Secrets of an Architecture: database users and the Redis password, and the connection contract.

The passwords are generated once and created only if absent (apply.create_if_absent): regenerating a password
on every reconcile would lock the running database and cache out of their own credentials.

Two of them are also the connection contract (docs/connecting.md), like CloudNativePG's `-app` Secret:
N-db-app and N-cache carry, besides the password, every way to reach the server with it (host, port, URIs,
a .pgpass). Those keys are derived from the Secret's own user name and password, never the other way round:
a new Secret is created with them, and an existing one (from before the contract, or with a key someone
changed) gets them written by the reconcile (`completion`), without its password changing.

The password of those two may be changed by whoever manages the Secret (docs/connecting.md, "Rotation"). The
Secret records which password its servers were given last, as a keyed digest in annotation
APPLIED_ANNOTATION (`applied_record`); `password_state` compares it with the password it holds, and the
periodic check (handlers/passwords.py) carries a changed one into the servers before the derived keys follow.
The pods that read a password carry a revision of that record on their pod template (`PasswordRevisions`),
so a new record rolls them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import quote

from archop import names
from archop.build import content_hash, meta, tls
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

# On N-db-app and N-cache: which password their servers were given last (applied_record). Only a digest:
# the Secret holds the password itself, so the annotation tells its readers nothing new.
APPLIED_ANNOTATION = "archop.io/applied-password"
_RECORD_SCHEME = "hmac-sha256"
SALT_BYTES = 16


def generate_password() -> str:
    return secrets.token_hex(PASSWORD_BYTES)


def generate_salt() -> str:
    return secrets.token_hex(SALT_BYTES)


def applied_record(password: str, salt: str) -> str:
    """APPLIED_ANNOTATION's value once `password` is in the servers: `hmac-sha256:<salt>:<HMAC of the password
    keyed by the salt>`. Keyed by a random salt rather than a plain hash: the pod templates carry a revision
    of this record (`revision`), and whoever can read a Deployment but not the Secret cannot try guesses of
    a chosen password against it without the salt, which only the Secret holds. A fresh salt each time."""
    mac = hmac.new(salt.encode(), password.encode(), hashlib.sha256).hexdigest()
    return f"{_RECORD_SCHEME}:{salt}:{mac}"


def records(record: str, password: str) -> bool:
    """Whether `record` (an APPLIED_ANNOTATION value) was made from `password`."""
    scheme, _, rest = record.partition(":")
    salt = rest.partition(":")[0]
    if scheme != _RECORD_SCHEME or not salt:
        return False
    # As bytes: compare_digest refuses str with non-ASCII characters, and the annotation is anyone's to edit.
    return hmac.compare_digest(record.encode(), applied_record(password, salt).encode())


def revision(record: str | None) -> str | None:
    """What a pod template carries for a password record: a short hash of it (so of the salt too: see
    applied_record). None without a record."""
    return content_hash(record) if record else None


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


def password_of(secret: Mapping[str, Any]) -> str | None:
    """A Secret's password as read from the API (base64 decoded), if it has a readable one."""
    return _decoded(secret).get(PASSWORD) or None


def username_of(secret: Mapping[str, Any]) -> str:
    """N-db-app's database user: its `username`, else the one the Secrets are created with."""
    return _decoded(secret).get(USERNAME) or DB_USERS["app"]


def record_of(secret: Mapping[str, Any]) -> str | None:
    """The Secret's APPLIED_ANNOTATION, if any."""
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    return annotations.get(APPLIED_ANNOTATION) or None


class PasswordState(Enum):
    """Where a contract Secret's password stands against what its servers were given (APPLIED_ANNOTATION)."""

    APPLIED = "applied"  # the record is of this password: nothing to do
    # No record, and no derived key of another password: a Secret from before rotation existed (or from
    # before the contract: no keys at all), whose password is taken to be the servers'. Recorded as applied;
    # keys it lacks are written from it.
    UNRECORDED = "unrecorded"
    # The password is not the one recorded; or there is no record and a derived key holds another password
    # (the record was lost along with a change, say by replacing the Secret from an older copy): the servers
    # get this password, then the keys and the record follow it. Setting a password a server has already
    # changes nothing there.
    CHANGED = "changed"
    NO_PASSWORD = "no password"  # nothing to apply (the reconcile warns)


def password_state(arch: str, namespace: str, secret: Mapping[str, Any]) -> PasswordState:
    """The state of contract Secret `secret` (N-db-app or N-cache, as read from the API)."""
    password = password_of(secret)
    if not password:
        return PasswordState.NO_PASSWORD
    record = record_of(secret)
    if record is not None:
        return PasswordState.APPLIED if records(record, password) else PasswordState.CHANGED
    current = _decoded(secret)
    want = derived_keys(arch, namespace, str((secret.get("metadata") or {}).get("name") or ""), current) or {}
    stale = [key for key, value in want.items() if key in current and current[key] != value]
    return PasswordState.CHANGED if stale else PasswordState.UNRECORDED


def contract_secrets(arch: str) -> tuple[str, str]:
    """The Secrets whose password may be rotated: N-db-app, N-cache."""
    return names.db_secret(arch, "app"), names.cache(arch)


@dataclass(frozen=True)
class PasswordRevisions:
    """The revisions (`revision`) of the password records of N-db-app and N-cache: on the pod templates of
    the workloads that read those passwords, so that a new record rolls them. None: no record (no annotation
    on the template)."""

    database: str | None = None
    cache: str | None = None

    @classmethod
    def of(cls, arch: str, records_by_secret: Mapping[str, str | None]) -> PasswordRevisions:
        """From {Secret name: its record}."""
        db, cache = contract_secrets(arch)
        return cls(database=revision(records_by_secret.get(db)), cache=revision(records_by_secret.get(cache)))


def lacks_password(arch: str, secret: Mapping[str, Any]) -> bool:
    """A contract Secret (N-db-app, N-cache) without a readable password: nothing to derive its keys from."""
    name = (secret.get("metadata") or {}).get("name")
    return name in (names.db_secret(arch, "app"), names.cache(arch)) and not _decoded(secret).get(PASSWORD)


def _recorded(secret: dict[str, Any], salt: str) -> dict[str, Any]:
    """A new contract Secret with the record of its own password: the servers start with it (the database
    bootstraps the role from it, Redis reads it at start)."""
    record = applied_record(secret["stringData"][PASSWORD], salt)
    secret["metadata"]["annotations"] = {APPLIED_ANNOTATION: record}
    return secret


def build_secrets(arch: str, namespace: str, password: Callable[[], str] = generate_password,
                  salt: Callable[[], str] = generate_salt) -> list[dict]:
    """N-db-superuser, N-db-replication (username/password), N-db-app (username/password and the
    connection keys) and N-cache (password and the connection keys); the last two with their password's
    record (APPLIED_ANNOTATION)."""
    out = []
    for user, username in DB_USERS.items():
        data = {USERNAME: username, PASSWORD: password()}
        if user == "app":
            data.update(database_keys(arch, namespace, username, data[PASSWORD]))
        secret = _secret(arch, namespace, names.db_secret(arch, user), names.DATABASE, data)
        out.append(_recorded(secret, salt()) if user == "app" else secret)
    # Created even while the cache is disabled, so enabling it later needs no new credentials.
    cache_password = password()
    out.append(_recorded(_secret(arch, namespace, names.cache(arch), names.CACHE,
                                 {PASSWORD: cache_password, **cache_keys(arch, namespace, cache_password)}),
                         salt()))
    return out
