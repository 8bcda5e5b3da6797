"""Why a tier's pods cannot become ready, in the scheduler's or the kubelet's own words (pure).

A tier that is not ready only because it is still starting reports TierProgressing. A pod that will not
start without someone's help (no node can take it, its image cannot be pulled, it crash-loops, its
configuration is invalid) is a different answer to "why is my Architecture not Ready?", and the user
should read it in `kubectl describe arch` rather than in each pod's events.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from archop import reasons


class Kind(StrEnum):
    UNSCHEDULABLE = reasons.PODS_UNSCHEDULABLE
    FAILING = reasons.PODS_FAILING


# Container waiting reasons that do not clear by waiting (the kubelet retries them, with back-off, forever).
STUCK_WAITING = frozenset({
    "CrashLoopBackOff", "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError",
})
MESSAGE_LIMIT = 300  # a condition message stays readable; the pod's own events have the rest


@dataclass(frozen=True)
class PodProblem:
    kind: Kind
    pod: str
    message: str

    def describe(self) -> str:
        return f"pod {self.pod}: {self.message}"


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def pod_problem(pod: dict[str, Any]) -> PodProblem | None:
    """The reason this pod cannot become ready without help, or None (ready, or still on its way)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    name = str(meta.get("name", ""))
    if meta.get("deletionTimestamp"):
        return None
    for cond in status.get("conditions") or []:
        if (cond.get("type") == "PodScheduled" and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"):
            return PodProblem(Kind.UNSCHEDULABLE, name, _clip(f"unschedulable: {cond.get('message') or ''}"))
    if status.get("phase") == "Failed":
        why = status.get("reason") or "Failed"
        return PodProblem(Kind.FAILING, name, _clip(f"{why}: {status.get('message') or ''}"))
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING:
            text = f"container {cs.get('name')}: {waiting['reason']}"
            if waiting.get("message"):
                text += f": {waiting['message']}"
            return PodProblem(Kind.FAILING, name, _clip(text))
    return None


def first_problem(pods: list[dict[str, Any]]) -> PodProblem | None:
    """The first problem in pod-name order (stable across ticks, so the condition does not flap)."""
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name", ""))):
        problem = pod_problem(pod)
        if problem is not None:
            return problem
    return None
