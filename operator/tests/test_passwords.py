"""Password rotation (issue 13), without a cluster or a server: the record of an applied password
(build/secrets.py), the decision to rotate, the pod-template revisions the builders carry, the SCRAM
statement (failover/act.py), and the periodic check (handlers/passwords.py) against the fake API server of
test_reconcile_ownership. The real ALTER ROLE on Postgres is operator/tests/integration/test_rotation.py."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import json
import logging
from typing import Any

import pytest
from archop import apply, names, reasons
from archop.build import app, cache, secrets
from archop.failover import act
from archop.handlers import passwords
from archop.health.model import PodState
from archop.health.pods import PodsSeen
from archop.health.probe import Target
from archop.spec import ArchitectureSpec
from psycopg import pq
from test_reconcile_ownership import NS, FakeApi, body, capture_events, url
from test_reconcile_ownership import run as reconcile

DB, CACHE = "shop-db-app", "shop-cache"
READY = {"currentLeader": "shop-db-0",
         "conditions": [{"type": reasons.DATABASE_READY, "status": "True", "reason": reasons.TIER_READY}]}
NEW_DB_PW, NEW_CACHE_PW = "n3w:db/pw@x", "n3w-cache-pw"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _read(name: str, data: dict[str, str], record: str | None = None) -> dict[str, Any]:
    """A Secret as the API returns it."""
    meta: dict[str, Any] = {"name": name, "namespace": NS, "uid": f"uid-of-{name}", "resourceVersion": "5"}
    if record is not None:
        meta["annotations"] = {secrets.APPLIED_ANNOTATION: record}
    return {"metadata": meta, "data": {k: _b64(v) for k, v in data.items()}}


def _contract(name: str, password: str) -> dict[str, str]:
    if name == DB:
        return {"username": "app", "password": password, **secrets.database_keys("shop", NS, "app", password)}
    return {"password": password, **secrets.cache_keys("shop", NS, password)}


# ------------------------------------------------------------------------------------- the record, the state

def test_the_record_is_a_salted_keyed_digest_never_the_password() -> None:
    one, two = secrets.applied_record("pw", "salt-a"), secrets.applied_record("pw", "salt-b")
    assert one.startswith("hmac-sha256:salt-a:") and "pw" not in one.split(":", 2)[2]
    assert one != two  # a fresh salt each time: equal passwords do not show as equal records
    assert secrets.records(one, "pw") and secrets.records(two, "pw")
    assert not secrets.records(one, "pw2")
    assert one.rsplit(":", 1)[1] == hmac.new(b"salt-a", b"pw", hashlib.sha256).hexdigest()
    for garbage in ("", "-", "sha256:x:y", "hmac-sha256::" + one.rsplit(":", 1)[1], "hmac-sha256:é:ü"):
        assert not secrets.records(garbage, "pw")
    # The pods' revision depends on the whole record (so on the salt, which only the Secret holds).
    assert secrets.revision(one) != secrets.revision(two) and secrets.revision(None) is None


@pytest.mark.parametrize("name", [DB, CACHE])
def test_the_state_of_a_contract_secret(name: str) -> None:
    state, s = secrets.password_state, secrets.PasswordState
    data = _contract(name, "old")
    record = secrets.applied_record("old", "salt")
    assert state("shop", NS, _read(name, data, record)) is s.APPLIED
    # The password changed (a patch of `password` only): the keys still carry the applied one.
    assert state("shop", NS, _read(name, {**data, "password": "new"}, record)) is s.CHANGED
    # A record someone edited to force a re-apply.
    assert state("shop", NS, _read(name, data, "-")) is s.CHANGED
    # No record: a Secret from before rotation, its keys those of its password (or none at all: from
    # before the contract) is taken as applied ...
    assert state("shop", NS, _read(name, data)) is s.UNRECORDED
    assert state("shop", NS, _read(name, {k: v for k, v in data.items() if k in ("username", "password")})
                 ) is s.UNRECORDED
    # ... unless a key holds another password: the record went with a change.
    assert state("shop", NS, _read(name, {**data, "password": "new"})) is s.CHANGED
    assert state("shop", NS, _read(name, {k: v for k, v in data.items() if k != "password"}, record)
                 ) is s.NO_PASSWORD


def test_new_contract_secrets_carry_the_record_of_their_password() -> None:
    built = {s["metadata"]["name"]: s for s in secrets.build_secrets("shop", NS)}
    for name in (DB, CACHE):
        record = built[name]["metadata"]["annotations"][secrets.APPLIED_ANNOTATION]
        assert secrets.records(record, built[name]["stringData"]["password"])
    for name in ("shop-db-superuser", "shop-db-replication"):
        assert "annotations" not in built[name]["metadata"]


# ------------------------------------------------------------------------------------- the builders

def _spec(**tiers: Any) -> ArchitectureSpec:
    return ArchitectureSpec.parse(tiers)


def _template_annotations(manifest: dict[str, Any]) -> dict[str, str]:
    return dict(manifest["spec"]["template"]["metadata"].get("annotations") or {})


def test_the_pods_that_read_a_password_carry_its_revision() -> None:
    revisions = secrets.PasswordRevisions(database="d1", cache="c1")
    spec = _spec(cache={"enabled": True})
    dep = app.deployment("shop", NS, spec, "img", "cdn", "h", revisions)
    assert _template_annotations(dep)[app.DB_PASSWORD_ANNOTATION] == "d1"
    assert _template_annotations(dep)[cache.PASSWORD_ANNOTATION] == "c1"
    redis = cache.deployment("shop", NS, spec, "redis", revisions.cache)
    assert _template_annotations(redis) == {cache.PASSWORD_ANNOTATION: "c1"}
    # No cache: the app has no REDIS_URL, so N-cache's password does not roll it.
    no_cache = app.deployment("shop", NS, _spec(cache={"enabled": False}), "img", "cdn", "h", revisions)
    assert cache.PASSWORD_ANNOTATION not in _template_annotations(no_cache)
    # Without records nothing is added (the builders as before).
    bare = app.deployment("shop", NS, spec, "i", "c", "h")
    assert app.DB_PASSWORD_ANNOTATION not in _template_annotations(bare)
    assert "annotations" not in cache.deployment("shop", NS, spec, "redis")["spec"]["template"]["metadata"]
    # A new record, a new template: the Deployment's rolling update (the app's: maxUnavailable 0).
    other = app.deployment("shop", NS, spec, "img", "cdn", "h", secrets.PasswordRevisions("d2", "c1"))
    assert other["spec"]["template"] != dep["spec"]["template"]
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert redis["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}


def test_revisions_of_the_records() -> None:
    record = secrets.applied_record("pw", "s")
    revisions = secrets.PasswordRevisions.of("shop", {DB: record, CACHE: None})
    assert revisions == secrets.PasswordRevisions(database=secrets.revision(record), cache=None)
    assert "pw" not in json.dumps(revisions.__dict__)


# ------------------------------------------------------------------------------------- the statement

def _scram_matches(verifier: str, password: str) -> bool:
    """RFC 5802/7677: the verifier's StoredKey is H(HMAC(SaltedPassword, "Client Key"))."""
    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt = iterations_salt.split(":")
    stored = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return method == "SCRAM-SHA-256" and base64.b64decode(stored) == hashlib.sha256(client_key).digest()


