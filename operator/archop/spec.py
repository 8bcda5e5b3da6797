"""Typed view of Architecture.spec, with the defaults applied.

The CRD (crds/archop.io_architectures.yaml) defaults and validates on the API server; this module gives the
operator's code the same defaults when a field is absent (for example on objects written before a default
existed), so code never reads raw dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Durability(StrEnum):
    """spec.database.replication.dataDurability (CloudNativePG's names), in sync mode."""

    # A commit is acknowledged only after syncReplicas followers have it; with fewer followers streaming,
    # writes wait rather than degrade, and the standby list never shrinks below the desired followers.
    REQUIRED = "required"
    # Commits wait for syncReplicas of the followers that stream now, and for none when none streams:
    # writes go on while followers are away, and what they acknowledge then may be lost in a failover.
    PREFERRED = "preferred"


_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity_bytes(text: str) -> int:
    """A Kubernetes quantity as the CRD admits it for storage (1Gi, 1.5G, 500Mi) -> bytes."""
    number = text.rstrip("".join({c for u in _UNITS for c in u}))
    return int(float(number) * _UNITS[text[len(number):]])


# A follower's slot may hold at most this share of the volume in WAL (max_slot_wal_keep_size), and never less
# than one 16 MB segment. Past it the slot is lost and the operator rebuilds that follower instead.
SLOT_WAL_SHARE = 0.25
WAL_SEGMENT_MB = 16


@dataclass(frozen=True)
class Resources:
    requests: dict[str, str] = field(default_factory=dict)
    limits: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: dict[str, Any] | None, default_requests: dict[str, str]) -> Resources:
        raw = raw or {}
        # Quantities may arrive as numbers (cpu: 1); Kubernetes accepts both, the manifests want strings.
        requests = {k: str(v) for k, v in (raw.get("requests") or default_requests).items()}
        limits = {k: str(v) for k, v in (raw.get("limits") or {}).items()}
        return cls(requests=requests, limits=limits)

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
    # ... or this long when its pod is certainly down (deleted, replaced, not running, container restarted,
    # node NotReady): the kubelet or the API server is then the witness, so there is nothing to wait out.
    pod_lost_timeout_seconds: float = 0.0
    # A follower further behind than this is never promoted, unless allow_data_loss is set.
    max_lag_bytes: int = 16 * 1024 * 1024
    allow_data_loss: bool = False

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> FailoverSpec:
        raw, d = raw or {}, cls()
        return cls(
            enabled=bool(raw.get("enabled", d.enabled)),
            leader_timeout_seconds=float(raw.get("leaderTimeoutSeconds", d.leader_timeout_seconds)),
            pod_lost_timeout_seconds=float(raw.get("podLostTimeoutSeconds", d.pod_lost_timeout_seconds)),
            max_lag_bytes=int(raw.get("maxLagBytes", d.max_lag_bytes)),
            allow_data_loss=bool(raw.get("allowDataLoss", d.allow_data_loss)),
        )


MAX_FOLLOWERS = 9  # the CRD's maximum of spec.database.followers


@dataclass(frozen=True)
class DatabaseSpec:
    image: str | None = None  # None: the operator-wide default (config.py)
    followers: int = 2
    storage_size: str = "1Gi"
    storage_class: str | None = None
    reclaim_policy: str = "Delete"  # Delete | Retain: what happens to the volumes when the Architecture goes
    synchronous: bool = False
    sync_replicas: int = 1  # ANY n in synchronous_standby_names
    durability: Durability = Durability.REQUIRED  # only read in sync mode
    switchover_to: str | None = None  # planned promotion of this pod name
    failover: FailoverSpec = field(default_factory=FailoverSpec)
    resources: Resources = field(
        default_factory=lambda: Resources(requests={"cpu": "100m", "memory": "256Mi"}))

    @property
    def instances(self) -> int:
        return 1 + self.followers

    @property
    def slot_wal_keep_mb(self) -> int:
        """max_slot_wal_keep_size for this volume size: a quarter of it, so that a follower that stays away
        costs at most that much disk on the leader (the rest holds data, max_wal_size and wal_keep_size)."""
        mb = int(quantity_bytes(self.storage_size) * SLOT_WAL_SHARE) // 2**20
        return max(WAL_SEGMENT_MB, mb)

    @property
    def sync_required(self) -> bool:
        return self.synchronous and self.durability is Durability.REQUIRED

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> DatabaseSpec:
        raw, d = raw or {}, cls()
        storage = raw.get("storage") or {}
        replication = raw.get("replication") or {}
        return cls(
            image=raw.get("image") or None,
            followers=int(raw.get("followers", d.followers)),
            storage_size=str(storage.get("size") or d.storage_size),
            storage_class=storage.get("storageClassName") or None,
            reclaim_policy=str(storage.get("reclaimPolicy") or d.reclaim_policy),
            synchronous=(replication.get("mode") or "async") == "sync",
            sync_replicas=int(replication.get("syncReplicas", d.sync_replicas)),
            durability=Durability(replication.get("dataDurability") or d.durability),
            switchover_to=raw.get("switchoverTo") or None,
            failover=FailoverSpec.parse(raw.get("failover")),
            resources=Resources.parse(raw.get("resources"), d.resources.requests),
        )


