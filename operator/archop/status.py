"""Status of an Architecture as pure functions: conditions in the Kubernetes shape and summaries.

Nothing here does I/O. The monitor daemon (handlers/monitor.py) is the periodic writer: each tick it calls
observe.observe_workloads, workload_conditions, its own DatabaseReady, summarise, and patches the result.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from archop import hosts, names, ownership, reasons
from archop.build import APP_SERVICE_PORT
from archop.build.cache import PORT as REDIS_PORT
from archop.build.database import PORT as DB_PORT
from archop.spec import ArchitectureSpec

if TYPE_CHECKING:
    from archop.observe import WorkloadObservation

# The tiers whose conditions make up Ready, in the order a reader expects them.
TIER_CONDITIONS = (reasons.DATABASE_READY, reasons.CACHE_READY, reasons.APP_READY, reasons.INGRESS_READY)


def now_iso() -> str:
    """RFC 3339 in UTC with second precision, as Kubernetes writes metav1.Time."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_word(status: bool) -> str:
    return "True" if status else "False"


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """A new list with condition `type_` set. lastTransitionTime moves only when the status flips."""
    word = _status_word(status)
    out: list[dict[str, Any]] = []
    found = False
    for cond in conditions:
        if cond.get("type") != type_:
            out.append(dict(cond))
            continue
        found = True
        since = cond.get("lastTransitionTime") if cond.get("status") == word else now
        out.append(_condition(type_, word, reason, message, generation, since or now))
    if not found:
        out.append(_condition(type_, word, reason, message, generation, now))
    return out


def _condition(
    type_: str, word: str, reason: str, message: str, generation: int, since: str
) -> dict[str, Any]:
    return {
        "type": type_,
        "status": word,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    }


def get_condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: list[dict[str, Any]], type_: str) -> bool:
    cond = get_condition(conditions, type_)
    return cond is not None and cond.get("status") == "True"


def ratio(ready: int, desired: int) -> str:
    """The "2/3" strings of the printer columns."""
    return f"{ready}/{desired}"