def test_the_statement_carries_a_verifier_computed_here_never_the_password() -> None:
    password = "s3cret'; drop role app; --"
    conn = pq.PGconn.connect_start(b"host=/nonexistent")  # libpq computes it without a server
    try:
        verifier = act.scram_verifier(conn, "app", password)
        again = act.scram_verifier(conn, "app", password)
    finally:
        conn.finish()
    assert _scram_matches(verifier, password) and not _scram_matches(verifier, "other")
    assert verifier != again  # a fresh salt each time
    text = act.password_statement('we"ird', verifier).as_string(None)
    assert text == f"alter role \"we\"\"ird\" password '{verifier}'"
    assert password not in text and "s3cret" not in text


# ------------------------------------------------------------------------------------- the periodic check

@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, bool]]:
    return capture_events(monkeypatch)


@pytest.fixture
def set_passwords(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Target, str, str, str]]:
    """set_role_password recorded, not sent: (target, role, password, the CA file's text at the time)."""
    calls: list[tuple[Target, str, str, str]] = []

    async def fake(target: Target, role: str, password: str, timeout: float = 3.0) -> None:
        assert target.verify is not None
        with open(target.verify.ca_file) as f:
            calls.append((target, role, password, f.read()))

    monkeypatch.setattr(act, "set_role_password", fake)
    monkeypatch.setattr(passwords, "observe_pods", lambda *_: PodsSeen(
        {"shop-db-0": PodState(name="shop-db-0", ip="10.0.0.7")}, 1, ()))
    return calls


