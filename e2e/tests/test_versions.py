"""The PostgreSQL major version of running data never changes (docs/failover.md, "Postgres versions").

One small Architecture (one database pod, no app, no cache) that leaves spec.database.image unset, so that
it runs the operator's default image, PostgreSQL 15. The tests prove:

- the monitor records the data's major version (status.postgresMajor is 15);
- the API server's transition rule: with spec.database.image stored as the running image (tag 15), a change
  to tag 16 is refused, naming both majors; the same major pinned by digest (`:15@sha256:...`) is accepted
  (server-side dry runs: nothing is stored);
- the operator's guard, for what the rule cannot see (an image set where none was: there is no old value to
  compare): tag 16 is admitted by the API server but not rolled out. status.majorUpgradeRefused says what
  and why, DatabaseReady turns False (reason MajorUpgradeRefused, naming spec.database.image), Ready
  False, one Warning event MajorUpgradeRefused; the StatefulSet keeps its images and its revision and the
  database pod is not replaced, for as long as it is watched;
- removing the field again lifts the refusal: Ready again, the same pod.

The tag 16 image is never pulled: nothing may start it.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest
from conftest import (
    apply_manifest,
    architecture,
    architecture_events,
    condition,
    get_json,
    kubectl,
    wait_for,
)

NAME = "ver"
ARCH = "architectures.archop.io"
READY_TIMEOUT = 600
SETTLE_TIMEOUT = 180  # a reconcile, then the monitor's next tick
HOLD_S = 30  # how long the refused image is watched not being rolled out
DIGEST = "sha256:" + "0123456789abcdef" * 4


def arch(namespace: str) -> dict[str, Any]:
    return get_json(ARCH, NAME, namespace=namespace)


def status(namespace: str) -> dict[str, Any]:
    return arch(namespace).get("status") or {}


def settled_and_ready(namespace: str) -> bool:
    """The reconcile has seen the latest spec and the Architecture is Ready."""
    obj = arch(namespace)
    st = obj.get("status") or {}
    ready = condition(obj, "Ready") or {}
    return st.get("observedGeneration") == obj["metadata"]["generation"] and ready.get("status") == "True"


def statefulset_state(namespace: str) -> dict[str, Any]:
    """What a rollout would change: every container image of the database StatefulSet, its update revision,
    and the database pods by uid."""
    sts = get_json("statefulset", f"{NAME}-db", namespace=namespace)
    pod_spec = sts["spec"]["template"]["spec"]
    containers = pod_spec.get("initContainers", []) + pod_spec["containers"]
    pods = get_json("pods", "-l", f"archop.io/architecture={NAME},app.kubernetes.io/component=database",
                    namespace=namespace)["items"]
    return {
        "images": {c["name"]: c["image"] for c in containers},
        "updateRevision": sts["status"].get("updateRevision"),
        "pods": {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods},
    }


def running_image(namespace: str) -> str:
    sts = get_json("statefulset", f"{NAME}-db", namespace=namespace)
    containers = sts["spec"]["template"]["spec"]["containers"]
    return str(next(c["image"] for c in containers if c["name"] == "postgres"))


def repository_and_tag(image: str) -> tuple[str, str]:
    """`registry/path:tag@digest` -> (`registry/path`, `tag`); only the last path segment has a tag."""
    rest = image.partition("@")[0]
    slash = rest.rfind("/") + 1
    name, _, tag = rest[slash:].partition(":")
    return rest[:slash] + name, tag


def set_image(namespace: str, image: str, *extra: str) -> subprocess.CompletedProcess[str]:
    patch = json.dumps({"spec": {"database": {"image": image}}})
    return kubectl("patch", ARCH, NAME, "-n", namespace, "--type", "merge", "-p", patch, *extra, check=False)


def unset_image(namespace: str) -> None:
    if "image" in arch(namespace)["spec"]["database"]:
        kubectl("patch", ARCH, NAME, "-n", namespace, "--type", "json", "-p",
                json.dumps([{"op": "remove", "path": "/spec/database/image"}]))


def refusal_events(namespace: str) -> list[dict[str, Any]]:
    events = architecture_events(namespace, NAME, "MajorUpgradeRefused")
    return [e for e in events if e.get("type") == "Warning"]


@pytest.fixture(scope="module")
def untouched(namespace: str) -> dict[str, Any]:
    """The Architecture Ready on the default image; the StatefulSet's state then, which no test may change."""
    spec = {"database": {"followers": 0, "failover": {"enabled": False}, "storage": {"size": "256Mi"}},
            "cache": {"enabled": False}, "app": {"enabled": False}}
    apply_manifest(architecture(NAME, spec), "-n", namespace)
    kubectl("wait", "--for=condition=Ready", f"{ARCH}/{NAME}", "-n", namespace, f"--timeout={READY_TIMEOUT}s",
            timeout=READY_TIMEOUT + 30)
    return statefulset_state(namespace)


