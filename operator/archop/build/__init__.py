"""Pure manifest builders: typed spec in, plain Kubernetes manifest dicts out. No I/O anywhere in here.

Each tier has its own module; this one holds the shared pieces (metadata, hardened security contexts)
and `build_core`, which renders every tier the core owns (the database tier lives in build/database.py).
"""

from __future__ import annotations

import hashlib
from typing import Any

from archop import names

# The Service port of the app tier, whatever the pod listens on (the CDN sidecar or the app itself).
APP_SERVICE_PORT = 80


def meta(arch: str, namespace: str, obj_name: str, component: str) -> dict[str, Any]:
    return {"name": obj_name, "namespace": namespace, "labels": names.labels(arch, component)}


def pod_security(uid: int) -> dict[str, Any]:
    """Pod-level: never root, the runtime's default seccomp profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security(uid: int, read_only_root: bool = True) -> dict[str, Any]:
    """Container-level: no privilege escalation, no capabilities, read-only root unless the image needs it."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def secret_env(var: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def content_hash(text: str) -> str:
    """Short stable hash of a config file: as a pod annotation it rolls the pods when the file changes."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ref(manifest: dict[str, Any]) -> tuple[str, str, str]:
    """(apiVersion, kind, name): how a child is told apart from its siblings."""
    return manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"]


def build_all(
    arch: str,
    namespace: str,
    spec: Any,
    settings: Any,
    cdn_conf: str,
    current_leader: str | None = None,
) -> list[dict[str, Any]]:
    """Every child except the Secrets (created once, elsewhere), in apply order: config before workloads.

    `cdn_conf` is the rendered nginx.conf (build.cdn.nginx_conf); it is a parameter so this stays pure.
    `current_leader` is status.currentLeader: the database builder never scales the leader's pod away.
    """
    # Imported here: the tier modules import the helpers above from this package.
    from archop.build import app, cache, cdn, ingress, policy
    from archop.build.database import build_database
    from archop.config import CDN, image_for

    return [
        *policy.build_policies(arch, namespace, spec, settings),
        *build_database(arch, namespace, spec, image_for(settings, spec, names.DATABASE), settings,
                        current_leader=current_leader),
        *cache.build_cache(arch, namespace, spec, image_for(settings, spec, names.CACHE)),
        *cdn.build_cdn(arch, namespace, spec, cdn_conf),
        *app.build_app(arch, namespace, spec, image_for(settings, spec, names.APP),
                       image_for(settings, spec, CDN), content_hash(cdn_conf)),
        *ingress.build_ingress(arch, namespace, spec),
    ]


def optional_children(arch: str, namespace: str) -> list[dict[str, Any]]:
    """Children that exist only for some specs (a disabled tier, no autoscaler, a single app pod). The app
    tier is one of them as a whole (spec.app.enabled false): its Deployment, Service and NetworkPolicy too.

    The reconciler deletes those of them that the current spec does not build. Only these are ever pruned:
    Secrets, PVCs and the database tier are never deleted by a spec change (its disruption budgets aside: a
    single instance has none).
    """
    def stub(api_version: str, kind: str, obj_name: str) -> dict[str, Any]:
        return {"apiVersion": api_version, "kind": kind,
                "metadata": {"name": obj_name, "namespace": namespace}}

    return [
        stub("apps/v1", "Deployment", names.cache(arch)),
        stub("v1", "Service", names.cache(arch)),
        stub("networking.k8s.io/v1", "NetworkPolicy", names.cache(arch)),
        stub("v1", "ConfigMap", names.cdn(arch)),
        stub("apps/v1", "Deployment", names.app(arch)),
        stub("v1", "Service", names.app(arch)),
        stub("networking.k8s.io/v1", "NetworkPolicy", names.app(arch)),
        stub("policy/v1", "PodDisruptionBudget", names.app(arch)),
        stub("policy/v1", "PodDisruptionBudget", names.db_leader_budget(arch)),
        stub("policy/v1", "PodDisruptionBudget", names.db_followers_budget(arch)),
        stub("autoscaling/v2", "HorizontalPodAutoscaler", names.app(arch)),
        stub("networking.k8s.io/v1", "Ingress", names.ingress(arch)),
    ]


def absent_optional_children(
    arch: str, namespace: str, desired: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The optional children the desired set leaves out: these must be deleted."""
    wanted = {ref(m) for m in desired}
    return [stub for stub in optional_children(arch, namespace) if ref(stub) not in wanted]
