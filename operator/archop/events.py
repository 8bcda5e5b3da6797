"""Kubernetes Events on the Architecture, through kopf's poster (works in handlers and daemons alike).

Messages are written for humans reading `kubectl describe arch`; they never carry a secret.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from archop import names

log = logging.getLogger("archop.events")


def object_ref(name: str, namespace: str, uid: str | None = None) -> dict[str, Any]:
    """A minimal body kopf can post an event for, when only the name is at hand."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if uid:
        meta["uid"] = uid
    return {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": meta}


def emit(body_or_ref: dict[str, Any], reason: str, message: str, warning: bool = False) -> None:
    """Post a Normal (or Warning) event with a CamelCase reason from archop.reasons."""
    try:
        if warning:
            kopf.warn(body_or_ref, reason=reason, message=message)  # type: ignore[arg-type]
        else:
            kopf.info(body_or_ref, reason=reason, message=message)  # type: ignore[arg-type]
    except LookupError:
        # Outside kopf's context (unit tests, CLI tools) there is no poster: keep the story in the log.
        log.log(logging.WARNING if warning else logging.INFO, "%s: %s", reason, message)
