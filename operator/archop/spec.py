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


class RefKind(StrEnum):
    """What an app variable's value, or a whole set of variables, comes from (spec.app.env, spec.app.envFrom):
    a Secret or a ConfigMap of the Architecture's namespace. fieldRef and resourceFieldRef are not
    supported."""

    SECRET = "Secret"
    CONFIG_MAP = "ConfigMap"

    @property
    def key_ref(self) -> str:
        """The field of an env entry's valueFrom (secretKeyRef, configMapKeyRef)."""
        return "secretKeyRef" if self is RefKind.SECRET else "configMapKeyRef"

    @property
    def source_ref(self) -> str:
        """The field of an envFrom entry (secretRef, configMapRef)."""
        return "secretRef" if self is RefKind.SECRET else "configMapRef"


def _one_ref(raw: dict[str, Any], fields: dict[str, RefKind], where: str) -> tuple[RefKind, dict[str, Any]]:
    """The one reference of `raw` among `fields` (the CRD refuses none or two; so does this)."""
    found = [(f, kind, raw[f]) for f, kind in fields.items() if raw.get(f) is not None]
    unknown = sorted(set(raw) - set(fields))
    if unknown or len(found) != 1:
        raise ValueError(f"{where} must have exactly one of {' and '.join(fields)}"
                         + (f", not {', '.join(unknown)}" if unknown else ""))
    ((f, kind, ref),) = found
    if not isinstance(ref, dict) or not ref.get("name"):
        raise ValueError(f"{where}.{f} needs a name")
    return kind, ref


@dataclass(frozen=True)
class KeyRef:
    """One key of a Secret or ConfigMap (an env entry's valueFrom)."""

    kind: RefKind
    name: str
    key: str
    optional: bool = False

    def manifest(self) -> dict[str, Any]:
        ref: dict[str, Any] = {"name": self.name, "key": self.key}
        if self.optional:
            ref["optional"] = True
        return {self.kind.key_ref: ref}


@dataclass(frozen=True)
class EnvVar:
    """One entry of spec.app.env: a literal value (possibly empty) or a key of a Secret or ConfigMap."""

    name: str
    value: str | None = None
    ref: KeyRef | None = None

    @classmethod
    def parse(cls, raw: Any, where: str) -> EnvVar:
        if not isinstance(raw, dict) or not raw.get("name"):
            raise ValueError(f"{where} needs a name")
        unknown = sorted(set(raw) - {"name", "value", "valueFrom"})
        if unknown:
            raise ValueError(f"{where} may have name, value and valueFrom only, not {', '.join(unknown)}")
        if raw.get("value") is not None and raw.get("valueFrom") is not None:
            raise ValueError(f"{where}.value and {where}.valueFrom may not both be set")
        if raw.get("valueFrom") is None:
            return cls(name=str(raw["name"]), value=None if raw.get("value") is None else str(raw["value"]))
        kind, ref = _one_ref(raw["valueFrom"], {"secretKeyRef": RefKind.SECRET,
                                                "configMapKeyRef": RefKind.CONFIG_MAP}, f"{where}.valueFrom")
        if not ref.get("key"):
            raise ValueError(f"{where}.valueFrom.{kind.key_ref} needs a key")
        return cls(name=str(raw["name"]), ref=KeyRef(kind, str(ref["name"]), str(ref["key"]),
                                                     bool(ref.get("optional", False))))

    def manifest(self) -> dict[str, Any]:
        """The container's env entry."""
        if self.ref is not None:
            return {"name": self.name, "valueFrom": self.ref.manifest()}
        return {"name": self.name, "value": self.value or ""}


@dataclass(frozen=True)
class EnvFrom:
    """One entry of spec.app.envFrom: every key of a Secret or ConfigMap as a variable."""

    kind: RefKind
    name: str
    optional: bool = False

    @classmethod
    def parse(cls, raw: Any, where: str) -> EnvFrom:
        if not isinstance(raw, dict):
            raise ValueError(f"{where} must be an object")
        kind, ref = _one_ref(raw, {"secretRef": RefKind.SECRET, "configMapRef": RefKind.CONFIG_MAP}, where)
        return cls(kind, str(ref["name"]), bool(ref.get("optional", False)))

    def manifest(self) -> dict[str, Any]:
        ref: dict[str, Any] = {"name": self.name}
        if self.optional:
            ref["optional"] = True
        return {self.kind.source_ref: ref}