def test_the_data_major_version_is_recorded(namespace: str, untouched: dict[str, Any]) -> None:
    major = wait_for(lambda: status(namespace).get("postgresMajor"), SETTLE_TIMEOUT,
                     "status.postgresMajor (an operator from before the pinned images does not write it)")
    assert major == 15, major
    _, tag = repository_and_tag(running_image(namespace))
    assert tag.split(".")[0] == "15", f"the default image's tag names PostgreSQL {tag}, the data 15"


@pytest.fixture(scope="module")
def pinned(namespace: str, untouched: dict[str, Any]) -> str:
    """spec.database.image stored as the image the database runs (tag 15): the old value the API server's
    transition rule compares an edit with. Nothing rolls: it is the image running already."""
    image = running_image(namespace)
    proc = set_image(namespace, image)
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: settled_and_ready(namespace), SETTLE_TIMEOUT, "Ready with spec.database.image set")
    assert statefulset_state(namespace) == untouched, "naming the running image in the spec rolled"
    return image


def test_the_api_server_refuses_another_major(namespace: str, pinned: str) -> None:
    repository, _ = repository_and_tag(pinned)
    proc = set_image(namespace, f"{repository}:16", "--dry-run=server")
    assert proc.returncode != 0, f"{repository}:16 accepted over {pinned}"
    assert "may not change the PostgreSQL major version from 15 to 16" in proc.stderr, proc.stderr
    assert arch(namespace)["spec"]["database"]["image"] == pinned


def test_the_api_server_accepts_the_same_major_by_digest(namespace: str, pinned: str) -> None:
    repository, tag = repository_and_tag(pinned)
    digested = f"{repository}:{tag}@{DIGEST}"
    proc = set_image(namespace, digested, "--dry-run=server", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["spec"]["database"]["image"] == digested
    assert arch(namespace)["spec"]["database"]["image"] == pinned  # a dry run stores nothing


def test_the_operator_refuses_another_major_set_where_none_was(namespace: str,
                                                               untouched: dict[str, Any]) -> None:
    unset_image(namespace)
    wait_for(lambda: settled_and_ready(namespace), SETTLE_TIMEOUT, "Ready with spec.database.image unset")
    running = running_image(namespace)
    repository, _ = repository_and_tag(running)
    wanted = f"{repository}:16"
    proc = set_image(namespace, wanted)
    assert proc.returncode == 0, f"the API server refused {wanted} where no image was set: {proc.stderr}"

    refused = wait_for(lambda: status(namespace).get("majorUpgradeRefused"), SETTLE_TIMEOUT,
                       "status.majorUpgradeRefused")
    assert refused == {"image": wanted, "source": "spec", "imageMajor": 16, "dataMajor": 15,
                       "runningImage": running}, refused

    def database_refused() -> dict[str, Any]:
        cond = condition(arch(namespace), "DatabaseReady") or {}
        return cond if (cond.get("status"), cond.get("reason")) == ("False", "MajorUpgradeRefused") else {}

    cond = wait_for(database_refused, SETTLE_TIMEOUT, "DatabaseReady=False (MajorUpgradeRefused)")
    assert "spec.database.image" in cond["message"], cond["message"]
    assert "PostgreSQL 16" in cond["message"] and "PostgreSQL 15" in cond["message"], cond["message"]
    wait_for(lambda: (condition(arch(namespace), "Ready") or {}).get("status") == "False", SETTLE_TIMEOUT,
             "Ready=False")
    wait_for(lambda: refusal_events(namespace), 60, "a MajorUpgradeRefused Warning event")

    # Nothing rolls onto the refused image, for as long as it is watched.
    deadline = time.monotonic() + HOLD_S
    while time.monotonic() < deadline:
        assert statefulset_state(namespace) == untouched, "the database StatefulSet or its pod changed"
        time.sleep(2)
    events = refusal_events(namespace)
    assert len(events) == 1 and int(events[0].get("count") or 1) == 1, [
        (e.get("count"), e.get("message")) for e in events]
    assert status(namespace).get("majorUpgradeRefused") == refused


def test_removing_the_image_lifts_the_refusal(namespace: str, untouched: dict[str, Any]) -> None:
    unset_image(namespace)
    wait_for(lambda: settled_and_ready(namespace) and not status(namespace).get("majorUpgradeRefused"),
             SETTLE_TIMEOUT, "Ready, with no major upgrade refused")
    cond = condition(arch(namespace), "DatabaseReady") or {}
    assert cond.get("status") == "True", cond
    assert statefulset_state(namespace) == untouched, "the database StatefulSet or its pod changed"
