"""The Ingress N-ingress: outside HTTP traffic -> Service N-app."""

from __future__ import annotations

from typing import Any

from archop import names
from archop.build import APP_SERVICE_PORT, meta
from archop.spec import ArchitectureSpec


def build_ingress(arch: str, namespace: str, spec: ArchitectureSpec) -> list[dict]:
    ing = spec.ingress
    if not ing.enabled:
        return []
    rule: dict[str, Any] = {
        "http": {"paths": [{
            "path": ing.path,
            "pathType": "Prefix",
            "backend": {"service": {"name": names.app(arch), "port": {"number": APP_SERVICE_PORT}}},
        }]},
    }
    if ing.host:
        rule = {"host": ing.host, **rule}
    body: dict[str, Any] = {"rules": [rule]}
    if ing.class_name:
        body = {"ingressClassName": ing.class_name, **body}
    if ing.tls_secret_name:
        body["tls"] = [{"hosts": [ing.host], "secretName": ing.tls_secret_name}]
    return [{
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta(arch, namespace, names.ingress(arch), names.INGRESS),
        "spec": body,
    }]
