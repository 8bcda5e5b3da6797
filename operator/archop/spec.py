"""Typed view of Architecture.spec, with the defaults applied.

The CRD (crds/archop.io_architectures.yaml) defaults and validates on the API server; this module gives the
operator's code the same defaults when a field is absent (for example on objects written before a default
existed), so code never reads raw dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Resources:
    requests: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: dict[str, Any] | None, default_requests: dict[str, str]) -> Resources:
        raw = raw or {}
        return cls(requests=dict(raw.get("requests") or default_requests), limits=dict(raw.get("limits") or {}))

    def as_dict(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {"requests": dict(self.requests)}
        if self.limits:
            out["limits"] = dict(self.limits)
        return out


@dataclass(frozen=True)
class FailoverSpec:
    enabled: bool = True
    # The leader is declared failed once it has been unreachable this long (and a witness agrees).
    leader_timeout_seconds: float = 3.0
    # A follower further behind than this is never promoted, unless allow_data_loss is set.
    max_lag_bytes: int = 16 * 1024 * 1024
    allow_data_loss: bool = False


@dataclass(frozen=True)
class DatabaseSpec:
    image: str | None = None  # None: the operator-wide default (config.py)
    followers: int = 2
    storage_size: str = "1Gi"
    storage_class: str | None = None
    reclaim_policy: str = "Delete"  # Delete | Retain: what happens to the volumes when the Architecture goes
    synchronous: bool = False
    sync_replicas: int = 1  # ANY n in synchronous_standby_names
    switchover_to: str | None = None  # planned promotion of this pod name
    failover: FailoverSpec = field(default_factory=FailoverSpec)
    resources: Resources = field(default_factory=lambda: Resources(requests={"cpu": "100m", "memory": "256Mi"}))

    @property
    def instances(self) -> int:
        return 1 + self.followers


@dataclass(frozen=True)
class CacheSpec:
    enabled: bool = True
    image: str | None = None
    max_memory: str = "64mb"
    eviction_policy: str = "allkeys-lru"
    ttl_seconds: int = 30  # cache-aside TTL the app uses
    resources: Resources = field(default_factory=lambda: Resources(requests={"cpu": "50m", "memory": "64Mi"}))


@dataclass(frozen=True)
class AutoscalingSpec:
    enabled: bool = False
    min_replicas: int = 2
    max_replicas: int = 10
    target_cpu_percent: int = 70


@dataclass(frozen=True)
class AppSpec:
    image: str | None = None
    replicas: int = 2
    port: int = 8080
    autoscaling: AutoscalingSpec = field(default_factory=AutoscalingSpec)
    resources: Resources = field(default_factory=lambda: Resources(requests={"cpu": "50m", "memory": "64Mi"}))


@dataclass(frozen=True)
class CdnSpec:
    enabled: bool = True
    image: str | None = None
    cache_size: str = "100m"  # nginx max_size
    ttl_seconds: int = 60  # proxy_cache_valid for 200 responses without Cache-Control
    port: int = 8081


@dataclass(frozen=True)
class IngressSpec:
    enabled: bool = True
    host: str = "archop.local"
    path: str = "/"
    class_name: str | None = None
    tls_secret_name: str | None = None


@dataclass(frozen=True)
class ArchitectureSpec:
    database: DatabaseSpec = field(default_factory=DatabaseSpec)
    cache: CacheSpec = field(default_factory=CacheSpec)
    app: AppSpec = field(default_factory=AppSpec)
    cdn: CdnSpec = field(default_factory=CdnSpec)
    ingress: IngressSpec = field(default_factory=IngressSpec)