def workload_conditions(
    obs: WorkloadObservation,
    spec: ArchitectureSpec,
    conditions: list[dict[str, Any]],
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """CacheReady, AppReady and IngressReady from one observation; a disabled tier counts as ready."""
    out = list(conditions)

    if not spec.cache.enabled:
        out = set_condition(out, reasons.CACHE_READY, True, reasons.TIER_DISABLED,
                            "The cache is disabled in spec.cache.enabled", generation, now)
    elif obs.cache_ready:
        out = set_condition(out, reasons.CACHE_READY, True, reasons.TIER_READY,
                            "Redis answers and is ready", generation, now)
    elif obs.cache_problem is not None:
        out = set_condition(out, reasons.CACHE_READY, False, obs.cache_problem.kind.value,
                            f"Redis is not ready: {obs.cache_problem.describe()}", generation, now)
    else:
        message = "Redis is not ready yet" if obs.cache_exists else "The Redis Deployment does not exist yet"
        out = set_condition(out, reasons.CACHE_READY, False, reasons.TIER_PROGRESSING, message,
                            generation, now)

    ready, desired = obs.app_ready_replicas, obs.app_desired_replicas
    if not spec.app.enabled:
        out = set_condition(out, reasons.APP_READY, True, reasons.TIER_DISABLED,
                            "The app tier is disabled in spec.app.enabled", generation, now)
    elif not obs.app_exists:
        out = set_condition(out, reasons.APP_READY, False, reasons.TIER_PROGRESSING,
                            "The app Deployment does not exist yet", generation, now)
    elif desired > 0 and ready >= desired:
        out = set_condition(out, reasons.APP_READY, True, reasons.TIER_READY,
                            f"{ratio(ready, desired)} app pods ready", generation, now)
    elif obs.app_problem is not None:
        out = set_condition(out, reasons.APP_READY, False, obs.app_problem.kind.value,
                            f"{ratio(ready, desired)} app pods ready; {obs.app_problem.describe()}",
                            generation, now)
    elif ready > 0:
        out = set_condition(out, reasons.APP_READY, False, reasons.TIER_DEGRADED,
                            f"Only {ratio(ready, desired)} app pods ready", generation, now)
    else:
        out = set_condition(out, reasons.APP_READY, False, reasons.TIER_PROGRESSING,
                            f"{ratio(ready, desired)} app pods ready", generation, now)

    if not spec.ingress.enabled:
        where = "spec.ingress.enabled" if spec.app.enabled else "spec.app.enabled (no app tier)"
        out = set_condition(out, reasons.INGRESS_READY, True, reasons.TIER_DISABLED,
                            f"The Ingress is disabled in {where}", generation, now)
    elif obs.ingress_exists:
        where = (f"published at {obs.ingress_address}" if obs.ingress_address
                 else "created; the controller has published no address")
        out = set_condition(out, reasons.INGRESS_READY, True, reasons.TIER_READY,
                            f"Ingress {where}", generation, now)
    else:
        out = set_condition(out, reasons.INGRESS_READY, False, reasons.TIER_PROGRESSING,
                            "The Ingress does not exist yet", generation, now)
    return out


def ownership_conditions(
    conditions: list[dict[str, Any]],
    spec: ArchitectureSpec,
    recorded: dict[str, Any],
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """ChildrenOwned, and IngressReady while the host is refused, from what the reconcile recorded in the
    status (`recorded`: status.foreignObjects and status.ingressHost; the reconcile alone writes those).

    The reconcile writes facts, the monitor turns them into conditions on its next tick: the conditions
    list has one writer once it exists (reconcile_status writes it only while a type is missing)."""
    out = list(conditions)
    foreign = recorded.get("foreignObjects")
    if foreign:
        out = set_condition(out, reasons.CHILDREN_OWNED, False, reasons.FOREIGN_OBJECT,
                            f"Nothing is applied while these exist and are not this Architecture's: "
                            f"{', '.join(foreign)}. Delete or rename them; the operator looks again every "
                            f"{ownership.RETRY_SECONDS}s", generation, now)
    elif foreign is not None:
        out = set_condition(out, reasons.CHILDREN_OWNED, True, reasons.ALL_CHILDREN_OWNED,
                            "Every child that exists belongs to this Architecture", generation, now)
    host = recorded.get("ingressHost") or {}
    if (spec.ingress.enabled and host.get("host") == hosts.host_key(spec.ingress.host)
            and host.get("state") in (hosts.TAKEN, hosts.PENDING)):
        out = set_condition(out, reasons.INGRESS_READY, False, reasons.INGRESS_HOST_TAKEN,
                            hosts.refusal(host), generation, now)
    return out


def summarise(conditions: list[dict[str, Any]], generation: int, now: str) -> list[dict[str, Any]]:
    """Ready from the tier conditions (DatabaseReady included) and ChildrenOwned when it is False; the
    message names what is not ready."""
    not_ready = [t for t in TIER_CONDITIONS if not is_true(conditions, t)]
    owned = get_condition(conditions, reasons.CHILDREN_OWNED)
    if owned is not None and owned.get("status") != "True":
        not_ready.append(reasons.CHILDREN_OWNED)
    if not not_ready:
        return set_condition(conditions, reasons.READY, True, reasons.ALL_TIERS_READY,
                             "All tiers are ready", generation, now)
    def why(type_: str) -> str:
        # A reason other than "still on its way" is what the user needs to act on: say it here too.
        reason = (get_condition(conditions, type_) or {}).get("reason")
        return f"{type_} ({reason})" if reason and reason != reasons.TIER_PROGRESSING else type_

    return set_condition(conditions, reasons.READY, False, reasons.TIERS_NOT_READY,
                         f"Not ready: {', '.join(why(t) for t in not_ready)}", generation, now)


def initial_conditions(conditions: list[dict[str, Any]], generation: int, now: str) -> list[dict[str, Any]]:
    """Conditions a fresh Architecture starts with: every tier Progressing until the monitor has looked.
    ChildrenOwned is no placeholder: the reconcile knows it and sets it (ownership_conditions)."""
    out = list(conditions)
    for type_ in TIER_CONDITIONS:
        if get_condition(out, type_) is None:
            out = set_condition(out, type_, False, reasons.TIER_PROGRESSING,
                                "Waiting for the first observation", generation, now)
    if get_condition(out, reasons.FAILOVER_IN_PROGRESS) is None:
        out = set_condition(out, reasons.FAILOVER_IN_PROGRESS, False, reasons.NO_FAILOVER,
                            "No failover is running", generation, now)
    return summarise(out, generation, now)


def endpoints(name: str, namespace: str, spec: ArchitectureSpec) -> dict[str, str]:
    """In-cluster host:port of each tier (status.endpoints)."""
    def at(service: str, port: int) -> str:
        return f"{names.service_host(service, namespace)}:{port}"

    return {
        "readWrite": at(names.db_rw(name), DB_PORT),
        "readOnly": at(names.db_ro(name), DB_PORT),
        "cache": at(names.cache(name), REDIS_PORT) if spec.cache.enabled else "",
        "app": at(names.app(name), APP_SERVICE_PORT) if spec.app.enabled else "",
    }


def workload_fields(obs: WorkloadObservation) -> dict[str, Any]:
    """The app's status fields (appReadyReplicas and the App printer column)."""
    return {
        "appReadyReplicas": obs.app_ready_replicas,
        "appReady": ratio(obs.app_ready_replicas, obs.app_desired_replicas),
    }


def followers_fields(ready: int, desired: int) -> dict[str, Any]:
    """The followers' status fields (followersReady/Desired and the Followers printer column)."""
    return {"followersReady": ready, "followersDesired": desired, "followers": ratio(ready, desired)}
