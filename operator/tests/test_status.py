"""status.py: conditions in the Kubernetes shape, tier conditions from observations, the Ready summary."""

from __future__ import annotations

import dataclasses

from archop import reasons
from archop.observe import WorkloadObservation, deployment_counts, ingress_address
from archop.spec import ArchitectureSpec
from archop.status import (
    endpoints,
    followers_fields,
    get_condition,
    initial_conditions,
    set_condition,
    summarise,
    workload_conditions,
    workload_fields,
)

T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:00:05Z", "2026-01-01T00:00:09Z"
SPEC = ArchitectureSpec()
HEALTHY = WorkloadObservation(cache_exists=True, cache_ready=True, app_exists=True, app_ready_replicas=2,
                              app_desired_replicas=2, ingress_exists=True, ingress_address="172.18.0.2")


def test_set_condition_has_the_kubernetes_shape() -> None:
    (cond,) = set_condition([], "AppReady", True, "TierReady", "2/2 app pods ready", 3, T0)
    assert cond == {"type": "AppReady", "status": "True", "reason": "TierReady",
                    "message": "2/2 app pods ready", "observedGeneration": 3, "lastTransitionTime": T0}


def test_transition_time_moves_only_when_the_status_flips() -> None:
    first = set_condition([], "CacheReady", False, "TierProgressing", "starting", 1, T0)
    same = set_condition(first, "CacheReady", False, "TierProgressing", "still starting", 2, T1)
    assert same[0]["lastTransitionTime"] == T0 and same[0]["message"] == "still starting"
    assert same[0]["observedGeneration"] == 2
    flipped = set_condition(same, "CacheReady", True, "TierReady", "up", 2, T2)
    assert flipped[0]["lastTransitionTime"] == T2 and flipped[0]["status"] == "True"
    assert first[0]["message"] == "starting"  # inputs are never mutated


def test_set_condition_keeps_the_others() -> None:
    conds = set_condition([], "A", True, "R", "m", 1, T0)
    conds = set_condition(conds, "B", False, "R", "m", 1, T0)
    conds = set_condition(conds, "A", False, "R", "m", 1, T1)
    assert [(c["type"], c["status"]) for c in conds] == [("A", "False"), ("B", "False")]


def test_healthy_workloads_are_ready() -> None:
    conds = workload_conditions(HEALTHY, SPEC, [], 1, T0)
    by_type = {c["type"]: c for c in conds}
    assert {t: c["status"] for t, c in by_type.items()} == {
        reasons.CACHE_READY: "True", reasons.APP_READY: "True", reasons.INGRESS_READY: "True"}
    assert by_type[reasons.APP_READY]["message"] == "2/2 app pods ready"
    assert "172.18.0.2" in by_type[reasons.INGRESS_READY]["message"]


def test_partial_app_is_degraded_and_missing_app_is_progressing() -> None:
    partial = dataclasses.replace(HEALTHY, app_ready_replicas=1, app_desired_replicas=3)
    cond = get_condition(workload_conditions(partial, SPEC, [], 1, T0), reasons.APP_READY)
    assert cond and (cond["status"], cond["reason"], cond["message"]) == (
        "False", reasons.TIER_DEGRADED, "Only 1/3 app pods ready")
    none = WorkloadObservation()
    conds = workload_conditions(none, SPEC, [], 1, T0)
    assert all(c["status"] == "False" and c["reason"] == reasons.TIER_PROGRESSING for c in conds)


def test_disabled_tiers_count_as_ready() -> None:
    spec = ArchitectureSpec.parse({"cache": {"enabled": False}, "ingress": {"enabled": False}})
    obs = dataclasses.replace(HEALTHY, cache_exists=False, cache_ready=False, ingress_exists=False)
    by_type = {c["type"]: c for c in workload_conditions(obs, spec, [], 1, T0)}
    for t in (reasons.CACHE_READY, reasons.INGRESS_READY):
        assert (by_type[t]["status"], by_type[t]["reason"]) == ("True", reasons.TIER_DISABLED)


