"""Specs drawn from the CRD's own schema (testsupport/specgen.py), sent to the real API server.

Every spec the API server accepts must be one the operator can build, and every child it builds must be
accepted by the same API server; every spec it refuses must be refused with a message that names a field
below `spec`. A sample of accepted specs is then applied for real: each must reach Ready or say, in a tier
condition, why it cannot (the scheduler's or the kubelet's words), with every child applied (nothing
half-done) and the operator never restarting.

The examples are derandomized, so every run of `make e2e` sends the same specs; ARCHOP_LONG_PROPERTY=1
draws new ones, many more of them.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest
from archop import names, reasons
from archop.build import build_all, cdn
from archop.build.secrets import build_secrets
from archop.config import Settings
from archop.spec import ArchitectureSpec
from conftest import (
    OPERATOR_NAMESPACE,
    architecture,
    condition,
    get_json,
    kubectl,
    scratch_namespace,
    wait_for,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testsupport import specgen

LONG = os.environ.get("ARCHOP_LONG_PROPERTY") == "1"
NAME = "fuzz"
SETTINGS = Settings(namespace=OPERATOR_NAMESPACE, identity="e2e-fuzz")
# A refusal names the offending field: `spec.database.storage: Invalid value: ...`.
FIELD = re.compile(r"\bspec\.[A-Za-z]")
# Tier reasons that answer "why not Ready?" for good: nothing more happens without the user.
SETTLED = {reasons.TIER_READY, reasons.TIER_DISABLED, reasons.PODS_UNSCHEDULABLE, reasons.PODS_FAILING}
FUZZ = settings(max_examples=300 if LONG else 40, derandomize=not LONG, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def children(spec: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    """What the operator builds for this (API-server-defaulted) spec."""
    parsed = ArchitectureSpec.parse(spec)
    conf = cdn.nginx_conf(parsed) if parsed.cdn.enabled else ""
    leader = spec.get("database", {}).get("switchoverTo")
    return build_secrets(NAME, namespace) + build_all(NAME, namespace, parsed, SETTINGS, conf,
                                                      current_leader=leader)


def dry_run(namespace: str, obj: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """(the object as the API server would store it, '') or (None, its refusal)."""
    proc = kubectl("create", "--dry-run=server", "-n", namespace, "-o", "json", "-f", "-",
                   stdin=json.dumps(obj), check=False)
    return (json.loads(proc.stdout), "") if proc.returncode == 0 else (None, proc.stderr)


@pytest.fixture(scope="module")
def fuzz_namespace() -> Any:
    with scratch_namespace("e2e-fuzz") as ns:
        yield ns


@FUZZ
@given(spec=specgen.specs(), switchover=st.none() | st.integers(0, 9))
def test_the_api_server_refuses_by_field_or_every_child_is_accepted(fuzz_namespace: str, spec: dict[str, Any],
                                                                     switchover: int | None) -> None:
    if switchover is not None:
        spec.setdefault("database", {})["switchoverTo"] = names.db_pod(NAME, switchover)
    stored, refusal = dry_run(fuzz_namespace, architecture(NAME, spec))
    if stored is None:
        assert "is invalid" in refusal and FIELD.search(refusal), f"a refusal that names no field:\n{refusal}"
        return
    manifests = children(stored["spec"], fuzz_namespace)
    proc = kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=e2e-fuzz", "-n",
                   fuzz_namespace, "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                "items": manifests}), check=False)
    assert proc.returncode == 0, f"the API server accepted the spec but refuses a child:\n{proc.stderr}"


def operator_restarts() -> int:
    pods = get_json("pods", "-l", "app.kubernetes.io/name=archop", namespace=OPERATOR_NAMESPACE)["items"]
    statuses = [c for p in pods for c in p["status"].get("containerStatuses") or []]
    return sum(int(c.get("restartCount", 0)) for c in statuses)


def settled(arch: dict[str, Any]) -> bool:
    """Ready, or every tier either ready or stuck for a reason it states."""
    ready = condition(arch, reasons.READY)
    if ready is not None and ready["status"] == "True":
        return True
    tiers = [condition(arch, t) for t in (reasons.DATABASE_READY, reasons.CACHE_READY, reasons.APP_READY,
                                          reasons.INGRESS_READY)]
    return all(t is not None and t["reason"] in SETTLED for t in tiers)


@st.composite
def small_accepted_specs(draw: st.DrawFn) -> dict[str, Any]:
    """Specs the API server accepts, with at most 2 followers and 2 app pods (the cluster has 2 cores)."""
    spec = draw(specgen.specs())
    db = spec.setdefault("database", {})
    db["followers"] = min(int(db.get("followers", 1)), 2) if isinstance(db.get("followers"), int) else 1
    app = spec.setdefault("app", {})
    for key in ("replicas", "minReplicas", "maxReplicas"):
        if isinstance(app.get(key), int):
            app[key] = max(1, min(app[key], 2))
    return spec


@settings(max_examples=8 if LONG else 2, derandomize=not LONG, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])
@given(spec=small_accepted_specs())
def test_an_accepted_spec_applies_and_settles(spec: dict[str, Any]) -> None:
    with scratch_namespace("e2e-fuzz-apply") as ns:
        stored, refusal = dry_run(ns, architecture(NAME, spec))
        if stored is None:
            return  # refused by field: the test above covers refusals
        before = operator_restarts()
        kubectl("apply", "-n", ns, "-f", "-", stdin=json.dumps(architecture(NAME, spec)))
        arch = wait_for(lambda: (a if settled(a := get_json("architecture", NAME, namespace=ns)) else None),
                        360, f"Architecture {ns}/{NAME} Ready or stuck for a stated reason", interval=3)
        owned = condition(arch, reasons.CHILDREN_OWNED)
        assert owned is None or owned["status"] == "True", owned
        for child in children(arch["spec"], ns):  # every child was applied: nothing is half-done
            group = child["apiVersion"].rpartition("/")[0]
            resource = f"{child['kind'].lower()}.{group}" if group else child["kind"].lower()
            kubectl("get", resource, child["metadata"]["name"], "-n", ns, "-o", "name")
        assert operator_restarts() == before, "the operator restarted while it handled the spec"


def test_a_tier_no_node_can_take_says_why(namespace: str) -> None:
    """More CPU and memory than any node has: the API server accepts it (nodes can be that big), and the
    tiers say in their conditions what the scheduler says."""
    spec = {"app": {"resources": {"requests": {"cpu": "64"}, "limits": {"cpu": "64"}}},
            "cache": {"resources": {"requests": {"memory": "1Ti"}, "limits": {"memory": "1Ti"}}}}
    kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(architecture(NAME, spec)))

    def stuck() -> dict[str, Any] | None:
        arch = get_json("architecture", NAME, namespace=namespace)
        app, cache = condition(arch, reasons.APP_READY), condition(arch, reasons.CACHE_READY)
        both = app is not None and cache is not None
        return arch if both and {app["reason"], cache["reason"]} == {reasons.PODS_UNSCHEDULABLE} else None

    arch = wait_for(stuck, 240, "AppReady and CacheReady with reason PodsUnschedulable", interval=3)
    app, cache = condition(arch, reasons.APP_READY), condition(arch, reasons.CACHE_READY)
    assert app is not None and "Insufficient cpu" in app["message"], app
    assert cache is not None and "Insufficient memory" in cache["message"], cache
    ready = condition(arch, reasons.READY)
    assert ready is not None and ready["status"] == "False"
