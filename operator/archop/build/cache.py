"""The Redis cache tier: one Deployment (no persistence) and its Service N-cache on 6379."""

from __future__ import annotations

from typing import Any

from archop import names
from archop.build import container_security, meta, pod_security, secret_env
from archop.spec import ArchitectureSpec

PORT = 6379
UID = 999  # the redis user of the official image
# Compare the reply: redis-cli exits 0 even when the server answers with an error such as NOAUTH.
_PING = ["sh", "-c", f'[ "$(redis-cli -p {PORT} ping)" = "PONG" ]']


def build_cache(arch: str, namespace: str, spec: ArchitectureSpec, image: str) -> list[dict]:
    """Nothing when the cache is disabled (the reconciler prunes what was there)."""
    if not spec.cache.enabled:
        return []
    return [deployment(arch, namespace, spec, image), service(arch, namespace)]


def deployment(arch: str, namespace: str, spec: ArchitectureSpec, image: str) -> dict[str, Any]:
    cache = spec.cache
    secret = names.cache(arch)
    probe: dict[str, Any] = {"exec": {"command": _PING}, "periodSeconds": 5, "timeoutSeconds": 2}
    container = {
        "name": "redis",
        "image": image,
        "command": ["redis-server"],
        # $(REDIS_PASSWORD) is expanded by the kubelet from the env below; the pod spec never holds it.
        "args": [
            "--port", str(PORT),
            "--requirepass", "$(REDIS_PASSWORD)",
            "--maxmemory", cache.max_memory,
            "--maxmemory-policy", cache.eviction_policy,
            # A cache: no RDB snapshots, no AOF. A restart starts cold, which cache-aside tolerates.
            "--save", "",
            "--appendonly", "no",
        ],
        "env": [
            secret_env("REDIS_PASSWORD", secret, "password"),
            # redis-cli reads the password from here, so the probes never put it on a command line.
            secret_env("REDISCLI_AUTH", secret, "password"),
        ],
        "ports": [{"name": "redis", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {**probe, "failureThreshold": 2},
        "livenessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 3},
        "resources": cache.resources.as_dict(),
        "securityContext": container_security(UID),
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(arch, namespace, names.cache(arch), names.CACHE),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": names.selector(arch, names.CACHE)},
            # Start the new pod before stopping the old one: the app keeps a cache through a rollout.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": names.labels(arch, names.CACHE)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security(UID),
                    "containers": [container],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
        },
    }


def service(arch: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(arch, namespace, names.cache(arch), names.CACHE),
        "spec": {
            "type": "ClusterIP",
            "selector": names.selector(arch, names.CACHE),
            "ports": [{"name": "redis", "port": PORT, "targetPort": PORT, "protocol": "TCP"}],
        },
    }