def running(monkeypatch: pytest.MonkeyPatch, emitted: list, status: dict[str, Any] | None = None,
            spec: dict[str, Any] | None = None) -> FakeApi:
    """A stack the reconcile made, its Secrets as the API returns them, the Architecture readable; the
    events and requests so far forgotten."""
    api = FakeApi()
    reconcile(api, body(spec), monkeypatch)
    for key, obj in api.objects.items():
        if key.startswith("secrets/"):
            if "stringData" in obj:
                obj["data"] = {k: _b64(v) for k, v in obj.pop("stringData").items()}
            obj["metadata"].update(uid=f"uid-of-{obj['metadata']['name']}", resourceVersion="1")
    status = copy.deepcopy(status if status is not None else READY)
    api.objects[url("Architecture", "shop")] = body(spec, status)
    api.sent.clear()
    emitted.clear()
    return api


def change(api: FakeApi, secret: str, password: str) -> None:
    """`kubectl patch secret` of `password` only."""
    obj = api.objects[url("Secret", secret)]
    obj["data"]["password"] = _b64(password)
    obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)


def check(api: FakeApi, monkeypatch: pytest.MonkeyPatch, status: dict[str, Any] | None = None,
          memo: dict[str, Any] | None = None, spec: dict[str, Any] | None = None,
          ) -> dict[str, passwords.Outcome]:
    monkeypatch.setattr(apply, "api", lambda: api)
    b = body(spec, copy.deepcopy(status if status is not None else READY))
    return passwords.check(name="shop", namespace=NS, body=b, spec=b["spec"], status_=b["status"],
                           generation=1, logger=logging.getLogger("test"), memo=memo)


def data(api: FakeApi, secret: str) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in api.objects[url("Secret", secret)]["data"].items()}


def record(api: FakeApi, secret: str) -> str:
    return str(api.objects[url("Secret", secret)]["metadata"]["annotations"][secrets.APPLIED_ANNOTATION])


def template(api: FakeApi, deployment: str) -> dict[str, str]:
    return _template_annotations(api.objects[url("Deployment", deployment)])


GETS = [("GET", url("Secret", DB)), ("GET", url("Secret", CACHE)),
        ("GET", url("Deployment", "shop-app")), ("GET", url("Deployment", "shop-cache"))]


def test_nothing_changed_nothing_is_written(monkeypatch: pytest.MonkeyPatch, emitted: list,
                                           set_passwords: list) -> None:
    api = running(monkeypatch, emitted)
    # The reconcile put each record's revision on the templates.
    assert template(api, "shop-app")[app.DB_PASSWORD_ANNOTATION] == secrets.revision(record(api, DB))
    assert template(api, "shop-cache")[cache.PASSWORD_ANNOTATION] == secrets.revision(record(api, CACHE))
    assert check(api, monkeypatch) == {DB: passwords.Outcome.NOTHING, CACHE: passwords.Outcome.NOTHING}
    assert [(m, u) for m, u, _ in api.sent] == GETS  # reads by name, nothing else
    assert emitted == [] and set_passwords == []


