"""The namespaces e2e tests and benchmarks create: Pod Security `restricted` is enforced in each, so every pod
of the stack (and every client pod a test adds) must meet it, or the API server refuses it."""

from __future__ import annotations

from typing import Any

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def namespace_manifest(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(RESTRICTED)}}
