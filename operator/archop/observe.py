"""Reading the state of the non-database tiers (cache, app, ingress) from the API: one snapshot per call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archop import apply, names
from archop.podproblems import PodProblem, first_problem
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
    # Why a tier that is not ready cannot get there by itself (looked up only while it is not ready).
    cache_problem: PodProblem | None = None
    app_problem: PodProblem | None = None


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


def _deployment_pods(client: Any, namespace: str, deployment: str, component: str, arch: str,
                     ) -> list[dict[str, Any]]:
    """The pods of this Deployment's ReplicaSets (a pod that only copies the labels is not asked about)."""
    pods = apply.list_objects(client, "v1", "Pod", namespace, names.selector(arch, component))
    return [p for p in pods
            if any(o.get("controller") and o.get("kind") == "ReplicaSet"
                   and str(o.get("name", "")).startswith(f"{deployment}-")
                   for o in (p.get("metadata") or {}).get("ownerReferences") or [])]


def observe_workloads(
    client: Any, name: str, namespace: str, spec: ArchitectureSpec
) -> WorkloadObservation:
    """One look at the cache Deployment, the app Deployment and the Ingress (disabled tiers are skipped)."""
    cache = (apply.get(client, "apps/v1", "Deployment", namespace, names.cache(name))
             if spec.cache.enabled else None)
    app = (apply.get(client, "apps/v1", "Deployment", namespace, names.app(name))
           if spec.app.enabled else None)
    ingress = (apply.get(client, "networking.k8s.io/v1", "Ingress", namespace, names.ingress(name))
               if spec.ingress.enabled else None)
    cache_ready, _ = deployment_counts(cache)
    app_ready, app_desired = deployment_counts(app)
    cache_problem = app_problem = None
    if cache is not None and cache_ready < 1:
        cache_pods = _deployment_pods(client, namespace, names.cache(name), names.CACHE, name)
        cache_problem = first_problem(cache_pods)
    if app is not None and app_ready < app_desired:
        app_problem = first_problem(_deployment_pods(client, namespace, names.app(name), names.APP, name))
    return WorkloadObservation(
        cache_exists=cache is not None,
        cache_ready=cache_ready >= 1,
        app_exists=app is not None,
        app_ready_replicas=app_ready,
        app_desired_replicas=app_desired,
        ingress_exists=ingress is not None,
        ingress_address=ingress_address(ingress),
        cache_problem=cache_problem,
        app_problem=app_problem,
    )
