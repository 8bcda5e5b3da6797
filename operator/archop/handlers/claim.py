"""One operator release per Architecture: the claim annotation `archop.io/operator: <release namespace>`.

Every release of the chart watches Architectures in all namespaces (or in its watchNamespaces) and holds its
own Lease `archop-operator` in its own namespace, so two releases would both reconcile, fence and promote the
same databases, each sure it is the only operator. The chart refuses a second release at install time
(templates/_single_release.tpl), but that check is easy to bypass (`helm template | kubectl apply`, a
cluster where Helm may not look things up), so the operator checks too, before it touches an Architecture:

- unclaimed: this release claims it, with a write conditional on the resourceVersion it read, so of two
  operators racing for it exactly one wins (the other reads again and finds the winner's claim);
- claimed by this release: it acts;
- claimed by another release whose Lease is still held: it does nothing to that Architecture (no apply, no
  status, no failover) and says so once, in a Warning event and the log;
- claimed by a release whose Lease is gone or long expired (uninstalled): it takes the claim over. A
  release in the namespaced RBAC mode reads Leases only in its watched namespaces; a claim by a release
  elsewhere stays (it cannot see that release go), until someone removes the annotation.

A release is named by its namespace: the Lease name is fixed, so one namespace holds one election.

decide() is pure; settle() carries it out through injected Effects; may_act() (the reconcile handler) and
wait_for_turn() (the monitor daemon, the delete handler) are what main.py calls.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import kopf

from archop import apply, config, events, names, reasons

log = logging.getLogger("archop.claim")

# A Lease released on a clean stop, or lapsed briefly, is a release restarting (a rolling update, a pod
# rescheduled), not a release gone: only this long after it expired does another release take over.
TAKEOVER_GRACE_SECONDS = 120.0
# How often a monitor daemon or a delete handler that stands aside looks again whether the other release
# is gone.
RECHECK_SECONDS = 15.0
# Conditional writes lost in a row before giving up for now: each loss means someone wrote in between.
MAX_ATTEMPTS = 5
LEASE_API_VERSION = "coordination.k8s.io/v1"


class Action(Enum):
    PROCEED = "proceed"  # this release's claim: act
    CLAIM = "claim"  # nobody's yet: claim it, then act
    TAKE_OVER = "take over"  # the claiming release is gone: claim it, then act
    STAND_ASIDE = "stand aside"  # another live release manages it: do nothing


class LeaseRead(Enum):
    FOUND = "found"
    MISSING = "missing"  # 404: the Lease (or its whole namespace) is gone
    UNREADABLE = "unreadable"  # forbidden, or the API failed: nothing shows that the release is gone


@dataclass(frozen=True)
class OtherLease:
    """The Lease of the release that claimed an Architecture, as far as it could be read."""

    read: LeaseRead
    renewed_at: float | None = None  # spec.renewTime, epoch seconds
    duration_seconds: float = 0.0  # spec.leaseDurationSeconds

    @classmethod
    def of(cls, lease: Mapping[str, Any]) -> OtherLease:
        spec = lease.get("spec") or {}
        stamp = spec.get("renewTime") or spec.get("acquireTime")
        renewed_at = None
        if stamp:
            try:
                renewed_at = datetime.datetime.fromisoformat(str(stamp)).timestamp()
            except ValueError:
                renewed_at = None  # unreadable stamp: as if never renewed
        return cls(LeaseRead.FOUND, renewed_at, float(spec.get("leaseDurationSeconds") or 0))


@dataclass(frozen=True)
class Decision:
    action: Action
    other: str | None = None  # namespace of the release that holds (or held) the claim, when not this one
    why: str = ""  # for the event and the log

    @property
    def acts(self) -> bool:
        return self.action is not Action.STAND_ASIDE


def decide(claim: str | None, ours: str, lease: OtherLease | None, now: float,
           grace: float = TAKEOVER_GRACE_SECONDS) -> Decision:
    """What this release (namespace `ours`) does with an Architecture claimed by `claim`. `lease` is the
    claiming release's Lease; None when it was not read (the claim is empty or ours)."""
    if not claim:
        return Decision(Action.CLAIM, why="no operator release had claimed it")
    if claim == ours:
        return Decision(Action.PROCEED)
    if lease is None or lease.read is LeaseRead.UNREADABLE:
        # Taking over on a read error would let two releases act whenever the API hiccups.
        return Decision(Action.STAND_ASIDE, claim, "its Lease cannot be read, so nothing shows it is gone")
    if lease.read is LeaseRead.MISSING:
        return Decision(Action.TAKE_OVER, claim, "its Lease is gone")
    if lease.renewed_at is None:
        return Decision(Action.TAKE_OVER, claim, "its Lease was never renewed")
    expired_at = lease.renewed_at + lease.duration_seconds
    if now < expired_at + grace:
        return Decision(Action.STAND_ASIDE, claim,
                        f"its Lease was renewed {max(0.0, now - lease.renewed_at):.0f}s ago")
    return Decision(Action.TAKE_OVER, claim, f"its Lease expired {now - expired_at:.0f}s ago")


