"""Pod and node state of the database pods, read through archop.apply (the parsing is pure, unit-tested)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from archop import apply, names, ownership
from archop.health.model import PodState
from archop.podproblems import pod_problem


@dataclass(frozen=True)
class NodeState:
    ready: bool | None  # None: the node reports no Ready condition
    cordoned: bool


def node_ready(node: dict[str, Any]) -> bool | None:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return None


def node_state(node: dict[str, Any]) -> NodeState:
    return NodeState(ready=node_ready(node), cordoned=bool((node.get("spec") or {}).get("unschedulable")))


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        a, b = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (start, end))
    except ValueError:
        return None
    return (b - a).total_seconds()


def back_off_after_kill(status: dict[str, Any]) -> float | None:
    """How long the last run lasted, when the container now waits in CrashLoopBackOff after being killed
    (SIGKILL: exit 137, or OOMKilled) or stopped (exit 0: the operator's hard fence or the lease agent shut
    the postmaster down, and start.sh ended with it); None otherwise. A postgres that fails at start exits
    with 1. Each failover stops an old leader once, so without this a leader that lost twice within ten
    minutes would wait minutes in the kubelet's doubling back-off before it rejoins."""
    if ((status.get("state") or {}).get("waiting") or {}).get("reason") != "CrashLoopBackOff":
        return None
    last = (status.get("lastState") or {}).get("terminated") or {}
    if last.get("exitCode") not in (0, 137) and last.get("reason") != "OOMKilled":
        return None
    ran = _seconds(last.get("startedAt"), last.get("finishedAt"))
    return 0.0 if ran is None else ran


def pod_state(pod: dict[str, Any], nodes: dict[str, NodeState], update_revision: str | None) -> PodState:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    labels = meta.get("labels") or {}
    cs = {c.get("name"): c for c in status.get("containerStatuses") or []}
    pg = cs.get("postgres") or {}
    node = spec.get("nodeName")
    on = nodes.get(node) if node else None
    revision = labels.get("controller-revision-hash")
    return PodState(
        name=meta.get("name", ""),
        ip=status.get("podIP") or None,
        uid=meta.get("uid") or None,
        phase=status.get("phase"),
        deleting=bool(meta.get("deletionTimestamp")),
        ready=bool(pg.get("ready")),
        # No status yet counts as running: only the kubelet saying otherwise is evidence of a dead postmaster.
        running=not pg or "running" in (pg.get("state") or {"running": {}}),
        back_off_after_kill=back_off_after_kill(pg) if pg else None,
        restarts=int(pg.get("restartCount") or 0),
        node=node,
        node_ready=on.ready if on is not None else None,
        node_cordoned=on is not None and on.cordoned,
        role=labels.get(names.L_ROLE),
        revision=revision,
        up_to_date=update_revision is None or revision is None or revision == update_revision,
        problem=pod_problem(pod),
    )


@dataclass(frozen=True)
class PodsSeen:
    pods: dict[str, PodState]  # this Architecture's database pods by name
    replicas: int | None  # its StatefulSet's spec.replicas
    foreign: tuple[str, ...]  # pods with the database labels that are not its own (never probed)


def observe_pods(api: Any, arch: str, namespace: str, uid: str) -> PodsSeen:
    """Blocking (run it in a thread): the database pods of the Architecture with this uid."""
    selector = names.selector(arch, names.DATABASE)
    labelled = apply.list_objects(api, "v1", "Pod", namespace, selector)
    nodes = {n["metadata"]["name"]: node_state(n) for n in apply.list_objects(api, "v1", "Node", None, {})}
    update_revision = None
    replicas = None
    sts = apply.get(api, "apps/v1", "StatefulSet", namespace, names.db(arch))
    if sts is not None:
        update_revision = (sts.get("status") or {}).get("updateRevision")
        replicas = (sts.get("spec") or {}).get("replicas")
    pods, foreign = ownership.database_pods(labelled, sts, arch, uid)
    return PodsSeen({p["metadata"]["name"]: pod_state(p, nodes, update_revision) for p in pods}, replicas,
                    tuple(foreign))
