"""Settings from the environment (see README.md).

The connections come only from the operator's connection contract, as for any app on the stack
(docs/connecting.md): DATABASE_URL (the leader), DATABASE_RO_URL (the followers), REDIS_URL (the cache, absent
while it is off) and ARCHOP_CA_FILE (the CA that REDIS_URL's server is verified against; the database URLs
name it themselves, sslrootcert=). The DEMOAPP_* variables are this app's own knobs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict, make_conninfo


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def parse_database_url(url: str, what: str) -> dict[str, Any]:
    """A postgresql:// URI (or a libpq conninfo) as libpq reads it: host, port, dbname, user, password,
    sslmode, sslrootcert, with the percent-encoding undone. ValueError names the variable, never its value
    (it holds the password)."""
    try:
        parts = conninfo_to_dict(url)
    except ProgrammingError:
        raise ValueError(f"{what} is not a PostgreSQL connection URI") from None
    if not parts.get("host"):
        raise ValueError(f"{what} names no host")
    return parts


def parse_redis_url(url: str, what: str) -> dict[str, Any]:
    """A redis:// or rediss:// (TLS) URL: host, port (6379), user name and password (percent-decoded), db."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"{what} is not a redis:// or rediss:// URL with a host")
    try:
        port = parts.port or 6379
        db = int(parts.path.strip("/") or 0)
    except ValueError:
        raise ValueError(f"{what} has a port or database number that is not a number") from None
    return {"host": parts.hostname, "port": port, "tls": parts.scheme == "rediss", "db": db,
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else ""}


@dataclass(frozen=True)
class Settings:
    port: int = 8080
    metrics_port: int = 9102  # /metrics only; the app's Service does not expose it
    host: str = "0.0.0.0"
    db_rw_host: str = "127.0.0.1"
    db_ro_host: str | None = None  # None: reads go to rw
    db_rw_port: int = 5432
    db_ro_port: int = 5432
    db_name: str = "app"
    db_user: str = "app"
    db_password: str = field(default="", repr=False)  # repr=False: never in logs or tracebacks
    # TLS to the database: DATABASE_URL says verify-full and the CA file it mounts; unset, libpq's defaults.
    db_sslmode: str | None = None
    db_sslrootcert: str | None = None
    redis_host: str | None = None  # None: no cache
    redis_port: int = 6379
    redis_username: str | None = None  # an ACL user; None: the default user (requirepass)
    redis_password: str = field(default="", repr=False)
    redis_db: int = 0
    # TLS to Redis (a rediss:// REDIS_URL), verified against the CA file (ARCHOP_CA_FILE, the one the
    # operator mounts; None: the system's CAs); the certificate must name redis_host. False: plain TCP (the
    # local tests').
    redis_tls: bool = False
    redis_ca_file: str | None = None
    cache_enabled: bool = True  # DEMOAPP_CACHE_ENABLED: false keeps away from Redis even with REDIS_URL
    cache_ttl_seconds: int = 30
    # Failover: the whole retry of one request stays under this; the operator promotes within seconds.
    retry_budget_seconds: float = 8.0
    # Read-your-writes: how long a read with a token waits for a follower to replay it before asking the
    # leader. A healthy follower replays a commit within a few ms; the wait holds no connection.
    ryw_wait_ms: int = 50
    pool_max_size: int = 10
    db_connect_timeout: int = 2

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """DATABASE_URL, DATABASE_RO_URL and REDIS_URL (the contract), ARCHOP_CA_FILE, and the DEMOAPP_*
        knobs. Without DATABASE_URL the defaults (a local Postgres) hold; without REDIS_URL there is no
        cache."""
        e = os.environ if env is None else env
        d = cls()
        db: dict[str, Any] = {}
        if e.get("DATABASE_URL"):
            rw = parse_database_url(e["DATABASE_URL"], "DATABASE_URL")
            db = {"db_rw_host": rw["host"], "db_rw_port": int(rw.get("port") or 5432),
                  "db_ro_port": int(rw.get("port") or 5432), "db_name": rw.get("dbname") or d.db_name,
                  "db_user": rw.get("user") or d.db_user, "db_password": rw.get("password") or "",
                  "db_sslmode": rw.get("sslmode") or None, "db_sslrootcert": rw.get("sslrootcert") or None}
            if e.get("DATABASE_RO_URL"):
                ro = parse_database_url(e["DATABASE_RO_URL"], "DATABASE_RO_URL")
                # One pool per Service, one set of credentials for both: the contract gives the same user.
                for key in ("dbname", "user", "password", "sslmode", "sslrootcert"):
                    if ro.get(key) != rw.get(key):
                        raise ValueError(f"DATABASE_RO_URL must have the {key} of DATABASE_URL")
                db.update(db_ro_host=ro["host"], db_ro_port=int(ro.get("port") or 5432))
        elif e.get("DATABASE_RO_URL"):
            raise ValueError("DATABASE_RO_URL is set without DATABASE_URL")
        cache: dict[str, Any] = {}
        if e.get("REDIS_URL"):
            r = parse_redis_url(e["REDIS_URL"], "REDIS_URL")
            cache = {"redis_host": r["host"], "redis_port": r["port"], "redis_username": r["username"],
                     "redis_password": r["password"], "redis_db": r["db"], "redis_tls": r["tls"],
                     "redis_ca_file": (e.get("ARCHOP_CA_FILE") or None) if r["tls"] else None}
        return cls(
            port=int(e.get("DEMOAPP_PORT", d.port)),
            metrics_port=int(e.get("DEMOAPP_METRICS_PORT", d.metrics_port)),
            host=e.get("DEMOAPP_HOST", d.host),
            **db,
            **cache,
            cache_enabled=_bool(e.get("DEMOAPP_CACHE_ENABLED", "true")),
            cache_ttl_seconds=max(1, int(e.get("DEMOAPP_CACHE_TTL_SECONDS", d.cache_ttl_seconds))),
            retry_budget_seconds=float(e.get("DEMOAPP_RETRY_BUDGET_SECONDS", d.retry_budget_seconds)),
            ryw_wait_ms=max(0, int(e.get("DEMOAPP_RYW_WAIT_MS", d.ryw_wait_ms))),
        )

    def conninfo(self, role: str) -> str:
        """libpq conninfo for 'rw' or 'ro'. rw insists on a writable server, so a connection that lands on
        a follower or a fenced leader (mid-failover) is refused at connect time and retried."""
        host, port = (self.db_rw_host, self.db_rw_port) if role == "rw" else (
            self.db_ro_host or self.db_rw_host, self.db_ro_port if self.db_ro_host else self.db_rw_port)
        attrs = "read-write" if role == "rw" else "any"
        params: dict[str, Any] = {
            "host": host, "port": port, "dbname": self.db_name, "user": self.db_user,
            "connect_timeout": self.db_connect_timeout, "target_session_attrs": attrs,
            "application_name": f"demoapp-{role}", "keepalives": 1, "keepalives_idle": 5,
            "keepalives_interval": 2, "keepalives_count": 2, "tcp_user_timeout": 5000,
            "sslmode": self.db_sslmode, "sslrootcert": self.db_sslrootcert}
        # make_conninfo quotes what needs quoting and leaves out the None values (libpq's defaults).
        return make_conninfo("", **params)

    @property
    def redis_url(self) -> str:
        """Where the cache is, as a URL without credentials: rediss:// when TLS is on."""
        return f"{'rediss' if self.redis_tls else 'redis'}://{self.redis_host}:{self.redis_port}"

    @property
    def cache_active(self) -> bool:
        return self.cache_enabled and self.redis_host is not None
