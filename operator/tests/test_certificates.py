"""The periodic certificate check (handlers/certificates.py, the kopf timer `certificates`) against the fake
API server of test_reconcile_ownership: nothing is written while every certificate is current; a due one is
renewed by the reconcile itself (the same Secret patch, event and pod-template stamp); whatever the
reconcile would refuse is left to it."""

from __future__ import annotations

import base64
import logging
from datetime import datetime
from typing import Any

import pytest
from archop import apply, main, reasons
from archop.build import tls
from archop.handlers import certificates, claim
from test_reconcile_ownership import NS, FakeApi, body, capture_events, existing_tls, foreign, url

TLS_GETS = [("GET", url(m["kind"], m["metadata"]["name"])) for m in tls.stubs("shop", NS)]


@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, bool]]:
    return capture_events(monkeypatch)


def check(api: FakeApi, monkeypatch: pytest.MonkeyPatch, b: dict[str, Any] | None = None,
          ) -> dict[str, tls.Renewal]:
    monkeypatch.setattr(apply, "api", lambda: api)
    b = b or body(status={"currentLeader": "shop-db-0"})
    return certificates.check(name="shop", namespace=NS, body=b, spec=b["spec"], status_=b["status"],
                              generation=1, logger=logging.getLogger("test"))


def test_every_certificate_current_nothing_is_written(monkeypatch: pytest.MonkeyPatch, emitted: list) -> None:
    api = FakeApi(existing_tls())
    assert check(api, monkeypatch) == {}
    assert [(m, u) for m, u, _ in api.sent] == TLS_GETS  # four reads by name, and nothing else
    assert emitted == []


@pytest.mark.parametrize(("secret", "kind", "workload"), [
    ("shop-db-tls", "StatefulSet", "shop-db"), ("shop-cache-tls", "Deployment", "shop-cache")])
def test_a_due_certificate_is_renewed_by_the_reconcile(monkeypatch: pytest.MonkeyPatch, emitted: list,
                                                       secret: str, kind: str, workload: str) -> None:
    api = FakeApi(existing_tls(expiring=secret))
    assert check(api, monkeypatch) == {secret: tls.Renewal.EXPIRING}
    (patch,) = [b for m, u, b in api.sent if m == "PATCH" and u.startswith("secrets/") and b]
    assert patch["metadata"] == {"uid": f"uid-of-{secret}", "resourceVersion": "42"}
    fresh = base64.b64decode(patch["data"]["tls.crt"]).decode()
    template = api.objects[url(kind, workload)]["spec"]["template"]["metadata"]
    assert template["annotations"][tls.CERT_ANNOTATION] == tls.fingerprint(fresh)
    told = [r for r, _, _ in emitted]
    assert told.count(reasons.SERVER_CERTIFICATE_RENEWED) == 1 and reasons.CHILDREN_APPLIED in told


def test_the_check_and_the_reconcile_ask_one_rule(monkeypatch: pytest.MonkeyPatch, emitted: list) -> None:
    """tls.renewal is the rule for both: a verdict the check sees is the one the reconcile acts on."""
    real = tls.renewal

    def names_changed_for_the_cache(server: tls.KeyPair, ca: tls.KeyPair | None, dns: tuple[str, ...],
                                    now: datetime) -> tls.Renewal:
        return tls.Renewal.NAMES if dns[0] == "shop-cache" else real(server, ca, dns, now)

    monkeypatch.setattr(tls, "renewal", names_changed_for_the_cache)
    api = FakeApi(existing_tls())
    assert check(api, monkeypatch) == {"shop-cache-tls": tls.Renewal.NAMES}
    assert [u for m, u, b in api.sent if m == "PATCH" and u.startswith("secrets/") and b] == [
        url("Secret", "shop-cache-tls")]
    (renewed,) = [m for r, m, _ in emitted if r == reasons.SERVER_CERTIFICATE_RENEWED]
    assert "Secret shop-cache-tls (names)" in renewed


def test_a_foreign_tls_secret_is_left_to_the_reconcile(monkeypatch: pytest.MonkeyPatch,
                                                        emitted: list) -> None:
    objects = existing_tls(expiring="shop-db-tls")
    objects[url("Secret", "shop-cache-tls")] = foreign("shop-cache-tls")
    api = FakeApi(objects)
    assert check(api, monkeypatch) == {}
    assert [(m, u) for m, u, _ in api.sent] == TLS_GETS
    assert emitted == []


def test_an_unusable_ca_is_left_to_the_reconcile(monkeypatch: pytest.MonkeyPatch, emitted: list,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    objects = existing_tls(expiring="shop-db-tls")
    objects[url("Secret", "shop-ca")]["data"] = {"ca.crt": base64.b64encode(b"nope").decode()}
    api = FakeApi(objects)
    with caplog.at_level(logging.WARNING, logger="test"):
        assert check(api, monkeypatch) == {}
    assert [(m, u) for m, u, _ in api.sent] == TLS_GETS
    assert "never replaces a CA" in caplog.text and emitted == []


def test_a_missing_certificate_is_created(monkeypatch: pytest.MonkeyPatch, emitted: list) -> None:
    """An Architecture from before the cache had TLS: its first check creates the cache's certificate."""
    objects = existing_tls()
    del objects[url("Secret", "shop-cache-tls")]
    api = FakeApi(objects)
    assert check(api, monkeypatch) == {"shop-cache-tls": tls.Renewal.MISSING}
    assert ("POST", "secrets") in api.writes()
    assert tls.CERT_ANNOTATION in api.objects[url("Deployment", "shop-cache")]["spec"]["template"][
        "metadata"]["annotations"]


def test_the_timer_stands_aside_for_another_release(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claim, "may_act", lambda _body: False)
    monkeypatch.setattr(apply, "api", lambda: pytest.fail("no API call while another release manages it"))
    b = body()
    assert main.certificates(name="shop", namespace=NS, body=b, spec=b["spec"], status=b["status"],
                             meta=b["metadata"], logger=logging.getLogger("test")) is None
