"""The operator away (docs/failover.md, "Operator down, API server unreachable").

Both replicas down: the leader keeps taking writes on the failsafe alone (every follower streams from it);
when its postmaster crashes it comes back behind the start gate, takes application writes again only once
its followers stream from it, and nobody else is ever promoted. The API server unreachable from both
replicas (their packets to it dropped): the leader keeps taking writes, nobody fails over, and the operator
takes up its work again once it reaches the API. Pass or fail on lost writes, on who acknowledged, on
failovers and on the gate, never on timing."""

from __future__ import annotations

import calendar
import time
import uuid
from collections import defaultdict

from conftest import OPERATOR_NAMESPACE, get_json, kubectl, wait_for

from bench.failover.harness import (
    Arch,
    Traffic,
    _failovers_started,
    cut,
    lease_agent_log,
    node_ip_and_pod_cidr,
    split_brain_direct,
    uncut,
)

SELECTOR = "app.kubernetes.io/name=archop"


def operator_pods() -> list[str]:
    pods = get_json("pods", "-l", SELECTOR, namespace=OPERATOR_NAMESPACE)["items"]
    return [p["metadata"]["name"] for p in pods]


def postgres_restarts(namespace: str, pod: str) -> int:
    statuses = get_json("pod", pod, namespace=namespace)["status"].get("containerStatuses") or []
    return sum(int(c.get("restartCount") or 0) for c in statuses if c["name"] == "postgres")


def scale_operator(replicas: int) -> None:
    kubectl("scale", "deployment", "-l", SELECTOR, "-n", OPERATOR_NAMESPACE, f"--replicas={replicas}")


def test_leader_crash_while_the_operator_is_down(namespace: str) -> None:
    arch = Arch(name=f"od-{uuid.uuid4().hex[:4]}", namespace=namespace, synchronous=True)
    arch.create()
    arch.wait_healthy(timeout=600)
    leader = arch.leader()
    replicas = int(get_json("deployment", "-l", SELECTOR, namespace=OPERATOR_NAMESPACE)["items"][0]["spec"]
                   ["replicas"])
    traffic = Traffic(arch)
    traffic.start()
    scale_operator(0)
    try:
        wait_for(lambda: not operator_pods(), 120, "every operator pod gone")
        down_at = time.time()
        # No renewal any more: the failsafe alone keeps the leader writing, well past the lease's TTL.
        wait_for(lambda: any(t > down_at + 10 for _, t in traffic.acks()), 60,
                 "writes acknowledged 10 s after the operator went down")
        restarts = postgres_restarts(namespace, leader)
        crashed_at = time.time()
        kubectl("exec", leader, "-n", namespace, "-c", "postgres", "--", "bash", "-c",
                'kill -9 "$(head -1 "$PGDATA/postmaster.pid")"')
        wait_for(lambda: postgres_restarts(namespace, leader) > restarts, 120,
                 "the postgres container restarts")
        # The writer feels the crash (a failed write after it), then writes are acknowledged again.
        failed_at = wait_for(lambda: min((t for _, t in traffic.errors() if t > crashed_at), default=None),
                             120, "a write failing after the crash")
        wait_for(lambda: any(t > failed_at for _, t in traffic.acks()), 240,
                 "writes acknowledged again after the crash, with the operator still down")
        assert not operator_pods()
        # The crashed leader came back gated and its agent opened the gate on the failsafe, not on a renewal.
        assert "GateOpened: the lease holds (failsafe)" in lease_agent_log(arch, leader)
        acks = traffic.acks()
        direct = traffic.direct_acks()
        assert {d.pod for d in direct} == {leader}, "only the leader ever acknowledged a write"
        assert split_brain_direct(direct) == []
        assert not {i for i, _ in acks} - traffic.stored_ids(), "acknowledged writes lost"
    finally:
        traffic.stop()
        scale_operator(replicas)
    wait_for(lambda: len(operator_pods()) >= replicas, 180, "the operator back")
    arch.wait_healthy(timeout=300)
    assert arch.leader() == leader
    drop(arch)


def drop(arch: Arch) -> None:
    """The next test needs the cores this stack holds."""
    kubectl("delete", "architectures.archop.io", arch.name, "-n", arch.namespace, "--wait=false")


def control_plane_ip() -> str:
    nodes = get_json("nodes", "-l", "node-role.kubernetes.io/control-plane")["items"]
    assert len(nodes) == 1, [n["metadata"]["name"] for n in nodes]
    return node_ip_and_pod_cidr(nodes[0]["metadata"]["name"])[0]


def lease_renewed_after(t: float) -> bool:
    lease = get_json("lease", "archop-operator", namespace=OPERATOR_NAMESPACE)
    renewed = (lease.get("spec") or {}).get("renewTime") or ""
    return bool(renewed) and calendar.timegm(time.strptime(renewed[:19], "%Y-%m-%dT%H:%M:%S")) > t


def test_api_server_unreachable_from_the_operator(namespace: str) -> None:
    arch = Arch(name=f"api-{uuid.uuid4().hex[:4]}", namespace=namespace, synchronous=True)
    arch.create()
    arch.wait_healthy(timeout=600)
    leader = arch.leader()
    failovers = _failovers_started(namespace)
    api = control_plane_ip()
    pods = get_json("pods", "-l", SELECTOR, namespace=OPERATOR_NAMESPACE)["items"]
    by_node: dict[str, list[str]] = defaultdict(list)
    for p in pods:
        by_node[p["spec"]["nodeName"]].append(p["status"]["podIP"])
    traffic = Traffic(arch)
    traffic.start()
    try:
        cut_at = time.time()
        for node, ips in by_node.items():
            cut(node, ips, [api])
        # Well past the operator's Lease (8 s) and the leader lease's TTL: writes must still be acknowledged.
        wait_for(lambda: any(t > cut_at + 20 for _, t in traffic.acks()), 120,
                 "writes acknowledged 20 s after the API server became unreachable")
    finally:
        for node in by_node:
            uncut(node)
    healed_at = time.time()
    try:
        wait_for(lambda: lease_renewed_after(healed_at), 120, "the operator holding its Lease again")
        arch.wait_healthy(timeout=300)
        assert arch.leader() == leader
        assert _failovers_started(namespace) == failovers, "a failover while only the API was unreachable"
        direct = traffic.direct_acks()
        assert {d.pod for d in direct} == {leader}, "only the leader ever acknowledged a write"
        assert split_brain_direct(direct) == []
        assert not {i for i, _ in traffic.acks()} - traffic.stored_ids(), "acknowledged writes lost"
    finally:
        traffic.stop()
    drop(arch)
