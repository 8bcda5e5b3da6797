"""Unit tests of the pure status rendering (failover/report.py) and pod parsing (health/pods.py)."""

from __future__ import annotations

from dataclasses import replace

from archop import names, reasons
from archop.failover import report
from archop.health.model import DbObservation, Instance, PodState, Probe, ReplicaRow, format_lsn, parse_lsn
from archop.health.pods import NodeState, node_ready, node_state, pod_state
from archop.images import ImageSource, MajorRefusal


def test_lsn_round_trip():
    assert parse_lsn("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    assert parse_lsn(None) is None and format_lsn(None) is None


def _obs() -> DbObservation:
    lead = Instance(
        "a-db-0",
        PodState("a-db-0", role=names.LEADER),
        Probe(
            reachable=True,
            in_recovery=False,
            current_lsn=5000,
            timeline=2,
            replicas=(ReplicaRow("a-db-1", "streaming", "quorum"), ReplicaRow("a-db-2", "catchup", "async")),
        ),
    )
    f1 = Instance(
        "a-db-1",
        PodState("a-db-1", role=names.FOLLOWER),
        Probe(
            reachable=True,
            in_recovery=True,
            received_lsn=4900,
            replay_lsn=4000,
            receiver_status="streaming",
            timeline=2,
        ),
    )
    f2 = Instance("a-db-2", PodState("a-db-2", ready=False), Probe(reachable=False))
    return DbObservation({i.name: i for i in (lead, f1, f2)}, desired=3)


def test_instances_status():
    rows = {r["name"]: r for r in report.instances_status(_obs(), "a-db-0")}
    assert rows["a-db-0"] == {
        "name": "a-db-0",
        "role": "leader",
        "ready": True,
        "streaming": False,
        "timeline": 2,
        "receivedLsn": format_lsn(5000),
        "replayLsn": format_lsn(5000),
        "lagBytes": 0,
    }
    assert rows["a-db-1"]["lagBytes"] == 1000 and rows["a-db-1"]["syncState"] == "quorum"
    assert rows["a-db-1"]["streaming"] is True
    assert rows["a-db-2"] == {
        "name": "a-db-2",
        "role": "",
        "ready": False,
        "streaming": False,
        "syncState": "async",
    }


def test_database_condition_and_counts():
    o = _obs()
    assert report.followers_ready(o, "a-db-0") == 1
    ok, reason, msg = report.database_condition(o, "a-db-0", False, "")
    assert not ok and reason == reasons.TIER_PROGRESSING and "1/2" in msg  # a follower short: not Ready
    assert report.database_condition(o, "a-db-0", True, "Promoting")[:2] == (False, reasons.TIER_PROGRESSING)
    assert report.database_condition(o, "a-db-2", False, "gone")[:2] == (False, reasons.TIER_DEGRADED)
    assert report.role_counts(o) == {"leader": 1, "follower": 1, "fenced": 0}


def _with_versions(obs: DbObservation, versions: dict[str, int]) -> DbObservation:
    return replace(obs, instances={n: replace(i, probe=replace(i.probe, server_version_num=versions.get(n)))
                                   for n, i in obs.instances.items()})


def test_the_data_major_is_what_the_servers_report():
    o = _obs()
    assert report.data_major(o, "a-db-0") is None  # not read: the last one known stays in the status
    assert "postgresMajor" not in report.database_status(o, "a-db-0", 3, None)
    o = _with_versions(o, {"a-db-0": 150020, "a-db-1": 150020})
    assert report.data_major(o, "a-db-0") == 15
    assert report.database_status(o, "a-db-0", 3, None)["postgresMajor"] == 15
    # The leader does not answer: any server that does tells it.
    assert report.data_major(o, "a-db-2") == 15
    assert report.data_major(_with_versions(o, {"a-db-1": 160004}), "a-db-2") == 16


def test_a_refused_major_upgrade_keeps_database_ready_false():
    refusal = MajorRefusal("postgres:16.4", ImageSource.DEFAULT, 16, 15, "postgres:15.20")
    healthy = replace(_obs(), desired=2)
    assert report.database_condition(healthy, "a-db-0", False, "")[:2] == (True, reasons.TIER_READY)
    ok, reason, msg = report.database_condition(healthy, "a-db-0", False, "", refusal)
    assert (ok, reason, msg) == (False, reasons.MAJOR_UPGRADE_REFUSED, refusal.message())
    # A tier that is unhealthy besides keeps the reason to act on first; the refusal is in the message.
    ok, reason, msg = report.database_condition(_obs(), "a-db-2", False, "gone", refusal)
    assert (ok, reason) == (False, reasons.TIER_DEGRADED)
    assert msg.startswith("gone; besides, ") and msg.endswith(refusal.message())
    assert report.database_condition(_obs(), "a-db-0", True, "Promoting", refusal)[:2] == (
        False, reasons.TIER_PROGRESSING)


def test_pod_state_parsing():
    pod = {
        "metadata": {
            "name": "a-db-1",
            "labels": {names.L_ROLE: "follower", "controller-revision-hash": "r1"},
            "deletionTimestamp": "2024-01-01T00:00:00Z",
        },
        "spec": {"nodeName": "w2"},
        "status": {
            "phase": "Running",
            "podIP": "10.1.2.3",
            "containerStatuses": [
                {"name": "postgres", "ready": True, "restartCount": 2},
                {"name": "fence", "ready": False},
            ],
        },
    }
    s = pod_state(pod, {"w2": NodeState(ready=False, cordoned=False)}, "r2")
    assert (s.ip, s.role, s.ready, s.restarts, s.node_ready, s.up_to_date) == (
        "10.1.2.3",
        "follower",
        True,
        2,
        False,
        False,
    )
    assert s.deleting and s.gone
    assert s.running and s.uid is None


UP = {"w1": NodeState(ready=True, cordoned=False)}


def test_pod_state_container_and_uid():
    pod = {
        "metadata": {"name": "a-db-0", "uid": "u-1"},
        "spec": {"nodeName": "w1"},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {"name": "postgres", "ready": False, "restartCount": 1,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
            ],
        },
    }
    s = pod_state(pod, UP, None)
    assert (s.uid, s.running, s.restarts, s.ready) == ("u-1", False, 1, False)
    assert not s.gone  # the pod itself still runs; decide.pod_lost reads `running`
    pod["status"]["containerStatuses"][0]["state"] = {"running": {"startedAt": "2026-11-29T00:00:00Z"}}
    assert pod_state(pod, UP, None).running
    pod["status"]["containerStatuses"][0] |= {
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 137, "startedAt": "2026-11-29T10:00:00Z",
                                     "finishedAt": "2026-11-29T10:05:30Z"}},
    }
    assert pod_state(pod, UP, None).back_off_after_kill == 330.0
    # Stopped by the operator's fence or the lease agent: start.sh ends with the postmaster, exit 0.
    pod["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] = 0
    assert pod_state(pod, UP, None).back_off_after_kill == 330.0
    pod["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] = 1  # failed at start
    assert pod_state(pod, UP, None).back_off_after_kill is None
    pod["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ContainerCreating"}}
    assert pod_state(pod, UP, None).back_off_after_kill is None
    pod["status"]["containerStatuses"] = []  # not reported yet: no evidence either way
    assert pod_state(pod, UP, None).running
    assert node_ready({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}) is True
    assert node_ready({}) is None


def test_a_cordoned_node_is_seen_on_its_pods():
    node = {"metadata": {"name": "w1"}, "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert node_state(node) == NodeState(ready=True, cordoned=True)
    pod = {"metadata": {"name": "a-db-0"}, "spec": {"nodeName": "w1"}, "status": {"phase": "Running"}}
    seen = pod_state(pod, {"w1": node_state(node)}, None)
    assert seen.node_cordoned and seen.node_ready and not seen.gone  # cordoned is not down
    assert not pod_state(pod, UP, None).node_cordoned
    assert not pod_state(pod, {}, None).node_cordoned  # node not listed (yet): no evidence