def _words(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ValueError(f"{where} must be a list of strings")
    return tuple(str(w) for w in raw)


@dataclass(frozen=True)
class AppSpec:
    enabled: bool = True  # False: no app tier at all (no Deployment, Service, PDB, HPA, CDN, Ingress)
    image: str | None = None  # None: the operator-wide default (config.py), the demo app
    replicas: int = 2
    port: int = 8080
    command: tuple[str, ...] = ()  # empty: the image's ENTRYPOINT
    args: tuple[str, ...] = ()  # empty: the image's CMD
    env: tuple[EnvVar, ...] = ()  # the user's variables, after the operator's (names never clash: the CRD)
    env_from: tuple[EnvFrom, ...] = ()
    readiness_path: str = "/readyz"  # the demo app's: 200 once the schema exists and the leader answers
    liveness_path: str = "/healthz"  # the demo app's: 200 while the process serves
    autoscaling: AutoscalingSpec = field(default_factory=AutoscalingSpec)
    resources: Resources = field(default_factory=lambda: Resources(requests={"cpu": "50m", "memory": "64Mi"}))

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> AppSpec:
        raw, d = raw or {}, cls()
        env, env_from = raw.get("env") or [], raw.get("envFrom") or []
        if not isinstance(env, list) or not isinstance(env_from, list):
            raise ValueError("app.env and app.envFrom must be lists")
        return cls(
            enabled=bool(raw.get("enabled", d.enabled)),
            image=raw.get("image") or None,
            replicas=int(raw.get("replicas", d.replicas)),
            port=int(raw.get("port", d.port)),
            command=_words(raw.get("command"), "app.command"),
            args=_words(raw.get("args"), "app.args"),
            env=tuple(EnvVar.parse(e, f"app.env[{i}]") for i, e in enumerate(env)),
            env_from=tuple(EnvFrom.parse(e, f"app.envFrom[{i}]") for i, e in enumerate(env_from)),
            readiness_path=str(raw.get("readinessPath") or d.readiness_path),
            liveness_path=str(raw.get("livenessPath") or d.liveness_path),
            autoscaling=AutoscalingSpec.parse(raw.get("autoscaling")),
            resources=Resources.parse(raw.get("resources"), d.resources.requests),
        )


def app_enabled(raw_spec: dict[str, Any] | None) -> bool:
    """spec.app.enabled of a raw spec (default true): the CDN and the Ingress follow it."""
    return bool(((raw_spec or {}).get("app") or {}).get("enabled", True))


@dataclass(frozen=True)
class CdnSpec:
    enabled: bool = True
    image: str | None = None
    cache_size: str = "100m"  # nginx max_size
    ttl_seconds: int = 60  # proxy_cache_valid for 200 responses without Cache-Control
    port: int = 8081

    @classmethod
    def parse(cls, raw: dict[str, Any] | None, app_enabled: bool = True) -> CdnSpec:
        """`app_enabled` is spec.app.enabled: without an app the sidecar has nothing to sit next to, so the
        CDN is off; the CRD refuses cdn.enabled true then, and an explicit true admitted anyway is ignored."""
        raw, d = raw or {}, cls()
        return cls(
            enabled=app_enabled and bool(raw.get("enabled", d.enabled)),
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
    def parse(cls, raw: dict[str, Any] | None, app_enabled: bool = True) -> IngressSpec:
        """`app_enabled` is spec.app.enabled: without an app there is nothing to route to (as for the CDN)."""
        raw, d = raw or {}, cls()
        return cls(
            enabled=app_enabled and bool(raw.get("enabled", d.enabled)),
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
        app = AppSpec.parse(raw.get("app"))
        return cls(
            database=DatabaseSpec.parse(raw.get("database")),
            cache=CacheSpec.parse(raw.get("cache")),
            app=app,
            cdn=CdnSpec.parse(raw.get("cdn"), app_enabled=app.enabled),
            ingress=IngressSpec.parse(raw.get("ingress"), app_enabled=app.enabled),
        )