def test_no_app_tier_counts_as_ready_and_is_not_looked_for() -> None:
    """spec.app.enabled false: AppReady True (TierDisabled), whatever the observation says; the Ingress is off
    because of it, and says so; the app's endpoint is empty."""
    spec = ArchitectureSpec.parse({"app": {"enabled": False}})
    nothing = WorkloadObservation(cache_exists=True, cache_ready=True)
    by_type = {c["type"]: c for c in workload_conditions(nothing, spec, [], 1, T0)}
    assert (by_type[reasons.APP_READY]["status"], by_type[reasons.APP_READY]["reason"]) == (
        "True", reasons.TIER_DISABLED)
    assert "spec.app.enabled" in by_type[reasons.APP_READY]["message"]
    assert (by_type[reasons.INGRESS_READY]["status"], by_type[reasons.INGRESS_READY]["reason"]) == (
        "True", reasons.TIER_DISABLED)
    assert "spec.app.enabled" in by_type[reasons.INGRESS_READY]["message"]
    conds = set_condition(list(by_type.values()), reasons.DATABASE_READY, True, reasons.TIER_READY, "ok", 1,
                          T0)
    assert get_condition(summarise(conds, 1, T0), reasons.READY)["status"] == "True"  # type: ignore[index]
    assert endpoints("shop", "demo", spec)["app"] == ""
    assert workload_fields(nothing) == {"appReadyReplicas": 0, "appReady": "0/0"}


def test_summary_names_the_tiers_not_ready() -> None:
    conds = workload_conditions(dataclasses.replace(HEALTHY, cache_ready=False), SPEC, [], 4, T0)
    ready = get_condition(summarise(conds, 4, T0), reasons.READY)
    assert ready and ready["status"] == "False" and ready["reason"] == reasons.TIERS_NOT_READY
    # A missing DatabaseReady counts as not ready.
    assert ready["message"] == "Not ready: DatabaseReady, CacheReady"
    conds = set_condition(workload_conditions(HEALTHY, SPEC, [], 4, T0), reasons.DATABASE_READY, True,
                          reasons.TIER_READY, "leader and 2/2 followers", 4, T0)
    ready = get_condition(summarise(conds, 4, T1), reasons.READY)
    assert ready and (ready["status"], ready["reason"]) == ("True", reasons.ALL_TIERS_READY)


def test_initial_conditions_fill_only_what_is_missing() -> None:
    start = initial_conditions([], 1, T0)
    # ChildrenOwned is not a placeholder: the reconcile sets it from what it found (ownership_conditions)
    assert {c["type"] for c in start} == set(reasons.CONDITION_TYPES) - {reasons.CHILDREN_OWNED}
    assert get_condition(start, reasons.READY)["status"] == "False"  # type: ignore[index]
    db_ready = set_condition(start, reasons.DATABASE_READY, True, reasons.TIER_READY, "ok", 1, T1)
    again = initial_conditions(db_ready, 2, T2)
    assert get_condition(again, reasons.DATABASE_READY)["status"] == "True"  # type: ignore[index]


def test_endpoints_and_printer_fields() -> None:
    assert endpoints("shop", "demo", SPEC) == {
        "readWrite": "shop-db-rw.demo.svc:5432", "readOnly": "shop-db-ro.demo.svc:5432",
        "cache": "shop-cache.demo.svc:6379", "app": "shop-app.demo.svc:80"}
    assert endpoints("shop", "demo", ArchitectureSpec.parse({"cache": {"enabled": False}}))["cache"] == ""
    assert workload_fields(HEALTHY) == {"appReadyReplicas": 2, "appReady": "2/2"}
    assert followers_fields(1, 2) == {"followersReady": 1, "followersDesired": 2, "followers": "1/2"}


