"""Which Architecture may publish an ingress host: one per host, first come, first served.

Without this any Architecture could name any host in spec.ingress.host, another tenant's included, and the
ingress controller would merge or pick between the two Ingresses. The operator already lists and watches
every Architecture it manages (kopf), so a kopf index (main.py, `ingress_hosts`) keeps, per host, the
Architectures that ask for it (index_entry), and decide() tells each reconcile whether its Ingress may be
applied. Each Architecture records the answer in status.ingressHost ({host, state, heldBy}); the index reads
it back, so the holder of a host is known to every later decision, after an operator restart too.

The rule, for the host one Architecture asks for (hosts compare case-insensitively; "" is the catch-all
rule, a host of its own that only one Architecture may have):

1. Whoever holds the host (state Granted for it) keeps it: an Architecture created earlier cannot take a
   host from a younger one by changing its spec. Should two hold it (an operator before this rule, or two
   decisions that could not see each other), the first in order keeps it and the other gives it up.
2. Nobody holds it: while another Architecture asks for it whose claim has not been decided yet (no state
   recorded for this host), wait (Pending): it may be taking the host this very moment, and the index shows
   its decision only once its status is written. Without this, two Architectures created together could
   each decide before seeing the other, and both publish the host.
3. Nobody holds it and every claim is decided: the first in order gets it. Order: metadata.creationTimestamp,
   then namespace, then name.

Architectures being deleted claim nothing. An Architecture whose host is Taken is not served by an Ingress
(one it had is removed); while Pending, its Ingress is left as it is (so two stacks that shared a host
before this rule keep serving until the order has decided). Either way the rest of its stack is applied,
and it asks again every ownership.RETRY_SECONDS, so it gets the host once the holder lets go.

Pure: no kopf, no API.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from archop.spec import IngressSpec, app_enabled

GRANTED, TAKEN, PENDING = "Granted", "Taken", "Pending"  # status.ingressHost.state


def host_key(host: str) -> str:
    """The form hosts are compared in: DNS names are case-insensitive; a trailing dot names the same host."""
    return host.strip().rstrip(".").lower()


def show(host: str) -> str:
    """How a host is named in messages."""
    return f"host {host}" if host else "the catch-all rule (every host)"


@dataclass(frozen=True)
class Claim:
    """One Architecture asking for a host, as the index holds it."""

    namespace: str
    name: str
    uid: str
    created: str  # metadata.creationTimestamp, RFC 3339 UTC as the API server writes it: sorts as text
    state: str | None = None  # its recorded decision on this host (status.ingressHost.state); None: none yet

    @property
    def order(self) -> tuple[str, str, str]:
        return (self.created, self.namespace, self.name)

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Decision:
    host: str  # host_key form
    state: str  # GRANTED, TAKEN or PENDING
    by: str = ""  # namespace/name of the Architecture that holds the host or is ahead of this one

    @property
    def granted(self) -> bool:
        return self.state == GRANTED

    def record(self) -> dict[str, str]:
        """status.ingressHost."""
        return {"host": self.host, "state": self.state, "heldBy": self.by}


def index_entry(body: Mapping[str, Any]) -> dict[str, Claim]:
    """The kopf index function: {host: Claim} for an Architecture whose Ingress asks for a host, else {}
    (an empty dict, not None: kopf then drops what it held for the object)."""
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return {}
    spec = body.get("spec") or {}
    # Without an app (spec.app.enabled false) there is no Ingress, so no claim on a host either.
    ingress = IngressSpec.parse(spec.get("ingress"), app_enabled=app_enabled(spec))
    if not ingress.enabled:
        return {}
    host = host_key(ingress.host)
    recorded = (body.get("status") or {}).get("ingressHost") or {}
    state = recorded.get("state") if recorded.get("host") == host else None
    claim = Claim(namespace=str(meta.get("namespace") or ""), name=str(meta.get("name") or ""),
                  uid=str(meta.get("uid") or ""), created=str(meta.get("creationTimestamp") or ""),
                  state=state)
    return {host: claim}


def decide(host: str, me: Claim, claims: Iterable[Claim]) -> Decision:
    """May `me` publish `host` (host_key form)? `claims` is what the index holds for that host; it may still
    hold an older copy of `me`, or none."""
    others = sorted({c.uid: c for c in claims if c.uid != me.uid}.values(), key=lambda c: c.order)
    holders = sorted([c for c in others if c.state == GRANTED] + ([me] if me.state == GRANTED else []),
                     key=lambda c: c.order)
    if holders:
        first = holders[0]
        return Decision(host, GRANTED) if first.uid == me.uid else Decision(host, TAKEN, first.ref)
    undecided = [c for c in others if c.state is None]
    if undecided:
        return Decision(host, PENDING, undecided[0].ref)
    first = min([me, *others], key=lambda c: c.order)
    return Decision(host, GRANTED) if first.uid == me.uid else Decision(host, TAKEN, first.ref)


def refusal(recorded: Mapping[str, Any]) -> str:
    """The message of a refused host (status.ingressHost, state TAKEN or PENDING), for the IngressReady
    condition and the IngressHostTaken event."""
    host, by = str(recorded.get("host") or ""), str(recorded.get("heldBy") or "?")
    what = show(host)
    what = what[0].upper() + what[1:]
    if recorded.get("state") == PENDING:
        return (f"{what} is also asked for by Architecture {by}, whose claim is not "
                "decided yet: this Architecture's Ingress waits (first come, first served)")
    return (f"{what} belongs to Architecture {by} (first come, first served): this "
            "Architecture gets no Ingress until that one lets it go; choose another spec.ingress.host")
