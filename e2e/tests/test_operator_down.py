"""Both operator replicas down (docs/failover.md, "Operator down, API server unreachable"): the leader keeps
taking writes on the failsafe alone (every follower streams from it); when its postmaster crashes it comes
back behind the start gate, takes application writes again only once its followers stream from it, and
nobody else is ever promoted. Pass or fail on lost writes, on who acknowledged, and on the gate, never on
timing."""

from __future__ import annotations

import sys
import time
import uuid

from conftest import OPERATOR_NAMESPACE, ROOT, get_json, kubectl, wait_for

sys.path.insert(0, str(ROOT))

from bench.failover.harness import Arch, Traffic, lease_agent_log, split_brain_direct  # noqa: E402

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
