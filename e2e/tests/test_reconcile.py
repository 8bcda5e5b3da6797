"""One Architecture through its life: Ready, children with owners and labels, HTTP through the ingress
controller, a write on the leader read back from a follower, scaling, events, and deletion."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from conftest import (
    apply_manifest,
    architecture,
    assert_no_leaks,
    condition,
    get_json,
    kubectl,
    leak_texts,
    secret_value,
    wait_for,
    wait_until_serving,
)

NAME = "shop"
READY_TIMEOUT = 600  # first start pulls nothing (offline images) but initdb and base backups take a while
SCALE_TIMEOUT = 420


@pytest.fixture(scope="module")
def host(namespace: str) -> str:
    return f"{namespace}.archop.test"


@pytest.fixture(scope="module")
def arch(namespace: str, host: str) -> dict[str, Any]:
    apply_manifest(architecture(NAME, {"ingress": {"host": host}}), "-n", namespace)
    kubectl(
        "wait",
        "--for=condition=Ready",
        f"architectures.archop.io/{NAME}",
        "-n",
        namespace,
        f"--timeout={READY_TIMEOUT}s",
        timeout=READY_TIMEOUT + 30,
    )
    return get_json("architectures.archop.io", NAME, namespace=namespace)


def expected_children() -> list[tuple[str, str]]:
    n = NAME
    return [
        ("secret", f"{n}-db-superuser"),
        ("secret", f"{n}-db-replication"),
        ("secret", f"{n}-db-app"),
        ("secret", f"{n}-cache"),
        ("configmap", f"{n}-db-config"),
        ("configmap", f"{n}-cdn"),
        ("service", f"{n}-db-headless"),
        ("service", f"{n}-db-rw"),
        ("service", f"{n}-db-ro"),
        ("service", f"{n}-db-r"),
        ("service", f"{n}-cache"),
        ("service", f"{n}-app"),
        ("statefulset", f"{n}-db"),
        ("deployment", f"{n}-cache"),
        ("deployment", f"{n}-app"),
        ("poddisruptionbudget", f"{n}-app"),
        ("ingress.networking.k8s.io", f"{n}-ingress"),
        ("networkpolicy", f"{n}-db"),
        ("networkpolicy", f"{n}-cache"),
        ("networkpolicy", f"{n}-app"),
    ]


def test_becomes_ready_with_status_filled_in(arch: dict[str, Any], namespace: str) -> None:
    status = arch["status"]
    ready = condition(arch, "Ready")
    assert ready and ready["status"] == "True" and ready["reason"] == "AllTiersReady"
    for type_ in ("DatabaseReady", "CacheReady", "AppReady", "IngressReady"):
        cond = condition(arch, type_)
        assert cond and cond["status"] == "True", cond
        assert cond["lastTransitionTime"] and cond["reason"]
    assert status["observedGeneration"] == arch["metadata"]["generation"]
    assert status["endpoints"]["readWrite"] == f"{NAME}-db-rw.{namespace}.svc:5432"
    assert status["currentLeader"].startswith(f"{NAME}-db-")
    assert status["followers"] == "2/2"
    table = kubectl("get", "architectures.archop.io", NAME, "-n", namespace).stdout
    assert table.split("\n")[0].split()[:5] == ["NAME", "READY", "LEADER", "FOLLOWERS", "APP"]
    assert table.split("\n")[1].split()[1:4] == ["True", status["currentLeader"], "2/2"]


def test_every_child_exists_owned_and_labelled(arch: dict[str, Any], namespace: str) -> None:
    uid = arch["metadata"]["uid"]
    for kind, name in expected_children():
        obj = get_json(kind, name, namespace=namespace)
        owners = obj["metadata"].get("ownerReferences") or []
        assert {"kind": "Architecture", "name": NAME, "uid": uid, "controller": True}.items() <= owners[
            0
        ].items(), (kind, name, owners)
        labels = obj["metadata"]["labels"]
        assert labels["archop.io/architecture"] == NAME and labels["app.kubernetes.io/managed-by"] == "archop"
        assert (
            labels["app.kubernetes.io/part-of"] == "archop" and labels["app.kubernetes.io/instance"] == NAME
        )


def test_database_pods_carry_exactly_one_leader(arch: dict[str, Any], namespace: str) -> None:
    pods = get_json(
        "pods",
        "-l",
        f"archop.io/architecture={NAME},app.kubernetes.io/component=database",
        namespace=namespace,
    )["items"]
    roles = sorted(p["metadata"]["labels"].get("archop.io/role", "") for p in pods)
    assert roles == ["follower", "follower", "leader"]
    leader = next(p for p in pods if p["metadata"]["labels"]["archop.io/role"] == "leader")
    assert leader["metadata"]["name"] == arch["status"]["currentLeader"]


def test_http_through_the_ingress_controller_reaches_the_app(arch: dict[str, Any], host: str) -> None:
    wait_until_serving(host, 120)


def psql(namespace: str, service: str, sql: str) -> str:
    """Run SQL as the app user through a Service, from inside a database pod: its env has the app user's
    name, its Secret volume the password (build/database.py, SECRETS_DIR; never an env variable)."""
    script = (
        'for d in /usr/lib/postgresql/*/bin; do [ -d "$d" ] && PATH="$d:$PATH"; done; '
        'PGPASSWORD="$(cat "${ARCHOP_SECRETS_DIR:-/etc/archop-secrets}/app-password")" '
        f'PGCONNECT_TIMEOUT=5 psql -h {service}.{namespace}.svc -U "$APP_USER" '
        "-d app -At -v ON_ERROR_STOP=1 -f -"
    )
    proc = kubectl(
        "exec",
        "-i",
        "-n",
        namespace,
        f"{NAME}-db-0",
        "-c",
        "postgres",
        "--",
        "bash",
        "-c",
        script,
        stdin=sql,
        timeout=60,
    )
    return proc.stdout.strip()


def test_write_on_the_leader_is_read_from_a_follower(arch: dict[str, Any], namespace: str) -> None:
    token = uuid.uuid4().hex
    assert psql(namespace, f"{NAME}-db-rw", "SELECT pg_is_in_recovery();") == "f"
    psql(
        namespace,
        f"{NAME}-db-rw",
        f"CREATE TABLE IF NOT EXISTS e2e_notes (note text); INSERT INTO e2e_notes VALUES ('{token}');",
    )
    assert psql(namespace, f"{NAME}-db-ro", "SELECT pg_is_in_recovery();") == "t"
    wait_for(
        lambda: (
            psql(namespace, f"{NAME}-db-ro", f"SELECT count(*) FROM e2e_notes WHERE note = '{token}';") == "1"
        ),
        60,
        "the row written through -rw to appear through -ro",
    )


def patch_spec(namespace: str, spec: dict[str, Any]) -> None:
    kubectl(
        "patch",
        "architectures.archop.io",
        NAME,
        "-n",
        namespace,
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": spec}),
    )


def followers_are(namespace: str, count: int) -> bool:
    arch = get_json("architectures.archop.io", NAME, namespace=namespace)
    sts = get_json("statefulset", f"{NAME}-db", namespace=namespace)
    status = arch.get("status") or {}
    ready = condition(arch, "Ready") or {}
    return (
        status.get("followersReady") == count
        and status.get("followersDesired") == count
        and sts["spec"]["replicas"] == count + 1
        and (sts["status"].get("readyReplicas") or 0) == count + 1
        and ready.get("status") == "True"
    )


@pytest.mark.parametrize("count", [3, 1])
def test_followers_scale(arch: dict[str, Any], namespace: str, count: int) -> None:
    patch_spec(namespace, {"database": {"followers": count}})
    wait_for(
        lambda: followers_are(namespace, count), SCALE_TIMEOUT, f"{count} ready followers and Ready=True"
    )


def test_app_replicas_change(arch: dict[str, Any], namespace: str) -> None:
    patch_spec(namespace, {"app": {"replicas": 3}})

    def three_ready() -> bool:
        dep = get_json("deployment", f"{NAME}-app", namespace=namespace)
        cond = condition(get_json("architectures.archop.io", NAME, namespace=namespace), "AppReady") or {}
        return (
            dep["spec"]["replicas"] == 3
            and dep["status"].get("readyReplicas") == 3
            and cond.get("message") == "3/3 app pods ready"
        )

    wait_for(three_ready, 300, "3 ready app pods reported in AppReady")


def test_events_tell_the_story(arch: dict[str, Any], namespace: str) -> None:
    def reasons() -> set[str]:
        events = get_json(
            "events",
            "--field-selector",
            f"involvedObject.kind=Architecture,involvedObject.name={NAME}",
            namespace=namespace,
        )
        return {e["reason"] for e in events["items"]}

    wait_for(
        lambda: {"SecretsCreated", "ChildrenApplied", "FollowersScaled"} <= reasons(),
        60,
        "SecretsCreated, ChildrenApplied and FollowersScaled events",
    )


def test_no_secret_leaks_into_status_events_or_logs(arch: dict[str, Any], namespace: str) -> None:
    """Neither a password nor a private key (the CA's, the server's) appears in the status, the events, the
    operator's logs or the logs of any container of the stack."""
    secrets = {f"{u} password": secret_value(namespace, f"{NAME}-db-{u}", "password")
               for u in ("superuser", "replication", "app")}
    secrets["cache password"] = secret_value(namespace, f"{NAME}-cache", "password")
    keys = (("CA key", f"{NAME}-ca", "ca.key"), ("server key", f"{NAME}-db-tls", "tls.key"))
    for label, secret, key in keys:
        pem = secret_value(namespace, secret, key)
        body = "".join(line for line in pem.splitlines() if line and not line.startswith("-----"))
        secrets[label] = body[:48]  # any 48 base64 characters of a key identify it; a log may wrap the rest

    seen = leak_texts(namespace, NAME)
    assert "archop-lease" in seen["stack logs"] or "database system is ready" in seen["stack logs"]
    for label, secret in secrets.items():
        assert len(secret) >= 32, label
    assert_no_leaks(secrets, seen)


def test_deleting_the_architecture_removes_every_child(arch: dict[str, Any], namespace: str) -> None:
    kubectl("delete", "architectures.archop.io", NAME, "-n", namespace, "--timeout=300s", timeout=330)

    def all_gone() -> bool:
        left = [
            (k, n) for k, n in expected_children() if get_json(k, n, namespace=namespace, missing_ok=True)
        ]
        pvcs = get_json("pvc", "-l", f"archop.io/architecture={NAME}", namespace=namespace)["items"]
        pods = get_json("pods", "-l", f"archop.io/architecture={NAME}", namespace=namespace)["items"]
        return not left and not pvcs and not pods

    wait_for(all_gone, 300, "every child, pod and volume of the Architecture to be deleted", interval=5)
