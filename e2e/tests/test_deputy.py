"""The operator is nobody's deputy: an object that merely has a child's name is not taken over, and an
ingress host another Architecture holds is not handed to a second one.

1. A user's own Service `deputy-db-rw` exists before the Architecture `deputy`: the operator leaves it
   exactly as it is (resourceVersion, labels, no owner reference), applies nothing at all, and says why
   (ChildrenOwned=False with reason ForeignObject, a ForeignObject Warning event naming the Service). Once
   the Service is deleted, the stack comes up by itself (the operator looks again every minute).
2. A second Architecture in another namespace asks for the first one's ingress host: it gets no Ingress,
   IngressReady=False with reason IngressHostTaken and a Warning event naming the first one, while the
   first keeps its Ingress and keeps answering through the ingress controller.

Small stacks (one database pod, no cache, no CDN): ownership is under test, not the tiers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import (
    OPERATOR_NAMESPACE,
    apply_manifest,
    architecture,
    architecture_events,
    condition,
    get_json,
    kubectl,
    scratch_namespace,
    wait_for,
    wait_until_serving,
)

NAME = "deputy"
RIVAL = "rival"
ARCH = "architectures.archop.io"
RETRY = 60  # ownership.RETRY_SECONDS: how often a blocked reconcile looks again
SETTLE_TIMEOUT = 120  # a first reconcile, its status and events
UNBLOCK_TIMEOUT = RETRY + 180  # the next retry, then the whole small stack applied
SERVE_TIMEOUT = 420  # initdb and the app's first readiness


def small(host: str) -> dict[str, Any]:
    return {"database": {"followers": 0, "failover": {"enabled": False}}, "cache": {"enabled": False},
            "cdn": {"enabled": False}, "app": {"replicas": 1}, "ingress": {"host": host}}


def foreign_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"{NAME}-db-rw", "labels": {"team": "someone-else"}},
        "spec": {"selector": {"app": "someone-else"},
                 "ports": [{"name": "pg", "port": 5432, "targetPort": 5432}]},
    }


def arch(namespace: str, name: str) -> dict[str, Any]:
    return get_json(ARCH, name, namespace=namespace)


def events(namespace: str, name: str, reason: str) -> list[str]:
    return [e.get("message", "") for e in architecture_events(namespace, name, reason)
            if e.get("type") == "Warning"]


def has_condition(namespace: str, name: str, type_: str, status: str, reason: str) -> dict[str, Any] | None:
    cond = condition(arch(namespace, name), type_) or {}
    return cond if (cond.get("status"), cond.get("reason")) == (status, reason) else None


@pytest.fixture(scope="module")
def host(namespace: str) -> str:
    return f"{namespace}.archop.test"


@pytest.fixture(scope="module")
def blocked(namespace: str, host: str) -> dict[str, Any]:
    """The foreign Service, then the Architecture: the Service as it was before the Architecture came."""
    apply_manifest(foreign_service(), "-n", namespace)
    before = get_json("service", f"{NAME}-db-rw", namespace=namespace)
    apply_manifest(architecture(NAME, small(host)), "-n", namespace)
    wait_for(lambda: has_condition(namespace, NAME, "ChildrenOwned", "False", "ForeignObject"),
             SETTLE_TIMEOUT, "ChildrenOwned=False (ForeignObject)")
    return before


@pytest.fixture(scope="module")
def other_namespace() -> Iterator[str]:
    with scratch_namespace("e2e-deputy-b") as name:
        yield name


def test_a_foreign_object_is_left_untouched(blocked: dict[str, Any], namespace: str) -> None:
    now = get_json("service", f"{NAME}-db-rw", namespace=namespace)
    assert now["metadata"]["resourceVersion"] == blocked["metadata"]["resourceVersion"]
    assert now["metadata"].get("labels") == blocked["metadata"].get("labels")
    assert not now["metadata"].get("ownerReferences")
    assert now["spec"]["selector"] == {"app": "someone-else"}
    managers = {m.get("manager") for m in now["metadata"].get("managedFields") or []}
    assert "archop" not in managers, managers


def test_nothing_else_is_applied_and_the_architecture_says_why(blocked: dict[str, Any],
                                                               namespace: str) -> None:
    cond = has_condition(namespace, NAME, "ChildrenOwned", "False", "ForeignObject")
    assert cond and f"Service {NAME}-db-rw" in cond["message"]
    assert arch(namespace, NAME)["status"]["foreignObjects"] == [f"Service {NAME}-db-rw"]
    messages = wait_for(lambda: events(namespace, NAME, "ForeignObject"), SETTLE_TIMEOUT,
                        "a ForeignObject Warning event")
    assert any(m.startswith(f"Service {NAME}-db-rw ") for m in messages), messages
    # Nothing half-applied: no workload, no generated Secret, no other Service.
    for kind, name in (("statefulset", f"{NAME}-db"), ("deployment", f"{NAME}-app"),
                       ("secret", f"{NAME}-db-app"), ("service", f"{NAME}-app")):
        assert get_json(kind, name, namespace=namespace, missing_ok=True) is None, (kind, name)


def test_the_stack_comes_up_once_the_object_is_gone(blocked: dict[str, Any], namespace: str,
                                                    host: str) -> None:
    kubectl("delete", "service", f"{NAME}-db-rw", "-n", namespace, "--wait=true", timeout=60)
    wait_for(lambda: has_condition(namespace, NAME, "ChildrenOwned", "True", "AllChildrenOwned"),
             UNBLOCK_TIMEOUT, "ChildrenOwned=True once the foreign Service is gone")
    rw = wait_for(lambda: get_json("service", f"{NAME}-db-rw", namespace=namespace, missing_ok=True),
                  SETTLE_TIMEOUT, f"the operator's own {NAME}-db-rw")
    assert rw["metadata"]["ownerReferences"][0]["uid"] == arch(namespace, NAME)["metadata"]["uid"]
    ingress = wait_for(lambda: get_json("ingress", f"{NAME}-ingress", namespace=namespace, missing_ok=True),
                       SETTLE_TIMEOUT, f"Ingress {NAME}-ingress")
    assert [r.get("host") for r in ingress["spec"]["rules"]] == [host]
    assert arch(namespace, NAME)["status"]["ingressHost"] == {"host": host, "state": "Granted", "heldBy": ""}


def test_a_second_architecture_cannot_take_the_host(blocked: dict[str, Any], namespace: str, host: str,
                                                   other_namespace: str) -> None:
    first_ingress = wait_for(lambda: get_json("ingress", f"{NAME}-ingress", namespace=namespace,
                                              missing_ok=True), UNBLOCK_TIMEOUT, f"Ingress {NAME}-ingress")
    apply_manifest(architecture(RIVAL, small(host)), "-n", other_namespace)
    cond = wait_for(
        lambda: has_condition(other_namespace, RIVAL, "IngressReady", "False", "IngressHostTaken"),
        SETTLE_TIMEOUT, "the rival's IngressReady=False (IngressHostTaken)")
    assert f"{namespace}/{NAME}" in cond["message"]
    messages = wait_for(lambda: events(other_namespace, RIVAL, "IngressHostTaken"), SETTLE_TIMEOUT,
                        "an IngressHostTaken Warning event on the rival")
    assert any(f"{namespace}/{NAME}" in m for m in messages), messages
    recorded = arch(other_namespace, RIVAL)["status"]["ingressHost"]
    assert recorded == {"host": host, "state": "Taken", "heldBy": f"{namespace}/{NAME}"}
    # The rest of the rival's stack is applied; only its Ingress is not.
    wait_for(lambda: get_json("deployment", f"{RIVAL}-app", namespace=other_namespace, missing_ok=True),
             SETTLE_TIMEOUT, "the rival's app Deployment")
    assert get_json("ingress", f"{RIVAL}-ingress", namespace=other_namespace, missing_ok=True) is None
    # The first keeps its Ingress as it was.
    still = get_json("ingress", f"{NAME}-ingress", namespace=namespace)
    assert still["metadata"]["uid"] == first_ingress["metadata"]["uid"]
    assert [r.get("host") for r in still["spec"]["rules"]] == [host]
    assert arch(namespace, NAME)["status"]["ingressHost"]["state"] == "Granted"


def test_the_first_keeps_serving(blocked: dict[str, Any], namespace: str, host: str,
                                 other_namespace: str) -> None:
    wait_until_serving(host, SERVE_TIMEOUT)
    assert arch(namespace, NAME)["status"]["ingressHost"]["state"] == "Granted"
    assert get_json("ingress", f"{RIVAL}-ingress", namespace=other_namespace, missing_ok=True) is None


LISTENER = ("$|=1; my $s = IO::Socket::INET->new(LocalPort => 5432, Listen => 16, ReuseAddr => 1) or die $!;"
            " print qq(listening\n);"
            " while (my $c = $s->accept) { print q(connection from ), $c->peerhost, qq(\n); close $c }")


def impostor(namespace: str, image: str) -> dict[str, Any]:
    """A pod with the database pods' labels that logs every TCP connection to the Postgres port."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "impostor", "namespace": namespace,
                     "labels": {"archop.io/architecture": NAME, "app.kubernetes.io/component": "database"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 999, "runAsGroup": 999,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "listener", "image": image, "command": ["perl", "-MIO::Socket::INET", "-e", LISTENER],
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }


