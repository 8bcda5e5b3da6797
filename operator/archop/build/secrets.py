"""The Secrets of an Architecture: database users and the Redis password.

They are generated once and created only if absent (apply.create_if_absent): regenerating a password on
every reconcile would lock the running database and cache out of their own credentials.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from archop import names
from archop.build import meta

# Database users, by the secret suffix names.db_secret() takes.
DB_USERS = {"superuser": "postgres", "replication": "replicator", "app": "app"}
PASSWORD_BYTES = 24  # 48 hex characters: safe in conninfo strings, URLs and shell words alike


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


def build_secrets(arch: str, namespace: str, password: Callable[[], str] = generate_password) -> list[dict]:
    """N-db-superuser, N-db-replication, N-db-app (username/password) and N-cache (password)."""
    out = [
        _secret(arch, namespace, names.db_secret(arch, user), names.DATABASE,
                {"username": username, "password": password()})
        for user, username in DB_USERS.items()
    ]
    # Created even while the cache is disabled, so enabling it later needs no new credentials.
    out.append(_secret(arch, namespace, names.cache(arch), names.CACHE, {"password": password()}))
    return out
