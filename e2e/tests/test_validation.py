"""The API server refuses invalid Architectures, each with a message that says what to fix.

Creates are checked with a server-side dry run (nothing is stored). The update rules (storage may not
shrink, storageClassName is immutable) need a stored object: one small Architecture is created for them.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from conftest import apply_manifest, architecture, get_json, kubectl, wait_for

# (id, metadata.name, spec, text the error must contain)
INVALID: list[tuple[str, str, dict[str, Any], str]] = [
    (
        "followers-too-many",
        "v",
        {"database": {"followers": 10}},
        "spec.database.followers in body should be less than or equal to 9",
    ),
    (
        "followers-negative",
        "v",
        {"database": {"followers": -1}},
        "spec.database.followers in body should be greater than or equal to 0",
    ),
    (
        "followers-not-a-number",
        "v",
        {"database": {"followers": "two"}},
        "spec.database.followers in body must be of type integer",
    ),
    (
        "replication-mode",
        "v",
        {"database": {"replication": {"mode": "semi"}}},
        'spec.database.replication.mode: Unsupported value: "semi"',
    ),
    (
        "reclaim-policy",
        "v",
        {"database": {"storage": {"reclaimPolicy": "Recycle"}}},
        'spec.database.storage.reclaimPolicy: Unsupported value: "Recycle"',
    ),
    (
        "storage-size-pattern",
        "v",
        {"database": {"storage": {"size": "lots"}}},
        "spec.database.storage.size in body should match",
    ),
    (
        "leader-timeout-range",
        "v",
        {"database": {"failover": {"leaderTimeoutSeconds": 120}}},
        "spec.database.failover.leaderTimeoutSeconds in body should be less than or equal to 60",
    ),
    (
        "sync-replicas-exceed-followers",
        "v",
        {"database": {"followers": 1, "replication": {"mode": "sync", "syncReplicas": 2}}},
        "database.replication.syncReplicas must not exceed database.followers in sync mode",
    ),
    (
        "durability-without-sync",
        "v",
        {"database": {"replication": {"mode": "async", "dataDurability": "required"}}},
        "database.replication.dataDurability requires mode: sync",
    ),
    (
        "leader-timeout-below-keepalive",
        "v",
        {"database": {"failover": {"leaderTimeoutSeconds": 1}}},
        "spec.database.failover.leaderTimeoutSeconds in body should be greater than or equal to 2",
    ),
    (
        "pod-lost-timeout-above-leader-timeout",
        "v",
        {"database": {"failover": {"leaderTimeoutSeconds": 2, "podLostTimeoutSeconds": 2.5}}},
        "database.failover.podLostTimeoutSeconds must not exceed leaderTimeoutSeconds",
    ),
    (
        "switchover-beyond-followers",
        "v",
        {"database": {"followers": 2, "switchoverTo": "v-db-5"}},
        "spec.database.switchoverTo must name a database pod of this Architecture",
    ),
    (
        "switchover-other-architecture",
        "v",
        {"database": {"switchoverTo": "other-db-1"}},
        "spec.database.switchoverTo must name a database pod of this Architecture",
    ),
    (
        "eviction-policy",
        "v",
        {"cache": {"evictionPolicy": "lru"}},
        'spec.cache.evictionPolicy: Unsupported value: "lru"',
    ),
    (
        "max-memory-pattern",
        "v",
        {"cache": {"maxMemory": "64 MB"}},
        "spec.cache.maxMemory in body should match",
    ),
    (
        "app-replicas-zero",
        "v",
        {"app": {"replicas": 0}},
        "spec.app.replicas in body should be greater than or equal to 1",
    ),
    (
        "app-privileged-port",
        "v",
        {"app": {"port": 80}},
        "spec.app.port in body should be greater than or equal to 1024",
    ),
    (
        "autoscaling-min-above-max",
        "v",
        {"app": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}},
        "app.autoscaling.minReplicas must not exceed app.autoscaling.maxReplicas",
    ),
    (
        "cdn-port-clash",
        "v",
        {"app": {"port": 9000}, "cdn": {"port": 9000}},
        "cdn.port must differ from app.port",
    ),
    ("cdn-cache-size", "v", {"cdn": {"cacheSize": "1tb"}}, "spec.cdn.cacheSize in body should match"),
    (
        "ingress-path",
        "v",
        {"ingress": {"path": "no-leading-slash"}},
        "spec.ingress.path in body should match",
    ),
    (
        "tls-without-host",
        "v",
        {"ingress": {"host": "", "tlsSecretName": "cert"}},
        "ingress.tlsSecretName requires ingress.host",
    ),
    ("unknown-field", "v", {"database": {"replicas": 3}}, 'unknown field "spec.database.replicas"'),
    ("name-too-long", "a" * 41, {}, "metadata.name must be a DNS label of at most 40 characters"),
    ("image-with-space", "v", {"app": {"image": "my app:1"}}, "spec.app.image in body should match"),
    # Each field's working range (issue 12): beyond it the API server refuses, naming the field.
    ("storage-zero", "v", {"database": {"storage": {"size": "0"}}},
     "database.storage.size must be between 256Mi and 64Ti"),
    ("storage-1000Ei", "v", {"database": {"storage": {"size": "1000Ei"}}},
     "database.storage.size must be between 256Mi and 64Ti"),
    ("cpu-negative-integer", "v", {"database": {"resources": {"requests": {"cpu": -1}}}},
     "database.resources.requests.cpu must be between 0 and 1024 cores"),
    ("memory-1000Ei", "v", {"app": {"resources": {"requests": {"memory": "1000Ei"}}}},
     "app.resources.requests.memory must be between 0 and 32Ti"),
    ("postgres-memory-limit-too-small", "v",
     {"database": {"resources": {"requests": {"memory": "64Mi"}, "limits": {"memory": "100Mi"}}}},
     "database.resources.limits.memory must be between 128Mi and 32Ti"),
    ("cpu-limit-too-small", "v", {"cache": {"resources": {"limits": {"cpu": "1m"}}}},
     "cache.resources.limits.cpu must be between 10m and 1024 cores"),
    ("ephemeral-limit-too-small", "v", {"app": {"resources": {"limits": {"ephemeral-storage": "1Mi"}}}},
     "app.resources.limits.ephemeral-storage must be between 16Mi and 64Ti"),
    ("default-memory-request-above-limit", "v", {"database": {"resources": {"limits": {"memory": "200Mi"}}}},
     "database.resources.requests.memory must not exceed database.resources.limits.memory"),
    ("cpu-request-above-limit", "v",
     {"app": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}},
     "app.resources.requests.cpu must not exceed app.resources.limits.cpu"),
    ("ingress-path-double-slash", "v", {"ingress": {"path": "/a//b"}}, "ingress.path may not contain //"),
    ("ingress-path-dot-dot", "v", {"ingress": {"path": "/a/.."}}, "ingress.path may not contain //"),
    ("ingress-path-encoded-slash", "v", {"ingress": {"path": "/a%2Fb"}}, "ingress.path may not contain //"),
    ("ingress-host-ip", "v", {"ingress": {"host": "10.0.0.1"}},
     "ingress.host must be a DNS name, not an IP address"),
    ("ingress-host-long-label", "v", {"ingress": {"host": "a" * 64 + ".example.com"}},
     "spec.ingress.host in body should match"),
    ("followers-zero-with-failover", "v", {"database": {"followers": 0}},
     "database.followers must be at least 1 while database.failover.enabled is true"),
    ("sync-with-allow-data-loss", "v",
     {"database": {"replication": {"mode": "sync"}, "failover": {"allowDataLoss": True}}},
     "database.failover.allowDataLoss must be false in sync mode"),
    ("max-lag-above-1Ti", "v", {"database": {"failover": {"maxLagBytes": 2**40 + 1}}},
     "spec.database.failover.maxLagBytes in body should be less than or equal to 1099511627776"),
    ("autoscaling-without-cpu-request", "v",
     {"app": {"autoscaling": {"enabled": True}, "resources": {"requests": {"memory": "64Mi"}}}},
     "app.resources.requests.cpu must be set and above 0 when app.autoscaling.enabled is true"),
    ("redis-maxmemory-zero", "v", {"cache": {"maxMemory": "0"}},
     "cache.maxMemory must be between 1mb and 1024gb"),
    ("redis-maxmemory-above-limit", "v",
     {"cache": {"maxMemory": "256mb",
                "resources": {"requests": {"memory": "64Mi"}, "limits": {"memory": "256Mi"}}}},
     "cache.maxMemory must be below cache.resources.limits.memory"),
    ("cdn-cache-size-zero", "v", {"cdn": {"cacheSize": "0"}}, "cdn.cacheSize must be between 1m and 1024g"),
    ("image-uppercase", "v", {"database": {"image": "Postgres:15"}},
     "spec.database.image in body should match"),
]


@pytest.mark.parametrize(
    ("name", "spec", "fragment"), [case[1:] for case in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_spec_is_refused(namespace: str, name: str, spec: dict[str, Any], fragment: str) -> None:
    proc = apply_manifest(architecture(name, spec), "-n", namespace, "--dry-run=server", check=False)
    assert proc.returncode != 0, f"accepted: {spec}"
    assert fragment in proc.stderr, proc.stderr


def test_the_cases_are_distinct() -> None:
    assert len(INVALID) >= 15
    assert len({json.dumps([c[1], c[2]], sort_keys=True) for c in INVALID}) == len(INVALID)


def test_a_valid_spec_is_accepted_and_defaulted(namespace: str) -> None:
    proc = apply_manifest(architecture("ok", {}), "-n", namespace, "--dry-run=server", "-o", "json")
    spec = json.loads(proc.stdout)["spec"]
    assert spec["database"]["followers"] == 2 and spec["database"]["storage"]["size"] == "1Gi"
    assert spec["cache"]["evictionPolicy"] == "allkeys-lru" and spec["app"]["replicas"] == 2
    assert spec["ingress"]["path"] == "/"


def default_storage_class() -> str:
    classes = get_json("storageclass")["items"]
    default = [
        c["metadata"]["name"]
        for c in classes
        if (c["metadata"].get("annotations") or {}).get("storageclass.kubernetes.io/is-default-class")
        == "true"
    ]
    assert default, "the cluster needs a default StorageClass"
    return str(default[0])


@pytest.fixture(scope="module")
def stored(namespace: str) -> dict[str, Any]:
    """A small stored Architecture for the update rules (no cache, CDN or ingress; one database pod)."""
    spec = {
        "database": {
            "followers": 0,  # no follower to fail over to, so failover must be off (a CEL rule)
            "failover": {"enabled": False},
            "storage": {"size": "2Gi", "storageClassName": default_storage_class()},
        },
        "cache": {"enabled": False},
        "cdn": {"enabled": False},
        "ingress": {"enabled": False},
        "app": {"replicas": 1},
    }
    obj = architecture("upd", spec)
    apply_manifest(obj, "-n", namespace)
    wait_for(
        lambda: get_json("architectures.archop.io", "upd", namespace=namespace), 30, "the stored Architecture"
    )
    return obj


def changed(obj: dict[str, Any], **storage: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["spec"]["database"]["storage"].update(storage)
    return out


def test_storage_may_not_shrink(stored: dict[str, Any], namespace: str) -> None:
    proc = apply_manifest(changed(stored, size="1Gi"), "-n", namespace, "--dry-run=server", check=False)
    assert proc.returncode != 0 and "database.storage.size may not shrink" in proc.stderr, proc.stderr


def test_storage_may_grow(stored: dict[str, Any], namespace: str) -> None:
    apply_manifest(changed(stored, size="3Gi"), "-n", namespace, "--dry-run=server")


def test_storage_class_is_immutable(stored: dict[str, Any], namespace: str) -> None:
    proc = apply_manifest(
        changed(stored, storageClassName="another-class"), "-n", namespace, "--dry-run=server", check=False
    )
    assert proc.returncode != 0 and "storageClassName is immutable" in proc.stderr, proc.stderr


def test_reclaim_policy_may_change(stored: dict[str, Any], namespace: str) -> None:
    apply_manifest(changed(stored, reclaimPolicy="Retain"), "-n", namespace, "--dry-run=server")


def test_explain_teaches_the_api() -> None:
    out = kubectl("explain", "architecture.spec.database.replication.mode").stdout
    assert "sync" in out and "quorum" in out
