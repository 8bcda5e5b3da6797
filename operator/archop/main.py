"""kopf decorators only: each one delegates to a function in archop.handlers.

Imported by cli.py right before kopf.run(), and only on the operator replica that holds the Lease. Each
entry point first asks archop.handlers.claim whether this release manages the Architecture: another live
release may have claimed it, and then this one does nothing to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from archop import config, hosts, names
from archop.handlers import certificates as certs
from archop.handlers import claim
from archop.handlers import monitor as db_monitor
from archop.handlers import passwords as pw
from archop.handlers import reconcile as rec

RESOURCE = (names.GROUP, names.VERSION, names.PLURAL)
PREFIX = names.GROUP  # annotations archop.io/last-handled-configuration and archop.io/<handler-id>


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Every kopf setting in one place."""
    ours = config.settings()
    settings.persistence.finalizer = names.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=PREFIX)
    # The Lease (election.py) already guarantees a single active operator: no kopf peering objects.
    settings.peering.standalone = True
    # Only Architectures are watched; no need to scan every CRD in the cluster.
    settings.scanning.disabled = True
    # Reconnect the watch well before proxies cut idle streams; fail fast when the API is unreachable.
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 70
    settings.watching.connect_timeout = 5
    settings.networking.connect_timeout = 5
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = names.MANAGER
    settings.posting.reporting_instance = ours.identity
    # Events for one Architecture are handled in order; a short idle timeout frees idle workers quickly.
    settings.queueing.worker_limit = 32
    settings.queueing.idle_timeout = 5.0
    settings.queueing.exit_timeout = 5.0
    # Daemons get 5 s to stop (cancellation_timeout below); don't wait longer on shutdown.
    settings.background.instant_exit_timeout = 5.0
    kopf.configure(log_format=kopf.LogFormat.JSON, log_refkey="object", log_prefix=False)


@kopf.index(*RESOURCE)
def ingress_hosts(*, body: kopf.Body, **_: Any) -> dict[str, hosts.Claim]:
    """Per ingress host, the Architectures that ask for it (archop.hosts): handlers get it as `ingress_hosts`.
    Built from kopf's own list and watch of Architectures, so it needs no API call of its own; kopf fills it
    before any handler runs."""
    return hosts.index_entry(body)


@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
@kopf.on.resume(*RESOURCE)
def reconcile(
    *, name: str, namespace: str | None, body: kopf.Body, spec: kopf.Spec, status: kopf.Status,
    meta: kopf.Meta, logger: kopf.Logger, old: Any = None,
    ingress_hosts: kopf.Index[str, hosts.Claim] | None = None, **_: Any,
) -> None:
    if not claim.may_act(body):
        return
    # With field="spec" kopf hands over the old *spec* on updates (None on create and resume).
    previous = {"spec": dict(old)} if isinstance(old, Mapping) else None
    rec.reconcile(
        name=name, namespace=namespace or "", body=body, spec=spec, status_=status,  # type: ignore[arg-type]
        generation=int(meta.get("generation") or 0), logger=logger, old=previous,  # type: ignore[arg-type]
        ingress_hosts=ingress_hosts,
    )


@kopf.timer(*RESOURCE, id="certificates", interval=certs.CHECK_INTERVAL_SECONDS,
            initial_delay=certs.INITIAL_DELAY_SECONDS)
def certificates(
    *, name: str, namespace: str | None, body: kopf.Body, spec: kopf.Spec, status: kopf.Status,
    meta: kopf.Meta, logger: kopf.Logger, ingress_hosts: kopf.Index[str, hosts.Claim] | None = None, **_: Any,
) -> None:
    """Renews the server certificates when due, between reconciles (archop.handlers.certificates). Returns
    nothing: kopf would write a timer's result into the status."""
    if not claim.may_act(body):
        return
    certs.check(
        name=name, namespace=namespace or "", body=body, spec=spec, status_=status,  # type: ignore[arg-type]
        generation=int(meta.get("generation") or 0), logger=logger,  # type: ignore[arg-type]
        ingress_hosts=ingress_hosts,
    )


@kopf.timer(*RESOURCE, id="passwords", interval=pw.CHECK_INTERVAL_SECONDS,
            initial_delay=pw.INITIAL_DELAY_SECONDS)
def passwords(
    *, name: str, namespace: str | None, body: kopf.Body, spec: kopf.Spec, status: kopf.Status,
    meta: kopf.Meta, logger: kopf.Logger, memo: kopf.Memo,
    ingress_hosts: kopf.Index[str, hosts.Claim] | None = None, **_: Any,
) -> None:
    """Carries a password changed in N-db-app or N-cache into its server, its connection keys and the pods
    that read it (archop.handlers.passwords). Returns nothing: kopf would write a timer's result into the
    status."""
    if not claim.may_act(body):
        return
    pw.check(
        name=name, namespace=namespace or "", body=body, spec=spec, status_=status,  # type: ignore[arg-type]
        generation=int(meta.get("generation") or 0), logger=logger,  # type: ignore[arg-type]
        ingress_hosts=ingress_hosts, memo=memo,
    )


@kopf.on.delete(*RESOURCE)
async def delete(
    *, name: str, namespace: str | None, body: kopf.Body, spec: kopf.Spec, logger: kopf.Logger, **_: Any
) -> None:
    # Both releases use the same finalizer: returning at once would let kopf remove it before the managing
    # release has handled the volumes. So wait (idle) until that release is done and the object is gone, or
    # until it is gone itself and this release takes the claim over.
    if not await claim.wait_for_turn(body):
        return
    await asyncio.to_thread(
        rec.delete, name=name, namespace=namespace or "", body=body, spec=spec, logger=logger,  # type: ignore[arg-type]
    )


@kopf.daemon(*RESOURCE, id="monitor", cancellation_timeout=5.0)
async def monitor(
    *, name: str, namespace: str | None, body: kopf.Body, spec: kopf.Spec, status: kopf.Status,
    stopped: kopf.DaemonStopped, logger: kopf.Logger, **_: Any,
) -> None:
    """Health watch and failover of one Architecture (archop.handlers.monitor, the database side)."""
    # Idle while another live release manages it; carry on once this release holds the claim.
    if not await claim.wait_for_turn(body, stopped):
        return
    await db_monitor.monitor(name=name, namespace=namespace or "", body=body, spec=spec, status=status,
                             stopped=stopped, logger=logger)