def test_a_new_database_password_is_set_on_the_leader_then_the_keys_then_the_pods(
        monkeypatch: pytest.MonkeyPatch, emitted: list, set_passwords: list,
        caplog: pytest.LogCaptureFixture) -> None:
    api = running(monkeypatch, emitted)
    before = template(api, "shop-app")
    ca = base64.b64decode(api.objects[url("Secret", "shop-ca")]["data"]["ca.crt"]).decode()
    keys_before = {k: v for k, v in data(api, DB).items() if k != "password"}
    change(api, DB, NEW_DB_PW)
    # A reconcile before the check leaves the keys (the password the server has) and the pods alone.
    reconcile(api, body(status=READY), monkeypatch)
    assert {k: v for k, v in data(api, DB).items() if k != "password"} == keys_before
    assert template(api, "shop-app") == before
    emitted.clear()
    caplog.set_level(logging.DEBUG)

    assert check(api, monkeypatch)[DB] is passwords.Outcome.ROTATED
    ((target, role, password, ca_text),) = set_passwords
    assert (target.host, target.port, role, password) == ("10.0.0.7", 5432, "app", NEW_DB_PW)
    assert target.user == "postgres" and target.verify is not None
    assert target.verify.server_name == names.db_pod_host("shop", "shop-db-0", NS) and ca_text == ca
    # The keys follow the new password, with the record, in one conditional write; the password stays.
    assert data(api, DB) == _contract(DB, NEW_DB_PW)
    assert secrets.records(record(api, DB), NEW_DB_PW)
    (write,) = [b for m, u, b in api.sent if m == "PATCH" and u == url("Secret", DB)]
    assert write["metadata"]["resourceVersion"] == "2" and "password" not in write["data"]
    # The reconcile ran: the app's template has the new revision, the cache's is untouched.
    assert template(api, "shop-app")[app.DB_PASSWORD_ANNOTATION] == secrets.revision(record(api, DB))
    assert template(api, "shop-app") != before
    (rotated,) = [m for r, m, _ in emitted if r == reasons.PASSWORD_ROTATED]
    assert "Secret shop-db-app" in rotated and "role app on the leader shop-db-0" in rotated
    assert "the app pods roll" in rotated
    told = " ".join([m for _, m, _ in emitted] + [r.getMessage() for r in caplog.records])
    assert NEW_DB_PW not in told and "n3w" not in told
    # Done: the next run reads and writes nothing.
    api.sent.clear()
    assert check(api, monkeypatch)[DB] is passwords.Outcome.NOTHING
    assert [(m, u) for m, u, _ in api.sent] == GETS and len(set_passwords) == 1


def test_a_new_cache_password_rolls_redis_and_the_app(monkeypatch: pytest.MonkeyPatch, emitted: list,
                                                      set_passwords: list) -> None:
    api = running(monkeypatch, emitted)
    redis_before, app_before = template(api, "shop-cache"), template(api, "shop-app")
    change(api, CACHE, NEW_CACHE_PW)
    assert check(api, monkeypatch)[CACHE] is passwords.Outcome.ROTATED
    assert set_passwords == []  # nothing is set live: Redis reads requirepass when it starts
    assert data(api, CACHE) == _contract(CACHE, NEW_CACHE_PW)
    revision = secrets.revision(record(api, CACHE))
    assert template(api, "shop-cache")[cache.PASSWORD_ANNOTATION] == revision != redis_before.get(
        cache.PASSWORD_ANNOTATION)
    assert template(api, "shop-app")[cache.PASSWORD_ANNOTATION] == revision
    assert template(api, "shop-app")[app.DB_PASSWORD_ANNOTATION] == app_before[app.DB_PASSWORD_ANNOTATION]
    (rotated,) = [m for r, m, _ in emitted if r == reasons.PASSWORD_ROTATED]
    assert "the cache pod (it starts empty) and the app pods roll" in rotated and NEW_CACHE_PW not in rotated


