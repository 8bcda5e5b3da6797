"""The operator's Helm life cycle, as a user drives it: upgrade to a changed value with the stack staying up,
`helm test`, uninstall (CRD and stacks stay), reinstall (the operator takes its stacks back).

conftest.py runs this module last: it uninstalls and reinstalls the operator the other modules use.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import (
    OPERATOR_NAMESPACE,
    ROOT,
    apply_manifest,
    architecture,
    condition,
    get_json,
    helm_ok,
    kubectl,
    wait_for,
)

NAME = "helm"
RELEASE = "archop"


class Watch:
    """Samples, every half second, the Architecture's Ready condition and an HTTP GET through the ingress."""

    def __init__(self, namespace: str, host: str) -> None:
        self.namespace, self.host = namespace, host
        self.base = os.environ["E2E_INGRESS_URL"]
        self.samples = 0
        self.not_ready: list[str] = []
        self.http_failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples += 1
            arch = get_json("architectures.archop.io", NAME, namespace=self.namespace)
            ready = condition(arch, "Ready")
            if not ready or ready["status"] != "True":
                self.not_ready.append(f"{time.strftime('%X')}: {ready}")
            request = urllib.request.Request(f"{self.base}/healthz", headers={"Host": self.host})
            try:
                with urllib.request.urlopen(request, timeout=3) as response:
                    if response.status != 200:
                        self.http_failures.append(f"{time.strftime('%X')}: HTTP {response.status}")
            except (urllib.error.URLError, OSError) as exc:
                self.http_failures.append(f"{time.strftime('%X')}: {exc}")
            self._stop.wait(0.5)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def operator_pods() -> list[dict[str, Any]]:
    pods = get_json("pods", "-l", "app.kubernetes.io/name=archop", namespace=OPERATOR_NAMESPACE)["items"]
    return [p for p in pods if p["metadata"].get("ownerReferences", [{}])[0].get("kind") == "ReplicaSet"
            and not p["metadata"].get("deletionTimestamp")]


@pytest.fixture(scope="module")
def stack(namespace: str) -> Iterator[str]:
    host = f"{namespace}.archop.test"
    spec = {"ingress": {"host": host}, "database": {"followers": 1}}
    apply_manifest(architecture(NAME, spec), "-n", namespace)
    kubectl("wait", "--for=condition=Ready", f"architectures.archop.io/{NAME}", "-n", namespace,
            "--timeout=300s", timeout=330)
    yield host


@pytest.fixture(scope="module")
def original_values() -> Iterator[Path]:
    """The release's values, so the module can put the operator back as it found it."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"archop-values-{os.getpid()}.yaml"
    path.write_text(helm_ok("get", "values", RELEASE, "-o", "yaml"))
    yield path
    # Whatever happened above, leave the operator installed as it was found.
    helm_ok("upgrade", "--install", RELEASE, str(ROOT / "charts" / "archop"), "-f", str(path), "--wait",
         "--timeout", "5m")
    path.unlink(missing_ok=True)


def test_upgrade_to_a_changed_value_keeps_the_stack_up(stack: str, namespace: str,
                                                       original_values: Path) -> None:
    before = {p["metadata"]["name"] for p in operator_pods()}
    values = yaml.safe_load(original_values.read_text()) or {}
    current = values.get("operator", {}).get("monitorIntervalSeconds")
    changed = "0.75" if current == 0.5 else "0.5"
    with Watch(namespace, stack) as watch:
        helm_ok("upgrade", RELEASE, str(ROOT / "charts" / "archop"), "--reuse-values",
             "--set-json", f"operator.monitorIntervalSeconds={changed}", "--wait", "--timeout", "5m")
        after = {p["metadata"]["name"] for p in operator_pods()}
        assert before.isdisjoint(after), "the changed value should have rolled the operator pods"
        env = operator_pods()[0]["spec"]["containers"][0]["env"]
        assert {"name": "ARCHOP_MONITOR_INTERVAL_SECONDS", "value": changed} in env
        time.sleep(10)  # the new leader has taken the Lease and watches again
    assert watch.samples > 10
    assert watch.not_ready == [], f"the Architecture left Ready during the upgrade: {watch.not_ready}"
    assert watch.http_failures == [], f"the app failed during the upgrade: {watch.http_failures}"


def test_helm_test_proves_the_operator_healthy(stack: str) -> None:
    out = helm_ok("test", RELEASE, "--timeout", "3m")
    assert "Phase:          Succeeded" in out or "Succeeded" in out, out


def test_uninstall_keeps_the_crd_and_the_running_stack(stack: str, namespace: str) -> None:
    helm_ok("uninstall", RELEASE, "--wait", "--timeout", "3m")
    wait_for(lambda: operator_pods() == [], 120, "the operator pods to go")
    kubectl("get", "crd", "architectures.archop.io")  # kept: helm.sh/resource-policy: keep
    arch = get_json("architectures.archop.io", NAME, namespace=namespace)
    assert arch["metadata"].get("deletionTimestamp") is None
    with Watch(namespace, stack) as watch:  # the data plane does not need the operator to serve
        time.sleep(5)
    assert watch.http_failures == []
    leader = get_json("pods", "-l", "archop.io/role=leader", namespace=namespace)["items"]
    assert len(leader) == 1


def test_reinstall_takes_the_stack_back(stack: str, namespace: str, original_values: Path) -> None:
    values = yaml.safe_load(original_values.read_text()) or {}
    helm_ok("upgrade", "--install", RELEASE, str(ROOT / "charts" / "archop"), "-f", str(original_values),
         "--wait", "--timeout", "5m")
    assert values == (yaml.safe_load(helm_ok("get", "values", RELEASE, "-o", "yaml")) or {})
    # The new operator resumes the Architecture: its status is written again.

    def fresh_status() -> bool:
        arch = get_json("architectures.archop.io", NAME, namespace=namespace)
        ready = condition(arch, "Ready")
        return bool(ready and ready["status"] == "True" and arch["status"].get("currentLeader"))

    wait_for(fresh_status, 180, "the reinstalled operator to report the Architecture Ready")
    # And it acts on changes again.
    kubectl("patch", "architectures.archop.io", NAME, "-n", namespace, "--type=merge",
            "-p", '{"spec": {"database": {"followers": 2}}}')

    def two_followers() -> bool:
        status = get_json("architectures.archop.io", NAME, namespace=namespace).get("status") or {}
        return status.get("followersReady") == 2

    wait_for(two_followers, 240, "the reinstalled operator to scale the followers to 2")
