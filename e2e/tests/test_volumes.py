"""Growing the database's volumes: spec.database.storage.size goes up, and every PVC is asked for the new
size (a StatefulSet's volume template is immutable). Where the StorageClass allows expansion the request
is granted; where it does not, the API server's refusal reaches the user as a VolumeGrowthRefused event.

The offline cluster's local-path provisioner has no resizer, so "granted" here is the API server accepting
the larger request on the PVC (spec.resources.requests.storage); a CSI driver with expansion then resizes
the volume itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from archop import names
from conftest import (
    apply_manifest,
    architecture,
    architecture_events,
    condition,
    get_json,
    kubectl,
    wait_for,
)

EXPANDABLE = "archop-e2e-expandable"
READY_TIMEOUT = 600


@pytest.fixture(scope="module")
def expandable_class() -> Iterator[str]:
    """local-path, as the cluster's default class, but with allowVolumeExpansion."""
    apply_manifest({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": EXPANDABLE},
        "provisioner": "rancher.io/local-path", "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": True,
    })
    yield EXPANDABLE
    kubectl("delete", "storageclass", EXPANDABLE, "--wait=false", check=False)


def small_stack(storage: dict[str, Any]) -> dict[str, Any]:
    """A database with one follower and nothing in front of it: the test is about the volumes."""
    return {"database": {"followers": 1, "storage": storage}, "cache": {"enabled": False},
            "ingress": {"enabled": False}, "app": {"replicas": 1}}


def database_ready(namespace: str, name: str) -> dict[str, Any] | None:
    arch = get_json("architecture", name, namespace=namespace)
    cond = condition(arch, "DatabaseReady")
    return arch if cond is not None and cond["status"] == "True" else None


def volume_requests(namespace: str, name: str) -> dict[str, str]:
    selector = ",".join(f"{k}={v}" for k, v in names.selector(name, names.DATABASE).items())
    pvcs = get_json("pvc", "-l", selector, namespace=namespace)["items"]
    return {p["metadata"]["name"]: p["spec"]["resources"]["requests"]["storage"] for p in pvcs}


def grow(namespace: str, name: str, size: str) -> None:
    patch = {"spec": {"database": {"storage": {"size": size}}}}
    kubectl("patch", "architecture", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch))


def test_volumes_grow_where_the_storage_class_allows_it(namespace: str, expandable_class: str) -> None:
    name = "grows"
    apply_manifest(architecture(name, small_stack({"size": "1Gi", "storageClassName": expandable_class})),
                   "-n", namespace)
    wait_for(lambda: database_ready(namespace, name), READY_TIMEOUT, f"{name}: DatabaseReady")
    assert set(volume_requests(namespace, name).values()) == {"1Gi"}

    grow(namespace, name, "2Gi")
    requests = wait_for(lambda: (r if set((r := volume_requests(namespace, name)).values()) == {"2Gi"}
                                 else None), 120, "every database PVC to ask for 2Gi")
    assert len(requests) == 2, requests  # the leader's and the follower's
    grown = wait_for(lambda: architecture_events(namespace, name, "VolumesGrown"), 60, "a VolumesGrown event")
    assert "2Gi" in grown[-1]["message"], grown[-1]
    assert not architecture_events(namespace, name, "VolumeGrowthRefused")


def test_volumes_that_cannot_grow_are_reported_not_hidden(namespace: str) -> None:
    """The cluster's default class (local-path, no expansion): the API server refuses the larger request,
    and the user reads why."""
    name = "fixed"
    apply_manifest(architecture(name, small_stack({"size": "1Gi"})), "-n", namespace)
    wait_for(lambda: database_ready(namespace, name), READY_TIMEOUT, f"{name}: DatabaseReady")

    grow(namespace, name, "2Gi")
    refused = wait_for(lambda: architecture_events(namespace, name, "VolumeGrowthRefused"), 120,
                       "a VolumeGrowthRefused event")
    message = refused[-1]["message"]
    assert refused[-1]["type"] == "Warning" and "storageclass" in message.lower(), message
    assert set(volume_requests(namespace, name).values()) == {"1Gi"}