@pytest.mark.parametrize(("status", "why"), [
    ({}, passwords.Wait.NO_LEADER),
    ({**READY, "failover": {"phase": "Fencing", "from": "shop-db-0", "to": "shop-db-1"}},
     passwords.Wait.FAILOVER),
    ({"currentLeader": "shop-db-0", "conditions": [{"type": reasons.DATABASE_READY, "status": "False"}]},
     passwords.Wait.NOT_READY),
])
def test_a_busy_database_waits(monkeypatch: pytest.MonkeyPatch, emitted: list, set_passwords: list,
                               caplog: pytest.LogCaptureFixture, status: dict[str, Any],
                               why: passwords.Wait) -> None:
    assert passwords.database_wait(status) is why and passwords.database_wait(READY) is None
    api = running(monkeypatch, emitted, status)
    change(api, DB, NEW_DB_PW)
    memo: dict[str, Any] = {}
    caplog.set_level(logging.INFO)
    for _ in range(3):
        assert check(api, monkeypatch, status, memo)[DB] is passwords.Outcome.WAITING
    assert set_passwords == [] and emitted == []
    assert not [u for m, u, _ in api.sent if m != "GET"]  # nothing written, no reconcile
    said = [r.getMessage() for r in caplog.records if "shop-db-app changed" in r.getMessage()]
    assert len(said) == 1 and why.value in said[0]  # told once, not every run


def test_a_leader_that_cannot_be_reached_is_tried_again_and_told_once(
        monkeypatch: pytest.MonkeyPatch, emitted: list, set_passwords: list) -> None:
    api = running(monkeypatch, emitted)
    change(api, DB, NEW_DB_PW)
    attempts = []

    async def unreachable(target: Target, role: str, password: str, timeout: float = 3.0) -> None:
        attempts.append(role)
        raise OSError("connection refused")

    monkeypatch.setattr(act, "set_role_password", unreachable)
    memo: dict[str, Any] = {}
    for _ in range(2):
        assert check(api, monkeypatch, memo=memo)[DB] is passwords.Outcome.FAILED
    assert attempts == ["app", "app"]
    (failed,) = [(m, w) for r, m, w in emitted if r == reasons.PASSWORD_ROTATION_FAILED]
    assert failed[1] and "OSError: connection refused" in failed[0] and NEW_DB_PW not in failed[0]
    assert not [u for m, u, _ in api.sent if m != "GET"]
    # Once it answers, the same run that sets it writes the keys; a later failure is told again.
    monkeypatch.setattr(act, "set_role_password", lambda *a, **k: asyncio.sleep(0))
    assert check(api, monkeypatch, memo=memo)[DB] is passwords.Outcome.ROTATED
    assert memo[passwords.MEMO_KEY] == {}


def test_a_failover_that_began_meanwhile_sets_it_again_later(monkeypatch: pytest.MonkeyPatch, emitted: list,
                                                             set_passwords: list) -> None:
    api = running(monkeypatch, emitted)
    change(api, DB, NEW_DB_PW)
    # The monitor recorded a failover while the password was being set.
    api.objects[url("Architecture", "shop")]["status"]["failover"] = {"phase": "Fencing"}
    assert check(api, monkeypatch)[DB] is passwords.Outcome.WAITING
    assert len(set_passwords) == 1 and not [u for m, u, _ in api.sent if m != "GET"]
    assert data(api, DB)["password"] == NEW_DB_PW and NEW_DB_PW not in data(api, DB)["uri"]


def test_a_secret_written_meanwhile_is_read_again(monkeypatch: pytest.MonkeyPatch, emitted: list,
                                                  set_passwords: list) -> None:
    api = running(monkeypatch, emitted)
    change(api, CACHE, NEW_CACHE_PW)
    api.written_after_read.add(url("Secret", CACHE))
    assert check(api, monkeypatch)[CACHE] is passwords.Outcome.WAITING
    assert reasons.PASSWORD_ROTATED not in [r for r, _, _ in emitted]
    assert NEW_CACHE_PW not in data(api, CACHE)["url"]


def test_a_forced_reapply_sets_the_same_password_again(monkeypatch: pytest.MonkeyPatch, emitted: list,
                                                       set_passwords: list) -> None:
    """docs/connecting.md: an edited record makes the operator set the Secret's password again."""
    api = running(monkeypatch, emitted)
    password = data(api, DB)["password"]
    api.objects[url("Secret", DB)]["metadata"]["annotations"][secrets.APPLIED_ANNOTATION] = "-"
    assert check(api, monkeypatch)[DB] is passwords.Outcome.ROTATED
    assert [p for _, _, p, _ in set_passwords] == [password]
    assert secrets.records(record(api, DB), password)


