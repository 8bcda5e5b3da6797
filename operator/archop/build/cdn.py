"""The CDN tier's configuration: ConfigMap N-cdn holding the sidecar's nginx.conf.

The sidecar container itself is part of the app pods (build/app.py); the nginx.conf text comes from
build/nginx_conf.py (owned by the app side, since it must match how the app sets Cache-Control).
"""

from __future__ import annotations

from typing import Any

from archop import names
from archop.build import meta
from archop.spec import ArchitectureSpec

CONF_KEY = "nginx.conf"
CONF_DIR = "/etc/archop-cdn"
HEALTH_PATH = "/cdn-health"


def nginx_conf(spec: ArchitectureSpec) -> str:
    """Render the sidecar's nginx.conf for this spec."""
    # Imported here, not at module top: nginx_conf.py is another part's module and this one must import
    # cleanly on its own (the unit tests of the ConfigMap shape do not need the real template).
    from archop.build.nginx_conf import render_nginx_conf

    return render_nginx_conf(
        listen_port=spec.cdn.port,
        upstream_port=spec.app.port,
        cache_size=spec.cdn.cache_size,
        ttl_seconds=spec.cdn.ttl_seconds,
    )


def build_cdn(arch: str, namespace: str, spec: ArchitectureSpec, conf: str) -> list[dict]:
    """ConfigMap N-cdn with the rendered nginx.conf; nothing when the CDN is disabled."""
    if not spec.cdn.enabled:
        return []
    cm: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(arch, namespace, names.cdn(arch), names.APP),
        "data": {CONF_KEY: conf},
    }
    return [cm]