@dataclass(frozen=True)
class CacheSpec:
    enabled: bool = True
    image: str | None = None
    max_memory: str = "64mb"
    eviction_policy: str = "allkeys-lru"
    ttl_seconds: int = 30  # cache-aside TTL the app uses
    resources: Resources = field(default_factory=lambda: Resources(requests={"cpu": "50m", "memory": "64Mi"}))

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> CacheSpec:
        raw, d = raw or {}, cls()
        return cls(
            enabled=bool(raw.get("enabled", d.enabled)),
            image=raw.get("image") or None,
            max_memory=str(raw.get("maxMemory") or d.max_memory),
            eviction_policy=str(raw.get("evictionPolicy") or d.eviction_policy),
            ttl_seconds=int(raw.get("ttlSeconds", d.ttl_seconds)),
            resources=Resources.parse(raw.get("resources"), d.resources.requests),
        )


@dataclass(frozen=True)
class AutoscalingSpec:
    enabled: bool = False
    min_replicas: int = 2
    max_replicas: int = 10
    target_cpu_percent: int = 70

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> AutoscalingSpec:
        raw, d = raw or {}, cls()
        return cls(
            enabled=bool(raw.get("enabled", d.enabled)),
            min_replicas=int(raw.get("minReplicas", d.min_replicas)),
            max_replicas=int(raw.get("maxReplicas", d.max_replicas)),
            target_cpu_percent=int(raw.get("targetCPUUtilizationPercentage", d.target_cpu_percent)),
        )


@dataclass(frozen=True)
class AppSpec:
    image: str | None = None
    replicas: int = 2
    port: int = 8080
    autoscaling: AutoscalingSpec = field(default_factory=AutoscalingSpec)
    resources: Resources = field(default_factory=lambda: Resources(requests={"cpu": "50m", "memory": "64Mi"}))

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> AppSpec:
        raw, d = raw or {}, cls()
        return cls(
            image=raw.get("image") or None,
            replicas=int(raw.get("replicas", d.replicas)),
            port=int(raw.get("port", d.port)),
            autoscaling=AutoscalingSpec.parse(raw.get("autoscaling")),
            resources=Resources.parse(raw.get("resources"), d.resources.requests),
        )


@dataclass(frozen=True)
class CdnSpec:
    enabled: bool = True
    image: str | None = None
    cache_size: str = "100m"  # nginx max_size
    ttl_seconds: int = 60  # proxy_cache_valid for 200 responses without Cache-Control
    port: int = 8081

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> CdnSpec:
        raw, d = raw or {}, cls()
        return cls(
            enabled=bool(raw.get("enabled", d.enabled)),
            image=raw.get("image") or None,
            cache_size=str(raw.get("cacheSize") or d.cache_size),
            ttl_seconds=int(raw.get("ttlSeconds", d.ttl_seconds)),
            port=int(raw.get("port", d.port)),
        )


@dataclass(frozen=True)
class IngressSpec:
    enabled: bool = True
    host: str = "archop.local"  # "" means every host (a catch-all rule)
    path: str = "/"
    class_name: str | None = None
    tls_secret_name: str | None = None

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> IngressSpec:
        raw, d = raw or {}, cls()
        return cls(
            enabled=bool(raw.get("enabled", d.enabled)),
            host=str(raw.get("host", d.host) or ""),
            path=str(raw.get("path") or d.path),
            class_name=raw.get("className") or None,
            tls_secret_name=raw.get("tlsSecretName") or None,
        )


@dataclass(frozen=True)
class ArchitectureSpec:
    database: DatabaseSpec = field(default_factory=DatabaseSpec)
    cache: CacheSpec = field(default_factory=CacheSpec)
    app: AppSpec = field(default_factory=AppSpec)
    cdn: CdnSpec = field(default_factory=CdnSpec)
    ingress: IngressSpec = field(default_factory=IngressSpec)

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> ArchitectureSpec:
        """The typed spec from the CR's `.spec` (camelCase keys); absent fields take the defaults."""
        raw = dict(raw or {})
        return cls(
            database=DatabaseSpec.parse(raw.get("database")),
            cache=CacheSpec.parse(raw.get("cache")),
            app=AppSpec.parse(raw.get("app")),
            cdn=CdnSpec.parse(raw.get("cdn")),
            ingress=IngressSpec.parse(raw.get("ingress")),
        )