def test_unrecorded_secrets_are_adopted_without_touching_the_server(
        monkeypatch: pytest.MonkeyPatch, emitted: list, set_passwords: list) -> None:
    api = running(monkeypatch, emitted)
    passwords_before = {s: data(api, s)["password"] for s in (DB, CACHE)}
    for s in (DB, CACHE):
        del api.objects[url("Secret", s)]["metadata"]["annotations"]
    assert check(api, monkeypatch) == {DB: passwords.Outcome.ADOPTED, CACHE: passwords.Outcome.ADOPTED}
    assert set_passwords == [] and reasons.PASSWORD_ROTATED not in [r for r, _, _ in emitted]
    for s in (DB, CACHE):
        assert secrets.records(record(api, s), passwords_before[s])
        assert data(api, s)["password"] == passwords_before[s]
    assert template(api, "shop-app")[app.DB_PASSWORD_ANNOTATION] == secrets.revision(record(api, DB))


def test_a_template_behind_its_record_is_brought_up_to_date(monkeypatch: pytest.MonkeyPatch, emitted: list,
                                                            set_passwords: list) -> None:
    """The operator stopped between the Secret's write and the reconcile (or the reconcile failed): the
    next run finds the app's template behind the record and reconciles."""
    api = running(monkeypatch, emitted)
    annotations = api.objects[url("Deployment", "shop-app")]["spec"]["template"]["metadata"]["annotations"]
    annotations[app.DB_PASSWORD_ANNOTATION] = "stale"
    assert passwords.lagging("shop", ArchitectureSpec(), secrets.PasswordRevisions.of(
        "shop", {DB: record(api, DB), CACHE: record(api, CACHE)}),
        {"shop-app": api.objects[url("Deployment", "shop-app")]}) == ["shop-app"]
    check(api, monkeypatch)
    assert template(api, "shop-app")[app.DB_PASSWORD_ANNOTATION] == secrets.revision(record(api, DB))
    assert reasons.CHILDREN_APPLIED in [r for r, _, _ in emitted]


def test_a_blocked_reconcile_is_not_run_again_for_a_lagging_template(
        monkeypatch: pytest.MonkeyPatch, emitted: list, set_passwords: list) -> None:
    api = running(monkeypatch, emitted)
    annotations = api.objects[url("Deployment", "shop-app")]["spec"]["template"]["metadata"]["annotations"]
    annotations[app.DB_PASSWORD_ANNOTATION] = "stale"
    check(api, monkeypatch, status={**READY, "foreignObjects": ["Service shop-db-rw"]})
    assert [(m, u) for m, u, _ in api.sent] == GETS


def test_disabled_tiers_are_not_waited_for(monkeypatch: pytest.MonkeyPatch, emitted: list,
                                           set_passwords: list) -> None:
    spec = {"cache": {"enabled": False}, "app": {"enabled": False}, "cdn": {"enabled": False},
            "ingress": {"enabled": False}}
    api = running(monkeypatch, emitted, spec=spec)
    change(api, CACHE, NEW_CACHE_PW)
    assert check(api, monkeypatch, spec=spec)[CACHE] is passwords.Outcome.ROTATED
    (rotated,) = [m for r, m, _ in emitted if r == reasons.PASSWORD_ROTATED]
    assert "no pod of this Architecture reads it now" in rotated
    api.sent.clear()
    assert check(api, monkeypatch, spec=spec)[CACHE] is passwords.Outcome.NOTHING
    assert [(m, u) for m, u, _ in api.sent] == GETS[:2]  # the Secrets only: no Deployment to look at


def test_a_foreign_contract_secret_is_left_to_the_reconcile(monkeypatch: pytest.MonkeyPatch, emitted: list,
                                                            set_passwords: list) -> None:
    api = running(monkeypatch, emitted)
    api.objects[url("Secret", DB)]["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    change(api, DB, NEW_DB_PW)
    assert check(api, monkeypatch) == {}
    assert set_passwords == [] and not [u for m, u, _ in api.sent if m != "GET"]
