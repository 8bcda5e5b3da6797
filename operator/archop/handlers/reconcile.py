"""Reconcile one Architecture: parse the spec, build every child, create Secrets once, apply, prune,
then tell the story in events, status and metrics. Also the delete handler (volumes per reclaimPolicy).
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import kopf

from archop import apply, config, events, metrics, names, reasons, status
from archop.build import absent_optional_children, build_all, cdn, secrets
from archop.spec import ArchitectureSpec

COMPONENT = "architecture"  # the metrics label of this handler

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_FACTORS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity_bytes(text: str) -> float:
    m = _QUANTITY.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a storage quantity")
    return float(m.group(1)) * _FACTORS[m.group(2)]


def unsafe_changes(old: ArchitectureSpec, new: ArchitectureSpec) -> list[str]:
    """Changes that would destroy data or cannot be carried out. The CRD refuses them too; this is the
    second line for objects admitted before a rule existed."""
    problems = []
    if quantity_bytes(new.database.storage_size) < quantity_bytes(old.database.storage_size):
        problems.append(f"database.storage.size may not shrink ({old.database.storage_size} -> "
                        f"{new.database.storage_size}); set it back to {old.database.storage_size} or more")
    if new.database.storage_class != old.database.storage_class:
        problems.append("database.storage.storageClassName is immutable; set it back to "
                        f"{old.database.storage_class or '(unset)'}")
    return problems


def deployed_storage(statefulset: dict[str, Any] | None) -> tuple[str, str | None] | None:
    """(size, storage class) of the database's volume template as deployed, or None before the first apply."""
    templates = ((statefulset or {}).get("spec") or {}).get("volumeClaimTemplates") or []
    if not templates:
        return None
    pvc = templates[0].get("spec") or {}
    return str(pvc["resources"]["requests"]["storage"]), pvc.get("storageClassName")


def keep_volume_template(manifests: list[dict[str, Any]], statefulset: str, size: str) -> None:
    """A StatefulSet's volume template is immutable: keep the deployed size (growth goes to the PVCs)."""
    for m in manifests:
        if m["kind"] == "StatefulSet" and m["metadata"]["name"] == statefulset:
            for template in m["spec"].get("volumeClaimTemplates") or []:
                template["spec"]["resources"]["requests"]["storage"] = size


def _grow_volumes(client: Any, body: dict[str, Any], name: str, namespace: str, size: str) -> None:
    grown, refused = apply.grow_volumes(client, name, namespace, size,
                                        lambda a, b: quantity_bytes(a) < quantity_bytes(b))
    if grown:
        events.emit(body, reasons.VOLUMES_GROWN, f"Asked for {size} on {', '.join(grown)}")
    if refused:
        events.emit(body, reasons.VOLUME_GROWTH_REFUSED, "; ".join(refused), warning=True)


def summary(manifests: list[dict[str, Any]], pruned: list[dict[str, Any]]) -> str:
    """A one-line account of an apply: "Applied 16 children (Deployment x2, Service x6, ...)"."""
    kinds = Counter(m["kind"] for m in manifests)
    text = f"Applied {len(manifests)} children ({', '.join(f'{k} x{n}' for k, n in sorted(kinds.items()))})"
    if pruned:
        text += "; removed " + ", ".join(f"{m['kind']} {m['metadata']['name']}" for m in pruned)
    return text


def reconcile_status(
    name: str, namespace: str, spec: ArchitectureSpec, current: dict[str, Any], generation: int, now: str
) -> dict[str, Any]:
    """The status patch of a reconcile: what was applied, and starting conditions for a new object.

    Conditions are written only while some are missing: after that the monitor daemon owns them, and
    a reconcile holding an older copy must not overwrite its fresher view.
    """
    patch: dict[str, Any] = {
        "observedGeneration": generation,
        "endpoints": status.endpoints(name, namespace, spec),
        "followersDesired": spec.database.followers,
    }
    conditions = list(current.get("conditions") or [])
    have = {c.get("type") for c in conditions}
    if not set(reasons.CONDITION_TYPES) <= have:
        patch["conditions"] = status.initial_conditions(conditions, generation, now)
    if "followers" not in current:
        patch["followers"] = status.ratio(0, spec.database.followers)
    if "appReady" not in current:
        patch["appReady"] = status.ratio(0, spec.app.replicas)
    return patch


def _followers_of(body: dict[str, Any] | None) -> int | None:
    if not body:
        return None
    return ArchitectureSpec.parse(body.get("spec")).database.followers