def test_a_pod_that_copies_the_database_labels_is_never_sent_the_password(blocked: dict[str, Any],
                                                                         namespace: str, host: str) -> None:
    """The monitor probes as the superuser; a pod that is not its StatefulSet's must get no connection."""
    wait_until_serving(host, SERVE_TIMEOUT)
    sts = get_json("statefulset", f"{NAME}-db", namespace=namespace)
    apply_manifest(impostor(namespace, sts["spec"]["template"]["spec"]["containers"][0]["image"]))
    kubectl("wait", "--for=condition=Ready", "pod/impostor", "-n", namespace, "--timeout=120s", timeout=130)

    def listener_log() -> str:
        return kubectl("logs", "impostor", "-n", namespace).stdout

    wait_for(lambda: "listening" in listener_log(), 60, "the impostor's listener")
    # The listener does log connections: one from inside the pod.
    kubectl("exec", "impostor", "-n", namespace, "--", "perl", "-MIO::Socket::INET", "-e",
            "IO::Socket::INET->new(q(127.0.0.1:5432)) or die $!")
    wait_for(lambda: "connection from 127.0.0.1" in listener_log(), 30, "the listener's own test connection")

    def operator_skipped_it() -> bool:
        logs = kubectl("logs", "-n", OPERATOR_NAMESPACE, "-l",
                       "app.kubernetes.io/name=archop,app.kubernetes.io/component=operator", "--tail=-1",
                       "--prefix", check=False).stdout
        return "impostor" in logs and "never probed" in logs

    wait_for(operator_skipped_it, 60, "the operator's log line naming the ignored pod")
    time.sleep(5)  # five more monitor ticks after the one that named it
    others = [line for line in listener_log().splitlines()
              if line.startswith("connection from") and line != "connection from 127.0.0.1"]
    assert others == [], f"the impostor was connected to: {others}"
