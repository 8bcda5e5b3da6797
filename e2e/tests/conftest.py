"""Shared e2e machinery: kubectl with timeouts, a fresh namespace per test module, waiting helpers.

The cluster comes from $KUBECONFIG; the operator is already installed by Helm in namespace archop-system.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
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


def http_call(host: str, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None,
              timeout: float = 10) -> tuple[int, dict[str, str], Any]:
    """One request through the ingress controller for Host `host`: (status, headers with lower-case names,
    the body as JSON, or as text when it is not JSON). An answer with an error status is returned, not
    raised; a request that gets no answer raises (URLError, OSError, TimeoutError)."""
    data = json.dumps(body).encode() if body is not None else None
    all_headers = {"Host": host, "Content-Type": "application/json", **(headers or {})}
    request = urllib.request.Request(f"{ingress_url()}{path}", data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _lower(response.headers.items()), _decoded(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _lower(exc.headers.items()), _decoded(exc.read())


def _lower(items: Any) -> dict[str, str]:
    """Header names are case-insensitive (the ingress controller, in Go, rewrites X-DB-Pool as X-Db-Pool)."""
    return {k.lower(): v for k, v in items}


def _decoded(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return raw.decode(errors="replace")


class IngressWriter:
    """Writes through the whole request path (ingress controller, CDN sidecar, app, leader): a thread POSTs
    /users for Host `host`, one request at a time, one every `interval` seconds, each bounded by `timeout`.

    Every answer is logged with its wall-clock time in the shape of bench.failover.harness's writer (so that
    its `rto` applies): an acknowledgement is a 201 (with the user id the app gave), anything else (another
    status, no answer within `timeout`) an error, with what it was (a status or an exception's name)."""

    def __init__(self, host: str, interval: float = 0.1, timeout: float = 2.0) -> None:
        self.host, self.interval, self.timeout = host, interval, timeout
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._acks: list[tuple[int, float, int]] = []  # (attempt, time, user id)
        self._errors: list[tuple[int, float, str]] = []  # (attempt, time, what)
        self._thread = threading.Thread(target=self._run, name=f"writer-{host}", daemon=True)

    def start(self) -> IngressWriter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 10)

    def _run(self) -> None:
        attempt, next_at = 0, time.monotonic()
        while not self._stop.is_set():
            attempt += 1
            body: Any = None
            try:
                status, _, body = http_call(self.host, "POST", "/users", {"name": f"writer-{attempt}"},
                                            timeout=self.timeout)
                ok = status == 201 and isinstance(body, dict) and isinstance(body.get("id"), int)
                what = "" if ok else f"HTTP {status}"
            except Exception as exc:  # whatever it was (URLError, a timeout), it is no acknowledgement
                reason = getattr(exc, "reason", None)  # URLError's: what the connection died of
                ok, what = False, type(reason if isinstance(reason, BaseException) else exc).__name__
            with self._lock:
                if ok:
                    self._acks.append((attempt, time.time(), int(body["id"])))
                else:
                    self._errors.append((attempt, time.time(), what))
            next_at = max(next_at + self.interval, time.monotonic())
            self._stop.wait(next_at - time.monotonic())

    def acks(self) -> list[tuple[int, float]]:
        """(attempt, time) of every acknowledged write, as harness.Traffic.acks gives them."""
        with self._lock:
            return [(i, t) for i, t, _ in self._acks]

    def errors(self) -> list[tuple[int, float]]:
        """(attempt, time) of every failed write, as harness.Traffic.errors gives them."""
        with self._lock:
            return [(i, t) for i, t, _ in self._errors]

    def failures(self, since: float = 0.0) -> dict[str, int]:
        """What the failed writes since `since` were, counted: {"HTTP 502": 3, "TimeoutError": 1, ...}."""
        out: dict[str, int] = {}
        with self._lock:
            for _, t, what in self._errors:
                if t >= since:
                    out[what] = out.get(what, 0) + 1
        return out

    def ids(self) -> list[int]:
        """The ids of the users whose creation was acknowledged."""
        with self._lock:
            return [uid for _, _, uid in self._acks]

    def steady(self, count: int = 20) -> bool:
        """The last `count` writes were all acknowledged."""
        with self._lock:
            last_error = max((i for i, _, _ in self._errors), default=0)
            return sum(1 for i, _, _ in self._acks if i > last_error) >= count


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


