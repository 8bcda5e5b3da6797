"""The periodic certificate check (a kopf timer, main.py): renewal that does not wait for a reconcile.

The reconcile runs when the spec changes and when the operator resumes an Architecture; an Architecture
nobody touches would keep its server certificates until they expire. Every CHECK_INTERVAL_SECONDS this reads
the TLS children by name (Secrets N-ca, N-db-tls, N-cache-tls and ConfigMap N-db-ca), asks tls.due, the very
decision the reconcile's tls.plan acts on, and only when a certificate is due runs the reconcile itself. That
reissues it, posts ServerCertificateRenewed and stamps the pod template, so the pods restart. One copy of the
renewal: this module decides when to look, never how to renew.

When nothing is due nothing is written. A TLS child that is not this Architecture's, or a CA that cannot be
used, is left to the reconcile handler, which reports it and retries on its own; so is anything else that
blocks the reconcile (a foreign child, a taken ingress host).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from archop import apply, hosts
from archop.build import tls
from archop.handlers import reconcile as rec

CHECK_INTERVAL_SECONDS = 6 * 3600.0  # against RENEW_BEFORE (30 days): a certificate is never close to expiry
# The resume reconcile checks on start already; the first timer check comes once that is long done.
INITIAL_DELAY_SECONDS = 600.0


def check(
    name: str,
    namespace: str,
    body: dict[str, Any],
    spec: dict[str, Any],
    status_: dict[str, Any],
    generation: int,
    logger: logging.Logger | logging.LoggerAdapter,
    ingress_hosts: Mapping[str, Iterable[hosts.Claim]] | None = None,
) -> dict[str, tls.Renewal]:
    """Renew what is due through the reconcile. Returns what was due (Secret name: why), {} when nothing."""
    client = apply.api()
    uid = str((body.get("metadata") or {}).get("uid") or "")
    found = apply.read_children(client, tls.stubs(name, namespace))
    foreign = rec.foreign_children(found, name, uid)
    if foreign:
        logger.info("certificate check skipped: %s not this Architecture's (the reconcile reports it)",
                    ", ".join(foreign))
        return {}
    try:
        decisions = tls.due(name, namespace, found, datetime.now(UTC))
    except tls.TlsError as exc:
        logger.warning("certificate check skipped: %s", exc)
        return {}
    pending: dict[str, tls.Renewal] = {secret: why for secret, why in decisions.items()
                                       if why is not tls.Renewal.CURRENT}
    if not pending:
        logger.debug("certificate check: every server certificate is current")
        return {}
    logger.info("certificate check: %s due; reconciling to renew",
                ", ".join(f"{secret} ({why.value})" for secret, why in sorted(pending.items())))
    try:
        rec.reconcile(name=name, namespace=namespace, body=body, spec=spec, status_=status_,
                      generation=generation, logger=logger, ingress_hosts=ingress_hosts)
    except rec.Blocked as exc:
        # Said in conditions and events already; the reconcile handler's own retries carry on from here.
        logger.info("certificate check: the reconcile stopped short: %s", exc)
    return pending
