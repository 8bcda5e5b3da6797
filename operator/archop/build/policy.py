"""NetworkPolicies: default deny in both directions for every pod of the stack, then what each tier needs.

One policy per tier selects its pods with policyTypes [Ingress, Egress], so whatever no rule lists is denied:

| tier  | ingress (who may connect)                                | egress (where it may connect)        |
| ----- | -------------------------------------------------------- | ------------------------------------ |
| db    | app pods, db pods, the operator: 5432                    | db pods 5432; DNS                    |
| cache | app pods, the operator: 6379                             | nothing (Redis opens no connection)  |
| app   | ingress controller: public port; scrapers: metrics port  | db pods 5432, cache pods 6379; DNS   |

- The public port is the CDN sidecar's when the CDN is on (the Service, so the Ingress, targets it), else
  the app's. With a CDN the app's own port is admitted from nowhere: the sidecar reaches it over the pod's
  loopback, which no NetworkPolicy filters, so the cache cannot be bypassed from the network. The kubelet's
  probes come from the pod's own node, which NetworkPolicy does not block (Kubernetes documents that a pod
  cannot block access from its node; kube-router and kube-network-policies let node traffic through).
- The operator is admitted by namespace AND pod labels, one peer: a pod that only copies its labels in another
  namespace, or another pod of its namespace (the helm test pod), is not.
- The db rw/ro Services and the headless names all end at db pods on 5432: policies see the pod after the
  Service's DNAT, so "db pods on 5432" covers the app's rw and ro pools, replication, pg_basebackup, pg_rewind
  and the start script's probe of the rw Service.
- DNS: the cluster DNS pods (settings.dns_*), UDP and TCP 53. The cache has no DNS rule: Redis runs alone
  (build/cache.py, one replica, no replicaof) and resolves nothing.
"""

from __future__ import annotations

from typing import Any

from archop import names
from archop.build import meta
from archop.build.app import metrics_port, target_port
from archop.build.cache import PORT as REDIS_PORT
from archop.build.database import PORT as DB_PORT
from archop.config import Settings
from archop.spec import ArchitectureSpec

OPERATOR_APP_NAME = "archop"  # app.kubernetes.io/name of the operator's own pods (the Helm chart)
DNS_PORT = 53
NAMESPACE_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API server


def _pods(arch: str, component: str) -> dict[str, Any]:
    """Pods of this Architecture's tier, in the policy's own namespace."""
    return {"podSelector": {"matchLabels": names.selector(arch, component)}}


def _in_namespace(namespace: str, labels: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Pods with these labels in that namespace: one peer, so both must match."""
    return {
        "namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: namespace}},
        "podSelector": {"matchLabels": dict(labels)},
    }


def operator_pods(settings: Settings) -> dict[str, Any]:
    """The operator, from its own namespace: it probes Postgres over SQL and steers failovers."""
    return _in_namespace(settings.namespace, settings.operator_pod_labels)


def ingress_controller(settings: Settings) -> list[dict[str, Any]]:
    """The ingress controller's pods, plus the addresses of a controller on the host network."""
    return [_in_namespace(settings.ingress_namespace, settings.ingress_pod_labels),
            *({"ipBlock": {"cidr": cidr}} for cidr in settings.ingress_cidrs)]


def _ports(protocol: str, *ports: int) -> list[dict[str, Any]]:
    return [{"protocol": protocol, "port": p} for p in dict.fromkeys(ports)]


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return _ports("TCP", *ports)


def dns_rule(settings: Settings) -> dict[str, Any]:
    """Egress to the cluster DNS pods, UDP and TCP (large answers and retries fall back to TCP)."""
    return {"to": [_in_namespace(settings.dns_namespace, settings.dns_pod_labels)],
            "ports": _ports("UDP", DNS_PORT) + _ports("TCP", DNS_PORT)}


def _policy(arch: str, namespace: str, obj_name: str, component: str,
            ingress: list[dict[str, Any]], egress: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(arch, namespace, obj_name, names.NETWORK),
        "spec": {
            "podSelector": {"matchLabels": names.selector(arch, component)},
            # Both types, always: an empty list then denies that direction instead of leaving it open.
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


def database_policy(arch: str, namespace: str, settings: Settings) -> dict[str, Any]:
    return _policy(arch, namespace, names.db(arch), names.DATABASE, ingress=[{
        # The app's queries, replication and rewinds between database pods, the operator's probes and steps.
        "from": [_pods(arch, names.APP), _pods(arch, names.DATABASE), operator_pods(settings)],
        "ports": _tcp(DB_PORT),
    }], egress=[
        # Followers stream from the leader (through the rw Service or a peer's headless name), pg_rewind and
        # pg_basebackup read from it, and start.sh asks the rw Service and the peers who leads.
        {"to": [_pods(arch, names.DATABASE)], "ports": _tcp(DB_PORT)},
        dns_rule(settings),
    ])


def cache_policy(arch: str, namespace: str, settings: Settings) -> dict[str, Any]:
    return _policy(arch, namespace, names.cache(arch), names.CACHE, ingress=[{
        "from": [_pods(arch, names.APP), operator_pods(settings)],
        "ports": _tcp(REDIS_PORT),
    }], egress=[])


def app_policy(arch: str, namespace: str, spec: ArchitectureSpec, settings: Settings) -> dict[str, Any]:
    # Only the Service's target port (the CDN's when there is one) is public; see the module doc.
    ingress: list[dict[str, Any]] = [{"from": ingress_controller(settings), "ports": _tcp(target_port(spec))}]
    if settings.metrics_scraper_namespaces:
        ingress.append({
            "from": [{"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: ns}}}
                     for ns in settings.metrics_scraper_namespaces],
            "ports": _tcp(metrics_port(spec)),
        })
    egress: list[dict[str, Any]] = [{"to": [_pods(arch, names.DATABASE)], "ports": _tcp(DB_PORT)}]
    if spec.cache.enabled:
        egress.append({"to": [_pods(arch, names.CACHE)], "ports": _tcp(REDIS_PORT)})
    egress.append(dns_rule(settings))
    return _policy(arch, namespace, names.app(arch), names.APP, ingress=ingress, egress=egress)


def build_policies(arch: str, namespace: str, spec: ArchitectureSpec, settings: Settings) -> list[dict]:
    """db, cache (only when the cache is on), app (only when the app tier is on); the reconciler prunes a
    policy the spec no longer builds. The db and cache policies admit the app tier's pods either way: with
    no app tier none run (docs/connecting.md says how an app of your own gets in)."""
    out = [database_policy(arch, namespace, settings)]
    if spec.cache.enabled:
        out.append(cache_policy(arch, namespace, settings))
    if spec.app.enabled:
        out.append(app_policy(arch, namespace, spec, settings))
    return out
