"""Settings from the environment. The operator sets exactly these DEMOAPP_* names (see README.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


@dataclass(frozen=True)
class Settings:
    port: int = 8080
    metrics_port: int = 9102  # /metrics only; the app's Service does not expose it
    host: str = "0.0.0.0"
    db_rw_host: str = "127.0.0.1"
    db_ro_host: str | None = None  # None: reads go to rw
    db_rw_port: int = 5432
    db_ro_port: int = 5432  # one DEMOAPP_DB_PORT in the env; two fields so tests can split them
    db_name: str = "app"
    db_user: str = "app"
    db_password: str = field(default="", repr=False)  # repr=False: never in logs or tracebacks
    # TLS to the database: the operator sets verify-full and the CA file it mounts; unset, libpq's defaults.
    db_sslmode: str | None = None
    db_sslrootcert: str | None = None
    redis_host: str | None = None  # None: no cache
    redis_port: int = 6379
    redis_password: str = field(default="", repr=False)
    # TLS to Redis (rediss://): the operator sets it with the CA file it mounts; the server's certificate is
    # verified against that CA and must name redis_host. Unset: plain TCP (the local tests' Redis).
    redis_tls: bool = False
    redis_ca_file: str | None = None
    cache_enabled: bool = True
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
        e = os.environ if env is None else env
        d = cls()
        port = int(e.get("DEMOAPP_DB_PORT", d.db_rw_port))
        return cls(
            port=int(e.get("DEMOAPP_PORT", d.port)),
            metrics_port=int(e.get("DEMOAPP_METRICS_PORT", d.metrics_port)),
            host=e.get("DEMOAPP_HOST", d.host),
            db_rw_host=e.get("DEMOAPP_DB_RW_HOST", d.db_rw_host),
            db_ro_host=e.get("DEMOAPP_DB_RO_HOST") or None,
            db_rw_port=port,
            db_ro_port=port,
            db_name=e.get("DEMOAPP_DB_NAME", d.db_name),
            db_user=e.get("DEMOAPP_DB_USER", d.db_user),
            db_password=e.get("DEMOAPP_DB_PASSWORD", d.db_password),
            db_sslmode=e.get("DEMOAPP_DB_SSLMODE") or None,
            db_sslrootcert=e.get("DEMOAPP_DB_SSLROOTCERT") or None,
            redis_host=e.get("DEMOAPP_REDIS_HOST") or None,
            redis_port=int(e.get("DEMOAPP_REDIS_PORT", d.redis_port)),
            redis_password=e.get("DEMOAPP_REDIS_PASSWORD", d.redis_password),
            redis_tls=_bool(e.get("DEMOAPP_REDIS_TLS", "false")),
            redis_ca_file=e.get("DEMOAPP_REDIS_CA_FILE") or None,
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
        tls = "".join(f" {k}={v}" for k, v in (("sslmode", self.db_sslmode),
                                                ("sslrootcert", self.db_sslrootcert)) if v)
        return (f"host={host} port={port} dbname={self.db_name} user={self.db_user} "
                f"connect_timeout={self.db_connect_timeout} target_session_attrs={attrs} "
                f"application_name=demoapp-{role} keepalives=1 keepalives_idle=5 keepalives_interval=2 "
                f"keepalives_count=2 tcp_user_timeout=5000{tls}")

    @property
    def redis_url(self) -> str:
        """Where the cache is, as a URL without credentials: rediss:// when TLS is on."""
        return f"{'rediss' if self.redis_tls else 'redis'}://{self.redis_host}:{self.redis_port}"

    @property
    def cache_active(self) -> bool:
        return self.cache_enabled and self.redis_host is not None