def secret_data(namespace: str, name: str) -> dict[str, str]:
    """Every key of a Secret, decoded."""
    data = get_json("secret", name, namespace=namespace).get("data") or {}
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def superuser_sql(namespace: str, pod: str, sql: str, timeout: float = 60) -> str:
    """Run SQL (from stdin, stopping at the first error) in database `app` as the superuser, over the local
    socket of database pod `pod`'s postgres container; its output unaligned, tuples only."""
    script = 'psql -h /var/run/postgresql -U "$POSTGRES_USER" -d app -XAtq -v ON_ERROR_STOP=1 -f -'
    return kubectl("exec", "-i", "-n", namespace, pod, "-c", "postgres", "--", "bash", "-c", script,
                   stdin=sql, timeout=timeout).stdout.strip()


def operator_env(variable: str) -> str | None:
    """A setting of the installed operator: the value of `variable` in its Deployment's container."""
    selector = "app.kubernetes.io/name=archop,app.kubernetes.io/component=operator"
    deployments = get_json("deployment", "-l", selector, namespace=OPERATOR_NAMESPACE)["items"]
    assert deployments, f"no operator Deployment in {OPERATOR_NAMESPACE}"
    for container in deployments[0]["spec"]["template"]["spec"]["containers"]:
        for env in container.get("env") or []:
            if env["name"] == variable and "value" in env:
                return str(env["value"])
    return None


def leak_texts(namespace: str, arch: str) -> dict[str, str]:
    """Everywhere a secret must never appear, by name: Architecture `arch` (its status included), the
    namespace's events, the operator's logs and the logs of every container of the stack."""

    def logs(*where: str) -> str:
        return kubectl("logs", *where, "--tail=-1", "--all-containers", "--prefix", "--max-log-requests=20",
                       timeout=120).stdout

    return {
        "status": json.dumps(get_json("architectures.archop.io", arch, namespace=namespace)),
        "events": json.dumps(get_json("events", namespace=namespace)),
        "operator logs": logs("-n", OPERATOR_NAMESPACE, "-l", "app.kubernetes.io/name=archop"),
        "stack logs": logs("-n", namespace, "-l", f"archop.io/architecture={arch}"),
    }


def assert_no_leaks(secrets: Mapping[str, str], texts: Mapping[str, str]) -> None:
    """None of the secrets (label: value) appears in any of `texts` (leak_texts). The failure names the
    secrets by their labels and where they appear, never by their values."""
    found = {label: [where for where, text in texts.items() if secret in text]
             for label, secret in secrets.items()}
    leaked = [f"the {label} appears in: {', '.join(where)}" for label, where in found.items() if where]
    assert not leaked, "; ".join(leaked)


def architecture(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "archop.io/v1alpha1",
        "kind": "Architecture",
        "metadata": {"name": name},
        "spec": spec,
    }


def serving_stack(namespace: str, name: str, ready_timeout: float = 600) -> str:
    """The whole stack (one follower, two app pods, an ingress host of its own), Ready and serving through
    the ingress; returns its Host. The timeout covers initdb, a base backup and the app's first readiness."""
    host = f"{namespace}.archop.test"
    spec = {"database": {"followers": 1, "storage": {"size": "256Mi"}}, "app": {"replicas": 2},
            "ingress": {"host": host}}
    apply_manifest(architecture(name, spec), "-n", namespace)
    kubectl("wait", "--for=condition=Ready", f"architectures.archop.io/{name}", "-n", namespace,
            f"--timeout={ready_timeout:.0f}s", timeout=ready_timeout + 30)
    wait_until_serving(host, 300)
    return host


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
