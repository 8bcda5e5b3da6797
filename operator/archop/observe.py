"""Reading the state of the non-database tiers (cache, app, ingress) from the API: one snapshot per call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archop import apply, names
from archop.spec import ArchitectureSpec


@dataclass(frozen=True)
class WorkloadObservation:
    cache_exists: bool = False
    cache_ready: bool = False
    app_exists: bool = False
    app_ready_replicas: int = 0
    app_desired_replicas: int = 0
    ingress_exists: bool = False
    ingress_address: str | None = None  # what the ingress controller published, if it publishes anything


def deployment_counts(deployment: dict[str, Any] | None) -> tuple[int, int]:
    """(ready, desired) pods of a Deployment; (0, 0) when it does not exist."""
    if not deployment:
        return 0, 0
    desired = int(deployment.get("spec", {}).get("replicas", 1))
    ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
    return ready, desired


def ingress_address(ingress: dict[str, Any] | None) -> str | None:
    for entry in ((ingress or {}).get("status") or {}).get("loadBalancer", {}).get("ingress") or []:
        address = entry.get("ip") or entry.get("hostname")
        if address:
            return str(address)
    return None


def observe_workloads(
    client: Any, name: str, namespace: str, spec: ArchitectureSpec
) -> WorkloadObservation:
    """One look at the cache Deployment, the app Deployment and the Ingress (disabled tiers are skipped)."""
    cache = (apply.get(client, "apps/v1", "Deployment", namespace, names.cache(name))
             if spec.cache.enabled else None)
    app = apply.get(client, "apps/v1", "Deployment", namespace, names.app(name))
    ingress = (apply.get(client, "networking.k8s.io/v1", "Ingress", namespace, names.ingress(name))
               if spec.ingress.enabled else None)
    cache_ready, _ = deployment_counts(cache)
    app_ready, app_desired = deployment_counts(app)
    return WorkloadObservation(
        cache_exists=cache is not None,
        cache_ready=cache_ready >= 1,
        app_exists=app is not None,
        app_ready_replicas=app_ready,
        app_desired_replicas=app_desired,
        ingress_exists=ingress is not None,
        ingress_address=ingress_address(ingress),
    )