def reconcile(
    name: str,
    namespace: str,
    body: dict[str, Any],
    spec: dict[str, Any],
    status_: dict[str, Any],
    generation: int,
    logger: logging.Logger | logging.LoggerAdapter,
    old: dict[str, Any] | None = None,
) -> None:
    """Bring the children of Architecture `name` in line with its spec. Idempotent; kopf retries errors."""
    started = time.monotonic()
    metrics.reconcile_total.labels(COMPONENT).inc()
    try:
        _reconcile(name, namespace, body, spec, status_, generation, logger, old)
    except kopf.PermanentError as exc:
        metrics.reconcile_errors_total.labels(COMPONENT).inc()
        events.emit(body, reasons.RECONCILE_FAILED, str(exc), warning=True)
        raise
    except kopf.TemporaryError as exc:
        metrics.reconcile_errors_total.labels(COMPONENT).inc()
        events.emit(body, reasons.RECONCILE_FAILED, f"{exc}; retrying", warning=True)
        raise
    finally:
        metrics.reconcile_duration_seconds.labels(COMPONENT).observe(time.monotonic() - started)


def _reconcile(
    name: str,
    namespace: str,
    body: dict[str, Any],
    raw_spec: dict[str, Any],
    current_status: dict[str, Any],
    generation: int,
    logger: logging.Logger | logging.LoggerAdapter,
    old: dict[str, Any] | None,
) -> None:
    settings = config.settings()
    try:
        spec = ArchitectureSpec.parse(raw_spec)
    except (TypeError, ValueError) as exc:
        raise kopf.PermanentError(f"spec cannot be read: {exc}") from exc
    client = apply.api()
    # What is deployed is the truth to compare with (kopf's last-handled copy may predate defaults).
    deployed = deployed_storage(apply.get(client, "apps/v1", "StatefulSet", namespace, names.db(name)))
    if deployed is not None:
        size, storage_class = deployed
        was = replace(spec, database=replace(spec.database, storage_size=size, storage_class=storage_class))
        problems = unsafe_changes(was, spec)
        if problems:
            message = "; ".join(problems)
            events.emit(body, reasons.UNSAFE_CHANGE_REFUSED, message, warning=True)
            raise kopf.PermanentError(message)

    conf = cdn.nginx_conf(spec) if spec.cdn.enabled else ""
    manifests = build_all(name, namespace, spec, settings, conf,
                          current_leader=current_status.get("currentLeader"))
    if deployed is not None:
        keep_volume_template(manifests, names.db(name), deployed[0])
        if quantity_bytes(deployed[0]) < quantity_bytes(spec.database.storage_size):
            _grow_volumes(client, body, name, namespace, spec.database.storage_size)

    created = [s["metadata"]["name"] for s in secrets.build_secrets(name, namespace)
               if apply.create_if_absent(client, s, owner=body)]
    if created:
        events.emit(body, reasons.SECRETS_CREATED, f"Created Secrets {', '.join(created)}")

    apply.apply_all(client, manifests, owner=body)
    leftovers = absent_optional_children(name, namespace, manifests)
    pruned = [stub for stub in leftovers if apply.delete(client, stub)]
    events.emit(body, reasons.CHILDREN_APPLIED, summary(manifests, pruned))

    before = _followers_of(old)
    if before is not None and before != spec.database.followers:
        events.emit(body, reasons.FOLLOWERS_SCALED,
                    f"Followers scaled from {before} to {spec.database.followers}")

    apply.patch_status(client, name, namespace,
                       reconcile_status(name, namespace, spec, current_status, generation, status.now_iso()))
    logger.info("reconciled generation %s: %s", generation, summary(manifests, pruned))


def delete(
    name: str,
    namespace: str,
    body: dict[str, Any],
    spec: dict[str, Any],
    logger: logging.Logger | logging.LoggerAdapter,
) -> None:
    """Before the finalizer goes: volumes deleted or kept per reclaimPolicy. Everything else is owned by
    the Architecture and left to the garbage collector."""
    parsed = ArchitectureSpec.parse(spec)
    client = apply.api()
    if parsed.database.reclaim_policy == "Delete":
        volumes = apply.delete_volumes(client, name, namespace)
        message = f"Deleting; volumes deleted: {', '.join(volumes) or 'none'}"
    else:
        # Kept volumes are useless without the passwords inside them: keep the database Secrets too.
        kept = [s for s in (names.db_secret(name, u) for u in secrets.DB_USERS)
                if apply.release(client, "v1", "Secret", namespace, s)]
        message = f"Deleting; volumes kept (reclaimPolicy Retain) with Secrets {', '.join(kept) or 'none'}"
    events.emit(body, reasons.DELETING, message)
    metrics.forget_architecture(namespace, name)
    logger.info(message)
