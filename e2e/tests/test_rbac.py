"""What the operator's ServiceAccount may do, asked of the real API server, in both RBAC modes.

Cluster-wide (the default install every other module uses): exactly the rights operator/archop/permissions.py
lists, nowhere a Secret list or watch, no pod read, no workload update. Namespaced (`watchNamespaces`): the
same rights, only in the watched namespaces; an Architecture elsewhere is not touched at all. The module
switches the release to namespaced mode and puts it back as it found it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    OPERATOR_NAMESPACE,
    ROOT,
    apply_manifest,
    architecture,
    get_json,
    helm_ok,
    kubectl,
    scratch_namespace,
    wait_for,
)

RELEASE = "archop"
NAME = "scoped"
# A stack without a database tier keeps the module short: the rights, not the failover, are under test.
SMALL = {"database": {"followers": 0, "failover": {"enabled": False}}, "cache": {"enabled": False},
         "cdn": {"enabled": False}, "ingress": {"enabled": False}, "app": {"replicas": 1}}


def service_account() -> str:
    selector = "app.kubernetes.io/name=archop,app.kubernetes.io/component=operator"
    deployment = get_json("deployments", "-l", selector, namespace=OPERATOR_NAMESPACE)["items"][0]
    name = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    return f"system:serviceaccount:{OPERATOR_NAMESPACE}:{name}"


def can(verb: str, resource: str, namespace: str | None) -> bool:
    """`kubectl auth can-i` as the operator: yes or no, anything else fails the test."""
    where = ["-n", namespace] if namespace else ["--all-namespaces"]
    proc = kubectl("auth", "can-i", verb, resource, *where, "--as", service_account(), check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), f"can-i {verb} {resource}: {proc.stdout} {proc.stderr}"
    return answer == "yes"


def rights(namespace: str) -> dict[str, bool]:
    """The rights this module checks, in one namespace (and the cluster-wide ones)."""
    return {
        "get secrets": can("get", "secrets", namespace),
        "create secrets": can("create", "secrets", namespace),
        "list secrets": can("list", "secrets", namespace),
        "watch secrets": can("watch", "secrets", namespace),
        "get pods": can("get", "pods", namespace),
        "patch pods": can("patch", "pods", namespace),
        "delete pods": can("delete", "pods", namespace),
        "patch persistentvolumeclaims": can("patch", "persistentvolumeclaims", namespace),
        "update deployments": can("update", "deployments", namespace),
        "patch deployments": can("patch", "deployments", namespace),
        "delete statefulsets": can("delete", "statefulsets", namespace),
        "patch architectures": can("patch", "architectures.archop.io", namespace),
    }


# What the operator's own calls need in a namespace it manages (permissions.py), and what it never needs.
GRANTED = {"get secrets", "create secrets", "patch pods", "delete pods", "patch persistentvolumeclaims",
           "patch deployments", "patch architectures"}
NEVER = {"list secrets", "watch secrets", "get pods", "update deployments", "delete statefulsets"}


def test_cluster_wide_mode_grants_exactly_what_the_code_calls(namespace: str) -> None:
    got = rights(namespace)
    assert {r for r in GRANTED if not got[r]} == set(), got
    assert {r for r in NEVER if got[r]} == set(), got
    assert not can("list", "secrets", None), "Secrets must never be listable cluster-wide"
    assert can("list", "nodes", None)
    assert not can("create", "clusterroles.rbac.authorization.k8s.io", None)


@pytest.fixture(scope="module")
def namespaced(namespace: str) -> Iterator[str]:
    """The release switched to watch only `namespace`; afterwards, its values as they were."""
    saved = Path(os.environ.get("TMPDIR", "/tmp")) / f"archop-rbac-values-{uuid.uuid4().hex[:6]}.yaml"
    saved.write_text(helm_ok("get", "values", RELEASE, "-o", "yaml"))
    try:
        helm_ok("upgrade", RELEASE, str(ROOT / "charts" / "archop"), "--reuse-values",
             "--set", f"watchNamespaces={{{namespace}}}", "--wait", "--timeout", "5m")
        yield namespace
    finally:
        helm_ok("upgrade", RELEASE, str(ROOT / "charts" / "archop"), "-f", str(saved), "--reset-values",
             "--wait", "--timeout", "5m")
        saved.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def unwatched() -> Iterator[str]:
    with scratch_namespace("e2e-unwatched") as name:
        yield name


def test_namespaced_mode_manages_the_watched_namespace_only(namespaced: str, unwatched: str) -> None:
    got = rights(namespaced)
    assert {r for r in GRANTED if not got[r]} == set(), got
    assert {r for r in NEVER if got[r]} == set(), got
    elsewhere = rights(unwatched)
    assert not any(elsewhere.values()), f"rights outside the watched namespace: {elsewhere}"
    assert not can("get", "secrets", "default")
    assert not can("list", "secrets", None)

    apply_manifest(architecture(NAME, SMALL), "-n", namespaced)
    apply_manifest(architecture(NAME, SMALL), "-n", unwatched)
    kubectl("wait", "--for=condition=Ready", f"architectures.archop.io/{NAME}", "-n", namespaced,
            "--timeout=300s", timeout=330)
    # By the time the watched one is Ready, the operator has long had the chance to act on the other.
    other: dict[str, Any] = get_json("architectures.archop.io", NAME, namespace=unwatched)
    assert not other["metadata"].get("finalizers"), other["metadata"]
    assert not (other.get("status") or {}), other.get("status")
    children = get_json("statefulsets,deployments,services,secrets", "-l", f"archop.io/architecture={NAME}",
                        namespace=unwatched)["items"]
    assert children == [], [c["metadata"]["name"] for c in children]
    roles = {r["metadata"]["name"] for r in get_json("roles", namespace=namespaced)["items"]}
    assert any(r.endswith("-application") for r in roles), roles
    # Stand aside cleanly: the Architecture in the unwatched namespace must not wait on a finalizer later.
    kubectl("delete", "architectures.archop.io", NAME, "-n", unwatched, "--wait=true", timeout=60)
    wait_for(lambda: get_json("architectures.archop.io", NAME, namespace=unwatched, missing_ok=True) is None,
             30, "the unwatched Architecture to go")
