"""The one place for operator settings: environment variables (prefix ARCHOP_), defaults and image names."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from archop import names
from archop.spec import ArchitectureSpec

# The namespace file every pod gets from its service account; used when ARCHOP_NAMESPACE is unset.
_SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_NAMESPACE = "archop-system"

# Components that run an image (the CDN sidecar is not a label component, so it gets its own key).
CDN = "cdn"
IMAGE_COMPONENTS = (names.DATABASE, names.CACHE, names.APP, CDN)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{key}={raw!r} is not a boolean; use true or false")


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{key}={raw!r} is not an integer") from None


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{key}={raw!r} is not a number") from None


# A namespace name: an RFC 1123 label.
_NAMESPACE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _namespaces(env: Mapping[str, str], key: str) -> tuple[str, ...]:
    """A comma-separated list of namespace names, in order, without repeats; empty when unset."""
    out: list[str] = []
    for item in (env.get(key) or "").split(","):
        name = item.strip()
        if not name:
            continue
        if not _NAMESPACE_NAME.match(name):
            raise ValueError(f"{key}: {name!r} is not a namespace name")
        if name not in out:
            out.append(name)
    return tuple(out)


# A label key (optional DNS-subdomain prefix, then a name) and a label value, as Kubernetes validates them.
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_LABEL_KEY = re.compile(rf"^({_DNS_LABEL}(\.{_DNS_LABEL})*/)?{_LABEL_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_LABEL_NAME})?$")

Labels = tuple[tuple[str, str], ...]


def _labels(env: Mapping[str, str], key: str, default: Labels) -> Labels:
    """`k=v,k2=v2`: a pod selector's matchLabels, sorted by key; the default when unset or blank. Never empty:
    an empty selector would match every pod of the namespace."""
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    out: dict[str, str] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not _LABEL_KEY.match(name) or len(name.rpartition("/")[0]) > 253:
            raise ValueError(f"{key}: {item!r} is not key=value with a valid label key")
        if not _LABEL_VALUE.match(value):
            raise ValueError(f"{key}: {value!r} is not a valid label value")
        out[name] = value
    if not out:
        raise ValueError(f"{key}={raw!r} holds no key=value pair")
    return tuple(sorted(out.items()))


def _cidrs(env: Mapping[str, str], key: str) -> tuple[str, ...]:
    """A comma-separated list of CIDRs (IPv4 or IPv6), normalised (host bits cleared), in order, without
    repeats; empty when unset. A bare address is taken as a /32 (or /128)."""
    out: list[str] = []
    for item in (env.get(key) or "").split(","):
        text = item.strip()
        if not text:
            continue
        try:
            cidr = str(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{key}: {text!r} is not a CIDR") from None
        if cidr not in out:
            out.append(cidr)
    return tuple(out)


def _namespace(env: Mapping[str, str], key: str, default: str) -> str:
    name = (env.get(key) or "").strip() or default
    if not _NAMESPACE_NAME.match(name):
        raise ValueError(f"{key}: {name!r} is not a namespace name")
    return name


def _default_namespace() -> str:
    try:
        return _SA_NAMESPACE_FILE.read_text().strip() or DEFAULT_NAMESPACE
    except OSError:
        return DEFAULT_NAMESPACE


@dataclass(frozen=True)
class Settings:
    # The operands' default images: the official images at a full version, never a floating tag (15, 7,
    # latest), so that a pod restarted later runs the code that was tested, and a registry's new major never
    # reaches a running database by itself. Postgres and Redis match what Debian bookworm ships (the offline
    # cluster builds its images from those packages); nginx keeps the upstream line the CDN config is tested
    # with. charts/archop/values.yaml (images) and the Makefile's ARCHOP_ONLINE images say the same
    # (tests/test_images.py). A change of the Postgres major here is refused per Architecture by the reconcile
    # (archop/images.py) while its data is of the old one.
    postgres_image: str = "postgres:15.20-bookworm"
    redis_image: str = "redis:7.0.15-bookworm"
    nginx_image: str = "nginx:1.27.5-bookworm"
    app_image: str = "archop/demoapp:0.1.0"
    # The operator's own namespace: home of the Lease, and the source the NetworkPolicies admit.
    namespace: str = DEFAULT_NAMESPACE
    metrics_port: int = 9090
    health_port: int = 8080
    # kopf's own liveness endpoint, on loopback only; /healthz on health_port checks it.
    kopf_liveness_port: int = 8099
    leader_election: bool = True
    lease_name: str = names.LEASE_NAME
    # A standby takes over at most lease + retry = 9 s after the holder dies (at once on a clean stop). That
    # term adds to a failover when the holder's node dies together with the database leader.
    lease_duration_seconds: int = 8
    renew_deadline_seconds: int = 6
    retry_period_seconds: int = 1
    # Lease holder identity: the pod name (the Deployment passes it through the downward API).
    identity: str = "archop"
    # How often (seconds) the monitor daemon of each Architecture looks at its children.
    monitor_interval_seconds: float = 1.0
    # The namespaces whose Architectures this operator manages; empty: every namespace. The chart's RBAC
    # follows it (watchNamespaces): Roles in these namespaces instead of cluster-wide rights.
    watch_namespaces: tuple[str, ...] = ()
    # --- What the operands' NetworkPolicies (build/policy.py) admit besides the stack's own pods.
    # The operator's pods, by these labels AND in `namespace` (one peer). The chart passes its selector labels
    # (name, instance, component): the helm test pod shares the name label, not the component.
    operator_pod_labels: Labels = ((names.L_COMPONENT, "operator"), (names.L_NAME, "archop"))
    # The ingress controller, the only client of the app pods' public port (the CDN's, or the app's without
    # a CDN): its pods by labels in its namespace, and/or the addresses it connects from. A controller on the
    # host network (the offline cluster's traefik) is no pod to NetworkPolicy: its node addresses go in
    # ingress_cidrs. The defaults match e2e/cluster/manifests/traefik.yaml.
    ingress_namespace: str = "traefik"
    ingress_pod_labels: Labels = (("app", "traefik"),)
    ingress_cidrs: tuple[str, ...] = ()
    # Cluster DNS, the one egress every tier that resolves names needs (UDP and TCP 53).
    dns_namespace: str = "kube-system"
    dns_pod_labels: Labels = (("k8s-app", "kube-dns"),)
    # Namespaces whose pods may scrape the app's metrics port; empty: nobody.
    metrics_scraper_namespaces: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        d = cls()
        settings = cls(
            postgres_image=env.get("ARCHOP_POSTGRES_IMAGE") or d.postgres_image,
            redis_image=env.get("ARCHOP_REDIS_IMAGE") or d.redis_image,
            nginx_image=env.get("ARCHOP_NGINX_IMAGE") or d.nginx_image,
            app_image=env.get("ARCHOP_APP_IMAGE") or d.app_image,
            namespace=env.get("ARCHOP_NAMESPACE") or _default_namespace(),
            metrics_port=_int(env, "ARCHOP_METRICS_PORT", d.metrics_port),
            health_port=_int(env, "ARCHOP_HEALTH_PORT", d.health_port),
            kopf_liveness_port=_int(env, "ARCHOP_KOPF_LIVENESS_PORT", d.kopf_liveness_port),
            leader_election=_bool(env, "ARCHOP_LEADER_ELECTION", d.leader_election),
            lease_name=env.get("ARCHOP_LEASE_NAME") or d.lease_name,
            lease_duration_seconds=_int(env, "ARCHOP_LEASE_DURATION_SECONDS", d.lease_duration_seconds),
            renew_deadline_seconds=_int(env, "ARCHOP_RENEW_DEADLINE_SECONDS", d.renew_deadline_seconds),
            retry_period_seconds=_int(env, "ARCHOP_RETRY_PERIOD_SECONDS", d.retry_period_seconds),
            identity=env.get("ARCHOP_POD_NAME") or env.get("HOSTNAME") or socket.gethostname(),
            monitor_interval_seconds=_float(
                env, "ARCHOP_MONITOR_INTERVAL_SECONDS", d.monitor_interval_seconds),
            watch_namespaces=_namespaces(env, "ARCHOP_WATCH_NAMESPACES"),
            operator_pod_labels=_labels(env, "ARCHOP_OPERATOR_POD_LABELS", d.operator_pod_labels),
            ingress_namespace=_namespace(env, "ARCHOP_INGRESS_NAMESPACE", d.ingress_namespace),
            ingress_pod_labels=_labels(env, "ARCHOP_INGRESS_POD_LABELS", d.ingress_pod_labels),
            ingress_cidrs=_cidrs(env, "ARCHOP_INGRESS_CIDRS"),
            dns_namespace=_namespace(env, "ARCHOP_DNS_NAMESPACE", d.dns_namespace),
            dns_pod_labels=_labels(env, "ARCHOP_DNS_POD_LABELS", d.dns_pod_labels),
            metrics_scraper_namespaces=_namespaces(env, "ARCHOP_METRICS_SCRAPER_NAMESPACES"),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse lease timings the election could not honour (same rules as client-go)."""
        if not self.lease_duration_seconds > self.renew_deadline_seconds:
            raise ValueError(
                "ARCHOP_LEASE_DURATION_SECONDS must be greater than ARCHOP_RENEW_DEADLINE_SECONDS")
        if not self.renew_deadline_seconds > 1.2 * self.retry_period_seconds:
            raise ValueError("ARCHOP_RENEW_DEADLINE_SECONDS must exceed 1.2 x ARCHOP_RETRY_PERIOD_SECONDS")
        if self.retry_period_seconds < 1:
            raise ValueError("ARCHOP_RETRY_PERIOD_SECONDS must be at least 1")
        for port in (self.metrics_port, self.health_port, self.kopf_liveness_port):
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} is out of range 1..65535")


def image_for(settings: Settings, spec: ArchitectureSpec, component: str) -> str:
    """The image for one component: the per-Architecture override wins over the operator-wide default."""
    if component == names.DATABASE:
        return spec.database.image or settings.postgres_image
    if component == names.CACHE:
        return spec.cache.image or settings.redis_image
    if component == names.APP:
        return spec.app.image or settings.app_image
    if component == CDN:
        return spec.cdn.image or settings.nginx_image
    raise ValueError(f"unknown component {component!r}; expected one of {', '.join(IMAGE_COMPONENTS)}")


_settings: Settings | None = None


def settings() -> Settings:
    """The process-wide Settings, read from the environment once (cli.main may install its own first)."""
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings


def install(custom: Settings) -> None:
    """Make `custom` the process-wide Settings (the CLI does this after parsing its flags)."""
    global _settings
    _settings = custom
