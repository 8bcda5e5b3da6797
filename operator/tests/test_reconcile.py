"""The pure parts of the reconcile handler: unsafe-change checks, the apply summary, the status patch."""

from __future__ import annotations

import logging

import pytest
from archop import events, reasons
from archop.handlers.reconcile import quantity_bytes, reconcile_status, summary, unsafe_changes
from archop.spec import ArchitectureSpec


def spec(**database: object) -> ArchitectureSpec:
    return ArchitectureSpec.parse({"database": database})


@pytest.mark.parametrize(
    ("text", "value"), [("1Gi", 2**30), ("1500Mi", 1500 * 2**20), ("2G", 2e9), ("10", 10)])
def test_quantities(text: str, value: float) -> None:
    assert quantity_bytes(text) == value


def test_storage_may_grow_but_not_shrink_or_change_class() -> None:
    old = spec(storage={"size": "2Gi", "storageClassName": "standard"})
    assert unsafe_changes(old, spec(storage={"size": "3Gi", "storageClassName": "standard"})) == []
    problems = unsafe_changes(old, spec(storage={"size": "1Gi", "storageClassName": "fast"}))
    assert len(problems) == 2
    assert "may not shrink (2Gi -> 1Gi)" in problems[0] and "set it back to 2Gi" in problems[0]
    assert "storageClassName is immutable" in problems[1] and "standard" in problems[1]


def test_summary_counts_kinds_and_names_pruned_children() -> None:
    manifests = [{"kind": "Service", "metadata": {"name": "a"}},
                 {"kind": "Service", "metadata": {"name": "b"}},
                 {"kind": "Deployment", "metadata": {"name": "c"}}]
    pruned = [{"kind": "Ingress", "metadata": {"name": "shop-ingress"}}]
    assert summary(manifests, pruned) == (
        "Applied 3 children (Deployment x1, Service x2); removed Ingress shop-ingress")
    assert summary(manifests, []) == "Applied 3 children (Deployment x1, Service x2)"


def test_first_status_patch_starts_every_condition() -> None:
    patch = reconcile_status("shop", "demo", ArchitectureSpec(), {}, 1, "2026-01-01T00:00:00Z")
    assert patch["observedGeneration"] == 1
    assert patch["endpoints"]["readWrite"] == "shop-db-rw.demo.svc:5432"
    assert (patch["followersDesired"], patch["followers"], patch["appReady"]) == (2, "0/2", "0/2")
    assert {c["type"] for c in patch["conditions"]} == set(reasons.CONDITION_TYPES)


def test_later_status_patches_leave_the_monitors_fields_alone() -> None:
    first = reconcile_status("shop", "demo", ArchitectureSpec(), {}, 1, "2026-01-01T00:00:00Z")
    current = {"conditions": first["conditions"], "followers": "2/2", "appReady": "2/2"}
    patch = reconcile_status("shop", "demo", spec(followers=3), current, 2, "2026-01-01T00:01:00Z")
    assert set(patch) == {"observedGeneration", "endpoints", "followersDesired", "foreignObjects",
                          "ingressHost", "majorUpgradeRefused"}
    assert patch["followersDesired"] == 3
    assert (patch["foreignObjects"], patch["ingressHost"], patch["majorUpgradeRefused"]) == ([], None, None)


def test_a_blocked_reconcile_records_what_stands_in_its_way_not_a_generation() -> None:
    first = reconcile_status("shop", "demo", ArchitectureSpec(), {}, 1, "2026-01-01T00:00:00Z")
    current = {"conditions": first["conditions"], "followers": "2/2", "appReady": "2/2"}
    patch = reconcile_status("shop", "demo", ArchitectureSpec(), current, 2, "2026-01-01T00:01:00Z",
                             foreign={"Service shop-db-rw": "why"}, applied=False)
    assert patch == {"foreignObjects": ["Service shop-db-rw"], "ingressHost": None}


def test_events_outside_kopf_go_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="archop.events"):
        ref = events.object_ref("shop", "demo")
        events.emit(ref, reasons.FOLLOWERS_SCALED, "Followers scaled from 2 to 3")
        events.emit(events.object_ref("shop", "demo"), reasons.RECONCILE_FAILED, "boom", warning=True)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "FollowersScaled: Followers scaled from 2 to 3"), ("WARNING", "ReconcileFailed: boom")]


def test_deployed_storage_reads_the_volume_template() -> None:
    from archop.handlers.reconcile import deployed_storage

    assert deployed_storage(None) is None
    assert deployed_storage({"spec": {}}) is None
    sts = {"spec": {"volumeClaimTemplates": [{"spec": {"resources": {"requests": {"storage": "2Gi"}},
                                                       "storageClassName": "fast"}}]}}
    assert deployed_storage(sts) == ("2Gi", "fast")


def test_the_volume_template_keeps_the_deployed_size() -> None:
    from archop.build import build_all
    from archop.config import Settings
    from archop.handlers.reconcile import keep_volume_template
    from archop.spec import ArchitectureSpec

    spec = ArchitectureSpec.parse({"database": {"storage": {"size": "5Gi"}}})
    manifests = build_all("shop", "ns", spec, Settings(), "conf")
    keep_volume_template(manifests, "shop-db", "1Gi")
    sts = next(m for m in manifests if m["kind"] == "StatefulSet")
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"


def test_a_refused_image_is_recorded_and_a_resolved_one_cleared() -> None:
    from archop.images import ImageSource, MajorRefusal

    refusal = MajorRefusal("postgres:16.4", ImageSource.SPEC, 16, 15, "postgres:15.20")
    current = {"majorUpgradeRefused": refusal.to_status()}
    patch = reconcile_status("shop", "demo", ArchitectureSpec(), current, 2, "2026-01-01T00:01:00Z",
                             refusal=refusal)
    assert patch["majorUpgradeRefused"] == refusal.to_status()
    assert reconcile_status("shop", "demo", ArchitectureSpec(), current, 3,
                            "2026-01-01T00:02:00Z")["majorUpgradeRefused"] is None
    # A blocked reconcile decided nothing about images: it leaves the record as it is.
    blocked = reconcile_status("shop", "demo", ArchitectureSpec(), current, 3, "2026-01-01T00:02:00Z",
                               foreign={"Service shop-db-rw": "why"}, applied=False)
    assert "majorUpgradeRefused" not in blocked


def test_the_deployed_image_and_the_data_major() -> None:
    from archop.build import build_all
    from archop.config import Settings
    from archop.handlers.reconcile import data_major, deployed_image, keep_database_image

    assert deployed_image(None) is None and deployed_image({"spec": {}}) is None
    manifests = build_all("shop", "ns", ArchitectureSpec(), Settings(), "conf")
    sts = next(m for m in manifests if m["kind"] == "StatefulSet")
    assert deployed_image(sts) == Settings().postgres_image
    keep_database_image(manifests, "shop-db", "postgres:15.18-bookworm")
    assert {c["image"] for c in sts["spec"]["template"]["spec"]["containers"]} == {"postgres:15.18-bookworm"}
    assert [data_major(s) for s in ({}, {"postgresMajor": 15}, {"postgresMajor": "15"},
                                    {"postgresMajor": True})] == [None, 15, None, None]