def test_observation_helpers_read_api_objects() -> None:
    assert deployment_counts(None) == (0, 0)
    assert deployment_counts({"spec": {"replicas": 3}, "status": {"readyReplicas": 2}}) == (2, 3)
    assert deployment_counts({"spec": {"replicas": 3}, "status": {}}) == (0, 3)
    published = {"status": {"loadBalancer": {"ingress": [{"hostname": "lb.example"}]}}}
    assert ingress_address(published) == "lb.example"
    assert ingress_address({"status": {"loadBalancer": {}}}) is None


# ---------------------------------------------------------------------------------------------- ownership


def _ownership(recorded: dict, spec: ArchitectureSpec = SPEC) -> list[dict]:
    from archop.status import ownership_conditions

    return ownership_conditions(initial_conditions([], 1, T0), spec, recorded, 1, T1)


def test_children_owned_follows_what_the_reconcile_recorded() -> None:
    foreign = _ownership({"foreignObjects": ["Service shop-db-rw", "Secret shop-db-app"]})
    cond = get_condition(foreign, reasons.CHILDREN_OWNED)
    assert cond is not None and (cond["status"], cond["reason"]) == ("False", reasons.FOREIGN_OBJECT)
    assert "Service shop-db-rw, Secret shop-db-app" in cond["message"]
    clear = get_condition(_ownership({"foreignObjects": []}), reasons.CHILDREN_OWNED)
    assert clear is not None and (clear["status"], clear["reason"]) == ("True", reasons.ALL_CHILDREN_OWNED)
    # nothing recorded yet (an Architecture from before the check): left as it is
    assert get_condition(_ownership({}), reasons.CHILDREN_OWNED) is None


def test_a_refused_host_makes_ingress_not_ready() -> None:
    taken = {"ingressHost": {"host": "archop.local", "state": "Taken", "heldBy": "team-b/web"}}
    cond = get_condition(_ownership(taken), reasons.INGRESS_READY)
    assert cond is not None and (cond["status"], cond["reason"]) == ("False", reasons.INGRESS_HOST_TAKEN)
    assert "team-b/web" in cond["message"]
    # a decision about another host (the spec moved on) or a granted one changes nothing
    for recorded in ({"host": "old.example.com", "state": "Taken", "heldBy": "x/y"},
                     {"host": "archop.local", "state": "Granted", "heldBy": ""}):
        cond = get_condition(_ownership({"ingressHost": recorded}), reasons.INGRESS_READY)
        assert cond is not None and cond["reason"] == reasons.TIER_PROGRESSING
    off = dataclasses.replace(SPEC, ingress=dataclasses.replace(SPEC.ingress, enabled=False))
    cond = get_condition(_ownership(taken, off), reasons.INGRESS_READY)
    assert cond is not None and cond["reason"] != reasons.INGRESS_HOST_TAKEN


def test_ready_counts_children_owned_only_when_it_is_false() -> None:
    healthy = workload_conditions(HEALTHY, SPEC, [], 1, T0)
    healthy = set_condition(healthy, reasons.DATABASE_READY, True, reasons.TIER_READY, "ok", 1, T0)
    ready = get_condition(summarise(healthy, 1, T0), reasons.READY)
    assert ready is not None and ready["status"] == "True"
    owned = set_condition(healthy, reasons.CHILDREN_OWNED, True, reasons.ALL_CHILDREN_OWNED, "ok", 1, T0)
    ready = get_condition(summarise(owned, 1, T0), reasons.READY)
    assert ready is not None and ready["status"] == "True"
    blocked = set_condition(healthy, reasons.CHILDREN_OWNED, False, reasons.FOREIGN_OBJECT, "x", 1, T0)
    ready = get_condition(summarise(blocked, 1, T0), reasons.READY)
    assert ready is not None and ready["status"] == "False"
    assert ready["message"] == "Not ready: ChildrenOwned (ForeignObject)"
