"""Two releases of the operator never manage the same Architecture.

`helm install` of a second release is refused while the first runs (the chart's lookup). Bypassing that
check (`helm template | kubectl apply`), the second operator starts, finds the Architecture claimed by the
first release (annotation archop.io/operator) whose Lease is held, and leaves it alone: one
ManagedByAnotherOperator Warning event, and no write of its own.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    HELM,
    OPERATOR_NAMESPACE,
    ROOT,
    apply_manifest,
    architecture,
    get_json,
    kubectl,
    scratch_namespace,
    wait_for,
)

NAME = "claimed"
SECOND = "second"  # the second release; its objects are named second-archop*
CHART = str(ROOT / "charts" / "archop")
CLAIM = "archop.io/operator"
LEASE = "archop-operator"
REFUSED = "ManagedByAnotherOperator"
# Kinds of the children an Architecture gets (operator/archop/build); the second operator must add none.
CHILD_KINDS = "statefulsets,deployments,services,configmaps,secrets,persistentvolumeclaims,networkpolicies"
# On top of the first release's values: its own object names (a fullnameOverride would make the cluster-wide
# RBAC objects collide), one replica, no CRD (the first release owns it), no helm test pod, no
# prometheus-operator objects.
SECOND_VALUES = ["fullnameOverride=", "replicaCount=1", "crds.install=false", "tests.enabled=false",
                 "monitoring.serviceMonitor.enabled=false", "monitoring.podMonitor.enabled=false",
                 "monitoring.prometheusRule.enabled=false"]


def helm(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=timeout)


def first_release() -> str:
    """The release name of the operator every e2e module uses (its Deployment's instance label)."""
    selector = "app.kubernetes.io/name=archop,app.kubernetes.io/component=operator"
    deployments = get_json("deployments", "-l", selector, namespace=OPERATOR_NAMESPACE)["items"]
    assert len(deployments) == 1, [d["metadata"]["name"] for d in deployments]
    return str(deployments[0]["metadata"]["labels"]["app.kubernetes.io/instance"])


def kube_version() -> str:
    return str(json.loads(kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"])


def children(namespace: str) -> set[tuple[str, str]]:
    items = get_json(CHILD_KINDS, "-l", f"archop.io/architecture={NAME}", namespace=namespace)["items"]
    return {(i["kind"], i["metadata"]["name"]) for i in items}


def events_from(namespace: str, pods: set[str]) -> list[dict[str, Any]]:
    """Events on the Architecture posted by one of `pods` (kopf posts the pod name as reportingInstance)."""
    about = f"involvedObject.kind=Architecture,involvedObject.name={NAME}"
    items = get_json("events", "--field-selector", about, namespace=namespace)["items"]
    return [e for e in items if e.get("reportingInstance") in pods]


def holder(namespace: str) -> str:
    lease = get_json("lease", LEASE, namespace=namespace, missing_ok=True)
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


@pytest.fixture(scope="module")
def claimed(namespace: str) -> dict[str, Any]:
    """A small Architecture, Ready and claimed by the first release."""
    spec = {"database": {"followers": 0, "failover": {"enabled": False}},
            "cache": {"enabled": False}, "cdn": {"enabled": False}, "ingress": {"enabled": False},
            "app": {"replicas": 1}}
    apply_manifest(architecture(NAME, spec), "-n", namespace)
    kubectl("wait", "--for=condition=Ready", f"architectures.archop.io/{NAME}", "-n", namespace,
            "--timeout=300s", timeout=330)

    def claimed_by_first() -> dict[str, Any] | None:
        arch = get_json("architectures.archop.io", NAME, namespace=namespace)
        return arch if (arch["metadata"].get("annotations") or {}).get(CLAIM) == OPERATOR_NAMESPACE else None

    return wait_for(claimed_by_first, 60, f"the first release to claim {NAME} ({CLAIM}={OPERATOR_NAMESPACE})")


@pytest.fixture(scope="module")
def second_namespace() -> Iterator[str]:
    with scratch_namespace("e2e-second-operator") as name:
        try:
            yield name
        finally:
            # Should the install check ever let it through, do not leave a second release behind.
            if helm("status", SECOND, "-n", name).returncode == 0:
                helm("uninstall", SECOND, "-n", name, "--wait", "--timeout", "2m")


@pytest.fixture(scope="module")
def first_values(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first release's values (its image above all), for the second release."""
    proc = helm("get", "values", first_release(), "-n", OPERATOR_NAMESPACE, "-o", "yaml")
    assert proc.returncode == 0, proc.stderr
    path = tmp_path_factory.mktemp("second") / "values.yaml"
    path.write_text(proc.stdout)
    return path


def _second_args(second_namespace: str, first_values: Path) -> list[str]:
    sets = [arg for value in SECOND_VALUES for arg in ("--set", value)]
    return [SECOND, CHART, "-n", second_namespace, "-f", str(first_values), *sets]


def test_helm_refuses_a_second_release(claimed: dict[str, Any], second_namespace: str,
                                       first_values: Path) -> None:
    first = first_release()
    proc = helm("install", *_second_args(second_namespace, first_values), timeout=120)
    assert proc.returncode != 0, f"a second release was installed:\n{proc.stdout}"
    refusal = f"another archop release already runs an operator in namespace {OPERATOR_NAMESPACE}"
    assert refusal in proc.stderr, proc.stderr
    assert f"helm uninstall {first} -n {OPERATOR_NAMESPACE}" in proc.stderr, proc.stderr
    assert helm("status", SECOND, "-n", second_namespace).returncode != 0
    assert get_json("deployments", namespace=second_namespace)["items"] == []


def test_a_second_operator_leaves_a_claimed_architecture_alone(
    claimed: dict[str, Any], namespace: str, second_namespace: str, first_values: Path
) -> None:
    before = get_json("architectures.archop.io", NAME, namespace=namespace)
    kids = children(namespace)
    assert kids, "the first release applied no children"

    # Bypass the install check: without a cluster connection `lookup` answers nothing.
    proc = helm("template", *_second_args(second_namespace, first_values), "--kube-version", kube_version())
    assert proc.returncode == 0, proc.stderr
    rendered = proc.stdout
    kubectl("apply", "-n", second_namespace, "-f", "-", stdin=rendered, timeout=120)
    try:
        kubectl("rollout", "status", f"deployment/{SECOND}-archop", "-n", second_namespace, "--timeout=180s",
                timeout=200)
        pods = {p["metadata"]["name"] for p in get_json(
            "pods", "-l", f"app.kubernetes.io/instance={SECOND}", namespace=second_namespace)["items"]}
        # It runs as an operator of its own: it holds its own Lease, so kopf runs in it.
        wait_for(lambda: holder(second_namespace) in pods, 60, "the second operator to hold its Lease")

        # It met the Architecture, and said that the first release manages it.
        refusals = wait_for(lambda: [e for e in events_from(namespace, pods) if e["reason"] == REFUSED], 120,
                            f"a {REFUSED} event from the second operator")
        assert refusals[0]["type"] == "Warning"
        assert refusals[0]["involvedObject"]["uid"] == before["metadata"]["uid"]
        assert f"namespace {OPERATOR_NAMESPACE}" in refusals[0]["message"]

        # Give it time to act, if it were to: many monitor ticks, more than one re-check of the claim.
        time.sleep(40)
        posted = events_from(namespace, pods)
        assert [e["reason"] for e in posted if e["type"] != "Normal"] == [REFUSED], posted
        assert sum(e.get("count") or 1 for e in posted if e["reason"] == REFUSED) == 1, posted
        # kopf's own "Handler 'reconcile' succeeded." lines are posted as Logging events; nothing else.
        assert {e["reason"] for e in posted} <= {REFUSED, "Logging"}, posted
        assert not [e for e in posted if "reconciled" in e.get("message", "")], posted

        after = get_json("architectures.archop.io", NAME, namespace=namespace)
        assert after["metadata"]["annotations"] == before["metadata"]["annotations"]
        assert after["metadata"].get("finalizers") == before["metadata"].get("finalizers")
        assert after["metadata"]["generation"] == before["metadata"]["generation"]
        assert (after["status"].get("observedGeneration") == before["status"].get("observedGeneration"))
        assert children(namespace) == kids, "the second operator created or removed children"

        logs = kubectl("logs", f"deployment/{SECOND}-archop", "-n", second_namespace, timeout=60).stdout
        assert f"Managed by the archop operator in namespace {OPERATOR_NAMESPACE}" in logs
        assert "reconciled generation" not in logs, "the second operator reconciled"
    finally:
        kubectl("delete", "-n", second_namespace, "-f", "-", "--ignore-not-found", "--wait=true",
                "--timeout=120s", stdin=rendered, timeout=150, check=False)

    # The first release still holds its claim.
    final = get_json("architectures.archop.io", NAME, namespace=namespace)
    assert final["metadata"]["annotations"][CLAIM] == OPERATOR_NAMESPACE