@dataclass(frozen=True)
class Seen:
    """What the claim looks at in an Architecture, as read at one resourceVersion."""

    claim: str | None
    resource_version: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Seen:
        meta = body.get("metadata") or {}
        claim = (meta.get("annotations") or {}).get(names.CLAIM_ANNOTATION) or None
        return cls(claim, str(meta.get("resourceVersion") or ""))


@dataclass(frozen=True)
class Effects:
    read: Callable[[], Seen | None]  # the Architecture afresh; None when it is gone
    read_lease: Callable[[str], OtherLease]  # the Lease of the release in that namespace
    write_claim: Callable[[str], bool]  # claim it if still at that resourceVersion; False: lost the race
    now: Callable[[], float] = time.time


class Contended(Exception):
    """Every conditional write lost: the Architecture kept changing under us. Try again later."""


def settle(seen: Seen | None, ours: str, fx: Effects, attempts: int = MAX_ATTEMPTS) -> Decision | None:
    """Decide, and write the claim when the decision is to claim or take over. `seen` is the caller's copy
    (kopf's body), None to read it first. None when the Architecture is gone."""
    for _ in range(attempts):
        if seen is None or not seen.resource_version:
            seen = fx.read()
            if seen is None:
                return None
        foreign = seen.claim is not None and seen.claim != ours
        decision = decide(seen.claim, ours, fx.read_lease(seen.claim) if foreign and seen.claim else None,
                          fx.now())
        if decision.action in (Action.PROCEED, Action.STAND_ASIDE):
            return decision
        if fx.write_claim(seen.resource_version):
            return decision
        # Someone wrote in between, maybe a rival's claim: read again and decide anew.
        seen = None
    raise Contended(f"the claim lost {attempts} conditional writes in a row")


# (Architecture uid, other release's namespace) already warned about: one event, not one per check.
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def tell(body: Mapping[str, Any], ours: str, decision: Decision) -> None:
    """The event and log line of a decision. Standing aside is told once per Architecture and other release
    for the life of this process; acting again forgets it, so a later conflict is told again."""
    meta = body.get("metadata") or {}
    where = f"{meta.get('namespace')}/{meta.get('name')}"
    key = (str(meta.get("uid") or where), decision.other or "")
    if decision.action is Action.STAND_ASIDE:
        with _warned_lock:
            first = key not in _warned
            _warned.add(key)
        if not first:
            log.debug("%s: still managed by the operator in namespace %s", where, decision.other)
            return
        message = (f"Managed by the archop operator in namespace {decision.other} ({decision.why}); the "
                   f"operator in namespace {ours} leaves it alone. Run one release per cluster: uninstall "
                   "one of them.")
        log.warning("%s: %s", where, message)
        events.emit(dict(body), reasons.MANAGED_BY_ANOTHER_OPERATOR, message, warning=True)
        return
    with _warned_lock:
        _warned.difference_update({k for k in _warned if k[0] == key[0]})
    if decision.action is Action.TAKE_OVER:
        message = f"Taken over from the operator in namespace {decision.other}: {decision.why}"
        log.warning("%s: %s", where, message)
        events.emit(dict(body), reasons.CLAIM_TAKEN_OVER, message)
    elif decision.action is Action.CLAIM:
        log.info("%s: claimed for the operator in namespace %s", where, ours)


