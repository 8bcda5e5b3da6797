"""Which pod's leader lease the monitor keeps renewing between ticks after a decision (failover/runner.py,
vouch_for, which runner.tick hands to the monitor's withdraw_unless): only a healthy leader, or a failover's
target once its Promote was sent. And when an observation tries the established lease session once more
(with_lease_session), for the evidence that the postmaster behind it is gone."""

from __future__ import annotations

from archop.failover import decide as d
from archop.failover.lease import LeaseClock, Renewal
from archop.failover.runner import vouch_for, with_lease_session
from archop.health.model import DbObservation, Instance, PodState, Probe


def step(kind: d.StepKind, leader: str | None = "db-0", record: d.FailoverRecord | None = None) -> d.Step:
    return d.Step(kind=kind, current_leader=leader, record=record, memory=d.Memory(), message="")


def record(promote_sent: bool) -> d.FailoverRecord:
    return d.FailoverRecord(from_="db-0", to="db-1", reason="LeaderUnreachable", started_at="t",
                            phase=d.Phase.PROMOTING, promote_sent=promote_sent)


def test_a_healthy_leader_is_renewed():
    assert vouch_for(step(d.StepKind.STEADY)) == "db-0"


def test_a_leader_in_doubt_is_not():
    for kind in d.StepKind:
        if kind is not d.StepKind.STEADY:
            assert vouch_for(step(kind)) is None, kind


def test_a_failover_renews_its_target_only_once_the_promote_was_sent():
    assert vouch_for(step(d.StepKind.FAILOVER, record=record(promote_sent=False))) is None
    assert vouch_for(step(d.StepKind.FAILOVER, record=record(promote_sent=True))) == "db-1"


def _obs(**pod: object) -> DbObservation:
    probe = Probe(reachable=False, error="timeout", refused=bool(pod.pop("refused", False)))
    inst = Instance("db-0", PodState(name="db-0", **pod), probe)  # type: ignore[arg-type]
    return DbObservation(instances={"db-0": inst}, desired=1, hosts={"db-0": "db-0"}, rw_host="rw")


async def _tried(obs: DbObservation) -> bool:
    """Whether with_lease_session tries the established session to db-0 (which then breaks)."""
    clock = LeaseClock(started=0.0)
    clock.renewal("db-0", 1.0)
    tried: list[str] = []

    async def renew(pod: str) -> bool:
        tried.append(pod)
        clock.record(pod, Renewal.BROKEN, 2.0)
        return False

    seen = await with_lease_session(obs, "db-0", clock, renew)
    assert ("db-0" in seen.lease_session_lost) == bool(tried)
    return bool(tried)


async def test_the_session_is_tried_when_the_pod_refuses_or_the_api_says_postgres_is_going():
    assert await _tried(_obs(refused=True))
    assert await _tried(_obs(deleting=True))  # a deleted pod (graceful or forced)
    assert await _tried(_obs(phase="Pending"))  # replaced: the new pod has not started
    assert await _tried(_obs(running=False))  # the kubelet says the container is not running


async def test_the_session_is_left_alone_for_a_pod_that_merely_does_not_answer():
    assert not await _tried(_obs())  # a timeout: a frozen or partitioned leader would hang the renewal
    assert not await _tried(_obs(deleting=True, node_ready=False))  # its node is down: it would time out too
