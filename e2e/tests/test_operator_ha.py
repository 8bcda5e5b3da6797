"""The operator is not a single point of failure: killing the replica that holds the Lease hands the work to
the standby within 15 s, and the new leader reconciles."""

from __future__ import annotations

import time

from conftest import OPERATOR_NAMESPACE, apply_manifest, architecture, get_json, kubectl, wait_for

LEASE = "archop-operator"
TAKEOVER_BUDGET_S = 15.0


def holder() -> str:
    lease = get_json("lease", LEASE, namespace=OPERATOR_NAMESPACE)
    return str(lease["spec"].get("holderIdentity") or "")


def running_operator_pods() -> set[str]:
    pods = get_json("pods", "-l", "app.kubernetes.io/name=archop", namespace=OPERATOR_NAMESPACE)["items"]
    return {p["metadata"]["name"] for p in pods
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
            and p["metadata"].get("ownerReferences", [{}])[0].get("kind") == "ReplicaSet"}


def test_a_standby_takes_over_within_15_s_and_reconciles(namespace: str) -> None:
    wait_for(lambda: len(running_operator_pods()) >= 2 and holder() in running_operator_pods(), 180,
             "two operator replicas, one holding the Lease")
    old = holder()
    killed = time.monotonic()
    # --force --grace-period=0: no clean release of the Lease; the standby must wait it out.
    kubectl("delete", "pod", old, "-n", OPERATOR_NAMESPACE, "--force", "--grace-period=0", "--wait=false")
    new = wait_for(lambda: (h := holder()) and h != old and h in running_operator_pods() and h, 60,
                   "another replica to take the Lease", interval=0.5)
    took = time.monotonic() - killed
    assert took <= TAKEOVER_BUDGET_S, f"{new} took the Lease {took:.1f} s after {old} was killed"

    # The new leader does the work: a fresh Architecture becomes Ready.
    spec = {"database": {"followers": 0, "failover": {"enabled": False}},
            "cache": {"enabled": False}, "cdn": {"enabled": False}, "ingress": {"enabled": False},
            "app": {"replicas": 1}}
    apply_manifest(architecture("ha", spec), "-n", namespace)
    kubectl("wait", "--for=condition=Ready", "architectures.archop.io/ha", "-n", namespace, "--timeout=240s",
            timeout=260)
    kubectl("rollout", "status", "deployment", "-n", OPERATOR_NAMESPACE,
            "-l", "app.kubernetes.io/name=archop", "--timeout=180s", timeout=200)