def kube_effects(client: Any, name: str, namespace: str, ours: str, lease_name: str,
                 lease_namespaces: Collection[str] = ()) -> Effects:
    """Effects on the API: the Architecture `namespace/name`, Leases named `lease_name`. `lease_namespaces`:
    where this release may read them (its watched namespaces, in the chart's namespaced RBAC mode); empty:
    anywhere."""

    def read() -> Seen | None:
        obj = apply.get(client, names.API_VERSION, names.KIND, namespace, name)
        return None if obj is None else Seen.of(obj)

    def read_lease(other: str) -> OtherLease:
        if lease_namespaces and other not in lease_namespaces:
            # The RBAC grants no read there: nothing can show that release is gone, so it keeps its claim.
            log.info("cannot read Lease %s/%s: namespace %s is not watched by this release", other,
                     lease_name, other)
            return OtherLease(LeaseRead.UNREADABLE)
        try:
            obj = apply.get(client, LEASE_API_VERSION, "Lease", other, lease_name)
        except kopf.TemporaryError as exc:  # forbidden (an older chart's RBAC), or the API failed
            log.info("cannot read Lease %s/%s: %s", other, lease_name, exc)
            return OtherLease(LeaseRead.UNREADABLE)
        return OtherLease(LeaseRead.MISSING) if obj is None else OtherLease.of(obj)

    def write_claim(resource_version: str) -> bool:
        return apply.annotate_if_unchanged(client, name, namespace, resource_version,
                                           {names.CLAIM_ANNOTATION: ours})

    return Effects(read=read, read_lease=read_lease, write_claim=write_claim)


def check(body: Mapping[str, Any], seen: Seen | None) -> Decision | None:
    """settle() against the API with this process's settings, then tell(). None: the Architecture is gone."""
    settings = config.settings()
    meta = body.get("metadata") or {}
    fx = kube_effects(apply.api(), str(meta.get("name")), str(meta.get("namespace")), settings.namespace,
                      settings.lease_name, settings.watch_namespaces)
    decision = settle(seen, settings.namespace, fx)
    if decision is not None:
        tell(body, settings.namespace, decision)
    return decision


def may_act(body: Mapping[str, Any]) -> bool:
    """For the reconcile handler: whether this release may act on the Architecture now (claiming it first
    when nobody has). It does not wait: a release standing aside reconciles after it took the claim over
    (the monitor daemon does that) on the next change or restart."""
    try:
        decision = check(body, Seen.of(body))
    except Contended as exc:
        raise kopf.TemporaryError(str(exc), delay=5) from exc
    return decision is not None and decision.acts


async def wait_for_turn(body: Mapping[str, Any], stopped: Any = None) -> bool:
    """For the monitor daemon and the delete handler: True once this release may act on the Architecture;
    False when it is gone (or the daemon `stopped`) while another live release still manages it. Standing
    aside, it looks again every RECHECK_SECONDS, so it takes over soon after the other release goes."""
    seen: Seen | None = Seen.of(body)
    while True:
        try:
            decision = await asyncio.to_thread(check, body, seen)
        except (Contended, kopf.TemporaryError) as exc:
            log.info("claim check failed (retried in %.0fs): %s", RECHECK_SECONDS, exc)
        else:
            if decision is None:
                return False
            if decision.acts:
                return True
        seen = None  # from now on read it afresh: kopf's copy of a changing handler's body does not move
        if stopped is None:
            await asyncio.sleep(RECHECK_SECONDS)
        else:
            await stopped.wait(RECHECK_SECONDS)
            if stopped:
                return False
