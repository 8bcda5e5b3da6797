"""Status rendering for the database tier (pure): status.instances, follower counts, DatabaseReady."""

from __future__ import annotations

from typing import Any

from archop import names, reasons
from archop.failover.decide import LeaderSnapshot
from archop.health.model import DbObservation, format_lsn
from archop.images import MajorRefusal
from archop.podproblems import PodProblem


def database_status(obs: DbObservation, leader: str | None, instances: int,
                    last_seen: LeaderSnapshot | None) -> dict[str, Any]:
    """The database tier's part of the status patch a monitor tick writes. leaderLastSeen only comes from a
    tick that saw the leader healthy (last_seen given): the failover guards read it after the leader has
    gone, so a tick that cannot see the leader must leave it as it was."""
    ready = followers_ready(obs, leader)
    desired = max(0, instances - 1)
    patch: dict[str, Any] = {
        "currentLeader": leader,
        "instances": instances_status(obs, leader),
        "followersReady": ready,
        "followersDesired": desired,
        "followers": f"{ready}/{desired}",
    }
    lead = obs.get(leader)
    if lead is not None and lead.probe.is_primary and lead.probe.timeline:
        patch["timeline"] = lead.probe.timeline
    major = data_major(obs, leader)
    if major is not None:  # a tick that reaches no server leaves the last one known in place
        patch["postgresMajor"] = major
    if last_seen is not None:
        patch["leaderLastSeen"] = last_seen.to_status()
    return patch


def instances_status(obs: DbObservation, leader: str | None) -> list[dict[str, Any]]:
    """One row per pod, in name order. The leader's receivedLsn is its write position."""
    lead = obs.get(leader)
    lead_pos = lead.probe.current_lsn if lead is not None and lead.probe.is_primary else None
    sync = {r.name: r.sync_state for r in (lead.probe.replicas if lead is not None else ())}
    streaming = {r.name for r in (lead.probe.replicas if lead is not None else ()) if r.state == "streaming"}
    rows = []
    for inst in sorted(obs.instances.values(), key=lambda i: (i.ordinal, i.name)):
        p = inst.probe
        role = (inst.pod.role if inst.pod is not None else None) or ""
        row: dict[str, Any] = {
            "name": inst.name,
            "role": role,
            "ready": bool(p.reachable and inst.pod is not None and inst.pod.ready),
            "streaming": inst.name in streaming and p.streaming,
        }
        if p.timeline is not None:
            row["timeline"] = p.timeline
        recv = p.current_lsn if p.is_primary else p.received_lsn
        if recv is not None:
            row["receivedLsn"] = format_lsn(recv)
        replay = p.current_lsn if p.is_primary else p.replay_lsn
        if replay is not None:
            row["replayLsn"] = format_lsn(replay)
        if lead_pos is not None and p.reachable:
            row["lagBytes"] = 0 if inst.name == leader else max(0, lead_pos - (p.replay_lsn or 0))
        if inst.name in sync:
            row["syncState"] = sync[inst.name]
        rows.append(row)
    return rows


def data_major(obs: DbObservation, leader: str | None) -> int | None:
    """The PostgreSQL major version of the tier's data, as its servers report it: the leader's, or (while it
    does not answer) that of the first instance that does. One StatefulSet runs one image, and the reconcile
    never rolls out another major, so they agree; the leader's data is the one that counts if not."""
    lead = obs.get(leader)
    if lead is not None and lead.probe.reachable and lead.probe.major is not None:
        return lead.probe.major
    return next((i.probe.major for i in sorted(obs.instances.values(), key=lambda i: i.name)
                 if i.probe.reachable and i.probe.major is not None), None)


def followers_ready(obs: DbObservation, leader: str | None) -> int:
    lead = obs.get(leader)
    if lead is None or not lead.probe.is_primary:
        return 0
    streaming = {r.name for r in lead.probe.replicas if r.state == "streaming"}
    return sum(1 for i in obs.instances.values() if i.name in streaming and i.probe.streaming)


def database_condition(obs: DbObservation, leader: str | None, in_failover: bool, message: str,
                       refusal: MajorRefusal | None = None) -> tuple[bool, str, str]:
    """(status, reason, message) of the DatabaseReady condition. `refusal` is status.majorUpgradeRefused: the
    tier is not as specified while the reconcile keeps it on its running image, so it is not Ready (a
    `kubectl wait --for=condition=Ready` after changing the image must not pass). A tier that is unhealthy
    besides keeps its own reason, which needs acting on first; the refusal is added to its message."""
    ok, reason, text = _health_condition(obs, leader, in_failover, message)
    if refusal is None:
        return ok, reason, text
    if ok:
        return False, reasons.MAJOR_UPGRADE_REFUSED, refusal.message()
    return False, reason, f"{text}; besides, {refusal.message()}"


def _health_condition(obs: DbObservation, leader: str | None, in_failover: bool,
                      message: str) -> tuple[bool, str, str]:
    lead = obs.get(leader)
    stuck = pod_problem_of(obs)
    if in_failover:
        return False, reasons.TIER_PROGRESSING, message
    if lead is None or not lead.probe.is_primary:
        text = message or f"leader {leader} is not available"
        if stuck is not None:
            return False, stuck.kind.value, f"{text}; {stuck.describe()}"
        return False, reasons.TIER_DEGRADED, text
    if lead.probe.read_only:
        return False, reasons.TIER_DEGRADED, f"leader {leader} is fenced (read-only)"
    ready = followers_ready(obs, leader)
    want = max(0, obs.desired - 1)
    text = f"leader {leader} writable; {ready}/{want} followers streaming"
    # Ready means the tier as specified: `kubectl wait --for=condition=Ready` must not return mid-clone.
    if ready < want:
        if stuck is not None:
            return False, stuck.kind.value, f"{text}; {stuck.describe()}"
        return False, reasons.TIER_PROGRESSING, text
    return True, reasons.TIER_READY, text


def pod_problem_of(obs: DbObservation) -> PodProblem | None:
    """The first database pod (by name) that cannot start without help."""
    for inst in sorted(obs.instances.values(), key=lambda i: i.name):
        if inst.pod is not None and inst.pod.problem is not None:
            return inst.pod.problem
    return None


def role_counts(obs: DbObservation) -> dict[str, int]:
    out = {names.LEADER: 0, names.FOLLOWER: 0, names.FENCED: 0}
    for inst in obs.instances.values():
        role = inst.pod.role if inst.pod is not None else None
        if role in out:
            out[role] += 1
    return out
