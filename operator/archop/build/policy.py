"""NetworkPolicies: each tier accepts traffic only from the tiers (and the operator) that need it.

Ingress rules only; egress stays open (DNS, the API server and the replication stream need no listing).
"""

from __future__ import annotations

from typing import Any

from archop import names
from archop.build import meta
from archop.build.cache import PORT as REDIS_PORT
from archop.build.database import PORT as DB_PORT
from archop.config import Settings
from archop.spec import ArchitectureSpec

OPERATOR_APP_NAME = "archop"  # app.kubernetes.io/name of the operator's own pods (the Helm chart)


def _pods(arch: str, component: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": names.selector(arch, component)}}


def operator_pods(settings: Settings) -> dict[str, Any]:
    """The operator, from its own namespace: it probes Postgres over SQL and Redis with PING."""
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.namespace}},
        "podSelector": {"matchLabels": {names.L_NAME: OPERATOR_APP_NAME}},
    }


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in dict.fromkeys(ports)]


def _policy(arch: str, namespace: str, obj_name: str, component: str, rule: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(arch, namespace, obj_name, names.NETWORK),
        "spec": {
            "podSelector": {"matchLabels": names.selector(arch, component)},
            "policyTypes": ["Ingress"],
            "ingress": [rule],
        },
    }


def build_policies(arch: str, namespace: str, spec: ArchitectureSpec, settings: Settings) -> list[dict]:
    db = _policy(arch, namespace, names.db(arch), names.DATABASE, {
        # The app's queries, replication between database pods, and the operator's probes and failover steps.
        "from": [_pods(arch, names.APP), _pods(arch, names.DATABASE), operator_pods(settings)],
        "ports": _tcp(DB_PORT),
    })
    # The ingress controller lives in another namespace and the Service may target either port.
    app_ports = (spec.cdn.port, spec.app.port) if spec.cdn.enabled else (spec.app.port,)
    app = _policy(arch, namespace, names.app(arch), names.APP, {"ports": _tcp(*app_ports)})
    out = [db, app]
    if spec.cache.enabled:
        out.insert(1, _policy(arch, namespace, names.cache(arch), names.CACHE, {
            "from": [_pods(arch, names.APP), operator_pods(settings)],
            "ports": _tcp(REDIS_PORT),
        }))
    return out
