"""The API server's own CRD and custom-resource validation, offline: testsupport/crdcheck (Go) links
k8s.io/apiextensions-apiserver at the cluster's Kubernetes version and runs, for the CRD, what a CRD create
runs (structural schema, CEL compilation and estimated cost) and, for objects, what a create or update of
an Architecture runs (pruning, defaulting, OpenAPI and CEL validation, transition rules).

The binary is built once per version of its sources into the cache; without a Go toolchain (or with a
build that fails) `available()` says why and the tests that need it skip.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().parent / "crdcheck"
CACHE = Path(os.environ.get("ARCHOP_CACHE", "/var/cache/archop")) / "crdcheck"


def _digest() -> str:
    h = hashlib.sha256()
    for name in ("main.go", "go.mod", "go.sum"):
        h.update((SOURCE / name).read_bytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _build() -> tuple[Path | None, str]:
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        return None, "no Go toolchain"
    binary = CACHE / f"crdcheck-{_digest()}"
    if binary.exists():
        return binary, ""
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_suffix(".tmp")
    proc = subprocess.run([go, "build", "-o", str(tmp), "."], cwd=SOURCE, capture_output=True, text=True,
                          timeout=1800, check=False)
    if proc.returncode != 0:
        return None, f"go build failed: {proc.stderr[-2000:]}"
    tmp.rename(binary)
    return binary, ""


def available() -> tuple[bool, str]:
    binary, why = _build()
    return binary is not None, why


def _run(crd: Path, mode: str, stdin: str = "") -> Any:
    binary, why = _build()
    if binary is None:
        raise RuntimeError(why)
    proc = subprocess.run([str(binary), str(crd), mode], input=stdin, capture_output=True, text=True,
                          timeout=300, check=True)
    return json.loads(proc.stdout)


def crd_errors(crd: Path) -> list[str]:
    """What the API server would refuse in the CRD itself (including CEL rules over the cost budget)."""
    return list(_run(crd, "crd"))


def object_errors(crd: Path, cases: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> list[list[str]]:
    """For each (object, old object or None): the errors of a create (old None) or an update."""
    items = [{"obj": obj, "old": old} for obj, old in cases]
    return [r["errors"] for r in _run(crd, "objects", json.dumps(items))]
