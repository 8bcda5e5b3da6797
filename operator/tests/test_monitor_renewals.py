"""Which pod's leader lease the monitor keeps renewing between ticks after a decision (failover/runner.py,
vouch_for, which runner.tick hands to the monitor's withdraw_unless): only a healthy leader, or a failover's
target once its Promote was sent."""

from __future__ import annotations

from archop.failover import decide as d
from archop.failover.runner import vouch_for


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
