"""Shared e2e machinery: kubectl with timeouts, a fresh namespace per test module, waiting helpers.

The cluster comes from $KUBECONFIG; the operator is already installed by Helm in namespace archop-system.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from testsupport.namespaces import namespace_manifest

ROOT = Path(__file__).resolve().parents[2]

OPERATOR_NAMESPACE = os.environ.get("E2E_OPERATOR_NAMESPACE", "archop-system")
HELM = os.environ.get("HELM", "/var/cache/archop/bin/helm")
T = TypeVar("T")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in e2e/tests needs the cluster."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
    # The Helm life cycle uninstalls and reinstalls the operator every other module relies on: run it last.
    items.sort(key=lambda item: Path(str(item.fspath)).name == "test_helm_lifecycle.py")


def kubectl(
    *args: str, stdin: str | None = None, timeout: float = 60, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run kubectl against $KUBECONFIG. With check, a non-zero exit fails with kubectl's own stderr."""
    proc = subprocess.run(
        ["kubectl", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def get_json(*args: str, namespace: str | None = None, missing_ok: bool = False) -> Any:
    ns = ["-n", namespace] if namespace else []
    proc = kubectl("get", *args, *ns, "-o", "json", check=not missing_ok)
    if proc.returncode != 0:
        if missing_ok and "NotFound" in proc.stderr:
            return None
        raise AssertionError(proc.stderr)
    return json.loads(proc.stdout)


def apply_manifest(obj: dict[str, Any], *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return kubectl("apply", *extra, "-f", "-", stdin=yaml.safe_dump(obj), check=check)


def wait_for(probe: Callable[[], T], timeout: float, what: str, interval: float = 2.0) -> T:
    """Poll until `probe` returns something truthy; fail naming `what` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (AssertionError, subprocess.TimeoutExpired) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")


def helm_ok(*args: str, timeout: float = 400) -> str:
    """helm in the operator's namespace (a later --namespace wins); a non-zero exit fails with its output."""
    proc = subprocess.run([HELM, *args, "--namespace", OPERATOR_NAMESPACE], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def ingress_url() -> str:
    base = os.environ.get("E2E_INGRESS_URL")
    assert base, "set E2E_INGRESS_URL to the ingress controller's address (http://<control-plane IP>:80)"
    return base.rstrip("/")


def healthz_ok(host: str) -> bool:
    """Whether the app answers 200 on /healthz for Host `host` through the ingress controller."""
    request = urllib.request.Request(f"{ingress_url()}/healthz", headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_until_serving(host: str, timeout: float) -> None:
    wait_for(lambda: healthz_ok(host), timeout, f"HTTP 200 on /healthz for Host {host} through the ingress")


@contextlib.contextmanager
def scratch_namespace(prefix: str) -> Iterator[str]:
    """A new namespace (Pod Security restricted enforced) named prefix-<random>; its Architectures and then
    the namespace itself are deleted afterwards, without waiting."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"[:63]
    apply_manifest(namespace_manifest(name))
    try:
        yield name
    finally:
        kubectl("delete", "architectures.archop.io", "--all", "-n", name, "--wait=false", check=False)
        kubectl("delete", "namespace", name, "--wait=false", check=False)


def secret_value(namespace: str, name: str, key: str) -> str:
    data = get_json("secret", name, namespace=namespace)["data"]
    return base64.b64decode(data[key]).decode()


def architecture(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "archop.io/v1alpha1",
        "kind": "Architecture",
        "metadata": {"name": name},
        "spec": spec,
    }


def example(stem: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "examples" / f"{stem}.yaml").read_text())


def architecture_events(namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    """The Events with this reason about Architecture `name`."""
    selector = f"involvedObject.kind=Architecture,involvedObject.name={name},reason={reason}"
    return list(get_json("events", "--field-selector", selector, namespace=namespace)["items"])


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


@pytest.fixture(scope="session", autouse=True)
def cluster_is_reachable() -> None:
    assert os.environ.get("KUBECONFIG"), "set KUBECONFIG to the e2e cluster's kubeconfig"
    kubectl("get", "crd", "architectures.archop.io", timeout=30)
    kubectl(
        "rollout",
        "status",
        "deployment",
        "-n",
        OPERATOR_NAMESPACE,
        "--timeout=180s",
        "-l",
        "app.kubernetes.io/name=archop",
        timeout=200,
        check=False,
    )


@pytest.fixture(scope="module")
def namespace(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for the test module, deleted (without waiting) afterwards."""
    module = request.module.__name__.rsplit(".", 1)[-1].replace("_", "-").removeprefix("test-")
    with scratch_namespace(f"e2e-{module}") as name:
        yield name
