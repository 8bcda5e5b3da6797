"""Why a tier's pods cannot become ready: the scheduler's and the kubelet's words, from real pod shapes."""

from __future__ import annotations

from typing import Any

from archop import reasons, status
from archop.observe import WorkloadObservation
from archop.podproblems import MESSAGE_LIMIT, Kind, first_problem, pod_problem
from archop.spec import ArchitectureSpec

NOW = "2026-01-01T00:00:00Z"


def pod(name: str = "shop-app-7d9-abc", **status_: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status_}


UNSCHEDULABLE = pod(phase="Pending", conditions=[{
    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
    "message": "0/4 nodes are available: 1 node(s) had untolerated taint, 3 Insufficient cpu."}])


def test_an_unschedulable_pod_quotes_the_scheduler() -> None:
    problem = pod_problem(UNSCHEDULABLE)
    assert problem is not None and problem.kind is Kind.UNSCHEDULABLE
    assert "3 Insufficient cpu" in problem.describe() and "shop-app-7d9-abc" in problem.describe()


def test_a_stuck_container_is_failing_and_a_starting_one_is_not() -> None:
    for reason in ("ImagePullBackOff", "CrashLoopBackOff", "CreateContainerConfigError"):
        stuck = pod(phase="Pending", containerStatuses=[
            {"name": "app", "state": {"waiting": {"reason": reason, "message": "back-off 10s"}}}])
        problem = pod_problem(stuck)
        assert problem is not None and problem.kind is Kind.FAILING
        assert f"container app: {reason}: back-off 10s" in problem.message
    starting = pod(phase="Pending", containerStatuses=[
        {"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}}])
    assert pod_problem(starting) is None
    running = pod(phase="Running", containerStatuses=[{"name": "app", "state": {"running": {}}}])
    assert pod_problem(running) is None


def test_init_containers_count_and_deleting_pods_do_not() -> None:
    stuck_init = pod(phase="Pending", initContainerStatuses=[
        {"name": "init", "state": {"waiting": {"reason": "ErrImagePull"}}}])
    assert pod_problem(stuck_init) is not None
    leaving = dict(UNSCHEDULABLE, metadata={"name": "x", "deletionTimestamp": NOW})
    assert pod_problem(leaving) is None


def test_a_failed_pod_and_a_long_message() -> None:
    evicted = pod(phase="Failed", reason="Evicted", message="The node was low on resource: memory. " * 30)
    problem = pod_problem(evicted)
    assert problem is not None and problem.kind is Kind.FAILING
    assert problem.message.startswith("Evicted: The node was low") and len(problem.message) <= MESSAGE_LIMIT


def test_the_first_problem_is_stable_by_name() -> None:
    a = dict(UNSCHEDULABLE, metadata={"name": "b-pod"})
    b = pod("a-pod", phase="Pending", containerStatuses=[
        {"name": "app", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}])
    assert first_problem([a, b]).pod == "a-pod"  # type: ignore[union-attr]
    assert first_problem([a, b]) == first_problem([b, a])
    assert first_problem([pod(phase="Running")]) is None


def test_the_tier_conditions_carry_the_problem() -> None:
    spec = ArchitectureSpec.parse({})
    obs = WorkloadObservation(cache_exists=True, cache_ready=False, app_exists=True, app_ready_replicas=0,
                              app_desired_replicas=2, ingress_exists=True,
                              cache_problem=pod_problem(UNSCHEDULABLE), app_problem=None)
    conds = {c["type"]: c for c in status.workload_conditions(obs, spec, [], 1, NOW)}
    assert conds[reasons.CACHE_READY]["reason"] == reasons.PODS_UNSCHEDULABLE
    assert "Insufficient cpu" in conds[reasons.CACHE_READY]["message"]
    assert conds[reasons.APP_READY]["reason"] == reasons.TIER_PROGRESSING


def test_the_database_condition_carries_a_stuck_pod() -> None:
    from archop.failover import report
    from archop.health.model import DbObservation, Instance, PodState, Probe

    stuck = PodState("shop-db-1", phase="Pending", running=False, problem=pod_problem(UNSCHEDULABLE))
    leader = PodState("shop-db-0", ip="10.0.0.1")
    obs = DbObservation(instances={
        "shop-db-0": Instance("shop-db-0", leader, Probe(reachable=True, in_recovery=False)),
        "shop-db-1": Instance("shop-db-1", stuck, Probe(reachable=False)),
    }, desired=2)
    ok, reason, message = report.database_condition(obs, "shop-db-0", False, "")
    assert (ok, reason) == (False, reasons.PODS_UNSCHEDULABLE)
    assert message.startswith("leader shop-db-0 writable; 0/1 followers streaming; pod shop-app-7d9-abc")
