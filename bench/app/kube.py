"""kubectl steps of the app benchmark: switch the Architecture's CDN and cache, wait for the rollout."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from archop import names


def kubectl(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def get_arch(arch: str, namespace: str) -> dict[str, Any]:
    out = kubectl("get", f"{names.PLURAL}.{names.GROUP}", arch, "-n", namespace, "-o", "json")
    return dict(json.loads(out))


def ingress_host(obj: dict[str, Any]) -> str | None:
    """The Host header the Ingress routes on; None for a catch-all rule (host "")."""
    ingress = obj.get("spec", {}).get("ingress") or {}
    host = ingress.get("host", "archop.local")
    return host or None


def current_flags(obj: dict[str, Any]) -> tuple[bool, bool]:
    spec = obj.get("spec", {})
    return (bool((spec.get("cdn") or {}).get("enabled", True)),
            bool((spec.get("cache") or {}).get("enabled", True)))


def set_flags(arch: str, namespace: str, cdn: bool, cache: bool, timeout_s: float = 600) -> None:
    """Patch spec.cdn.enabled / spec.cache.enabled and wait for the operator and the app rollout."""
    patch = {"spec": {"cdn": {"enabled": cdn}, "cache": {"enabled": cache}}}
    kubectl("patch", names.PLURAL + "." + names.GROUP, arch, "-n", namespace, "--type", "merge",
            "-p", json.dumps(patch))
    deadline = time.monotonic() + timeout_s
    # The operator has seen this generation and says Ready ...
    while True:
        obj = get_arch(arch, namespace)
        status = obj.get("status") or {}
        conditions = status.get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        if status.get("observedGeneration") == obj["metadata"]["generation"] and ready:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{arch} not Ready for generation {obj['metadata']['generation']}")
        time.sleep(2)
    # ... and the app Deployment it rewrote has finished rolling out.
    left = max(10, int(deadline - time.monotonic()))
    kubectl("rollout", "status", f"deployment/{names.app(arch)}", "-n", namespace, f"--timeout={left}s",
            timeout=left + 10)
