"""The reconcile against a fake API server: it never writes over or deletes what is not this Architecture's,
and an ingress host another Architecture holds costs only the Ingress."""

from __future__ import annotations

import base64
import copy
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import kopf
import pytest
import requests
from archop import apply, config, events, hosts, names, permissions, reasons
from archop.build import secrets, tls
from archop.config import Settings
from archop.handlers import reconcile as rec

UID = "uid-shop"
NS = "demo"


class FakeApi:
    """Objects by URL ("services/shop-db-rw"); server-side apply creates (201) or updates (200) them."""

    def __init__(self, objects: dict[str, dict[str, Any]] | None = None,
                 written_after_read: frozenset[str] = frozenset()) -> None:
        self.objects = dict(objects or {})
        self.sent: list[tuple[str, str, dict[str, Any] | None]] = []
        # URLs someone else writes right after each GET (a new resourceVersion): a conditional patch is late.
        self.written_after_read = set(written_after_read)

    def request(self, method: str, **kwargs: Any) -> requests.Response:
        url = kwargs["url"]
        body = json.loads(kwargs["data"]) if kwargs.get("data") else None
        self.sent.append((method, url, body))
        code, answer = 200, {}
        if method == "GET":
            found = self.objects.get(url)
            code, answer = ((200, copy.deepcopy(found)) if found is not None
                            else (404, {"message": "not found"}))
            if found is not None and url in self.written_after_read:
                meta = found.setdefault("metadata", {})
                meta["resourceVersion"] = str(int(meta.get("resourceVersion") or 0) + 1)
        elif method == "PATCH" and "application/apply-patch+yaml" in str(kwargs.get("headers")):
            code = 200 if url in self.objects else 201
            self.objects[url] = body or {}
        elif method == "PATCH" and url in self.objects and "data" in (body or {}):
            # A merge patch of a Secret's data (and annotations), conditional on its resourceVersion.
            current = self.objects[url]
            meta = current.setdefault("metadata", {})
            wanted = ((body or {}).get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != meta.get("resourceVersion"):
                code = 409
            else:
                current.setdefault("data", {}).update((body or {})["data"])
                annotations = ((body or {}).get("metadata") or {}).get("annotations") or {}
                if annotations:
                    meta.setdefault("annotations", {}).update(annotations)
                meta["resourceVersion"] = str(int(meta.get("resourceVersion") or 0) + 1)
        elif method == "POST":
            name = (body or {})["metadata"]["name"]
            key = f"{url}/{name}"
            code = 409 if key in self.objects else 201
            self.objects.setdefault(key, body or {})
        elif method == "DELETE":
            code = 200 if self.objects.pop(url, None) is not None else 404
        response = requests.Response()
        response.status_code, response.reason = code, "x"
        response._content = json.dumps(answer).encode()
        return response

    def writes(self) -> list[tuple[str, str]]:
        """Every write except the status."""
        return [(m, u) for m, u, _ in self.sent if m != "GET" and not u.endswith("/status")]

    def status_patches(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m, u, body in self.sent:
            if m == "PATCH" and u.endswith("/status"):
                out.update((body or {})["status"])
        return out


def url(kind: str, name: str) -> str:
    return f"{permissions.KINDS[kind].plural}/{name}"


def ours(name: str, uid: str = UID) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "uid": f"uid-of-{name}",
                         "ownerReferences": [{"apiVersion": names.API_VERSION, "kind": names.KIND,
                                              "name": "shop", "uid": uid, "controller": True}]}}


def foreign(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS, "uid": f"uid-of-{name}", "labels": {"team": "b"}}}


def body(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None,
         created: str = "2026-01-01T00:00:05Z") -> dict[str, Any]:
    return {"apiVersion": names.API_VERSION, "kind": names.KIND,
            "metadata": {"name": "shop", "namespace": NS, "uid": UID, "generation": 1,
                         "creationTimestamp": created},
            "spec": spec or {}, "status": status or {}}


@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, bool]]:
    return capture_events(monkeypatch)


def capture_events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, bool]]:
    """Events as (reason, message, warning), and the operator's settings a reconcile needs."""
    out: list[tuple[str, str, bool]] = []
    monkeypatch.setattr(events, "emit", lambda _b, reason, message, warning=False:
                        out.append((reason, message, warning)))
    monkeypatch.setattr(config, "_settings", Settings(namespace="archop-system", identity="test"))
    return out


def run(api: FakeApi, b: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
        index: dict[str, list[hosts.Claim]] | None = None) -> None:
    monkeypatch.setattr(apply, "api", lambda: api)
    rec.reconcile(name="shop", namespace=NS, body=b, spec=b["spec"], status_=b["status"], generation=1,
                  logger=logging.getLogger("test"), ingress_hosts=index)


def test_a_fresh_stack_is_created(monkeypatch: pytest.MonkeyPatch, emitted: list) -> None:
    api = FakeApi()
    run(api, body(), monkeypatch)
    applied = [u for m, u in api.writes() if m == "PATCH"]
    assert url("Service", "shop-db-rw") in applied and url("Ingress", "shop-ingress") in applied
    assert all("uid" not in b["metadata"] for m, _, b in api.sent if m == "PATCH" and b and "kind" in b)
    # 4 passwords, the CA, the database's and the cache's server certificates.
    assert sorted(u for m, u in api.writes() if m == "POST") == ["secrets"] * 7
    assert not [w for w in api.writes() if w[0] == "DELETE"]  # nothing to prune: nothing there
    status = api.status_patches()
    assert status["foreignObjects"] == []
    assert status["ingressHost"] == {"host": "archop.local", "state": hosts.GRANTED, "heldBy": ""}
    owned = next(c for c in status["conditions"] if c["type"] == reasons.CHILDREN_OWNED)
    assert (owned["status"], owned["reason"]) == ("True", reasons.ALL_CHILDREN_OWNED)
    assert reasons.FOREIGN_OBJECT not in [r for r, _, _ in emitted]


def test_a_foreign_child_stops_everything(monkeypatch: pytest.MonkeyPatch, emitted: list) -> None:
    """A user's own Service with a child's name: not modified, and nothing else is applied, created or
    pruned either (the other children would point at it)."""
    user_service = foreign("shop-db-rw")
    api = FakeApi({url("Service", "shop-db-rw"): user_service,
                   url("HorizontalPodAutoscaler", "shop-app"): ours("shop-app")})
    with pytest.raises(rec.Blocked):
        run(api, body(), monkeypatch)
    assert api.writes() == []
    assert api.objects[url("Service", "shop-db-rw")] == user_service
    status = api.status_patches()
    assert status["foreignObjects"] == ["Service shop-db-rw"]
    assert "observedGeneration" not in status  # nothing of this generation was applied
    owned = next(c for c in status["conditions"] if c["type"] == reasons.CHILDREN_OWNED)
    assert (owned["status"], owned["reason"]) == ("False", reasons.FOREIGN_OBJECT)
    assert "Service shop-db-rw" in owned["message"]
    ready = next(c for c in status["conditions"] if c["type"] == reasons.READY)
    assert ready["status"] == "False" and reasons.CHILDREN_OWNED in ready["message"]
    (event,) = [e for e in emitted if e[0] == reasons.FOREIGN_OBJECT]
    assert event[2] and event[1].startswith("Service shop-db-rw exists and is not this Architecture's")


def test_a_foreign_secret_stops_everything_too(monkeypatch: pytest.MonkeyPatch, emitted: list) -> None:
    api = FakeApi({url("Secret", "shop-db-app"): foreign("shop-db-app")})
    with pytest.raises(rec.Blocked, match="Secret shop-db-app"):
        run(api, body(), monkeypatch)
    assert api.writes() == []


def test_a_known_foreign_child_is_not_announced_again(monkeypatch: pytest.MonkeyPatch, emitted: list) -> None:
    api = FakeApi({url("Service", "shop-db-rw"): foreign("shop-db-rw")})
    status = {"foreignObjects": ["Service shop-db-rw"],
              "ingressHost": {"host": "archop.local", "state": hosts.GRANTED, "heldBy": ""}}
    with pytest.raises(rec.Blocked):
        run(api, body(status=status), monkeypatch)
    assert [e for e in emitted if e[0] == reasons.FOREIGN_OBJECT] == []


def test_existing_children_are_applied_by_uid_and_only_ours_are_pruned(monkeypatch: pytest.MonkeyPatch,
                                                                        emitted: list) -> None:
    spec = {"cdn": {"enabled": False}}  # ConfigMap shop-cdn and the HPA are not wanted
    api = FakeApi({url("Service", "shop-db-rw"): ours("shop-db-rw"),
                   url("Secret", "shop-db-app"): ours("shop-db-app"),
                   url("HorizontalPodAutoscaler", "shop-app"): ours("shop-app"),
                   url("ConfigMap", "shop-cdn"): foreign("shop-cdn")})
    run(api, body(spec), monkeypatch)
    rw = next(b for m, u, b in api.sent if m == "PATCH" and u == url("Service", "shop-db-rw"))
    assert rw["metadata"]["uid"] == "uid-of-shop-db-rw"
    assert url("Secret", "shop-db-app") in api.objects and ("POST", "secrets") in api.writes()
    # The existing Secret is not created again (3 passwords, the CA and the two server certificates are).
    assert sum(1 for m, u in api.writes() if m == "POST") == 6
    deletes = [(u, b) for m, u, b in api.sent if m == "DELETE"]
    assert deletes == [(url("HorizontalPodAutoscaler", "shop-app"),
                        {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background",
                         "preconditions": {"uid": "uid-of-shop-app"}})]
    assert url("ConfigMap", "shop-cdn") in api.objects  # someone else's: left alone, and in nobody's way
    assert api.status_patches()["foreignObjects"] == []


def test_a_child_left_by_an_earlier_architecture_of_the_same_name_is_not_inherited(
        monkeypatch: pytest.MonkeyPatch, emitted: list) -> None:
    api = FakeApi({url("Deployment", "shop-app"): ours("shop-app", uid="uid-of-an-earlier-shop")})
    with pytest.raises(rec.Blocked):
        run(api, body(), monkeypatch)
    assert api.writes() == []
    (event,) = [m for r, m, _ in emitted if r == reasons.FOREIGN_OBJECT]
    assert "earlier Architecture shop" in event


def test_a_taken_host_costs_only_the_ingress(monkeypatch: pytest.MonkeyPatch, emitted: list) -> None:
    holder = hosts.Claim("team-b", "web", "uid-web", "2026-01-01T00:00:09Z", hosts.GRANTED)
    b = body({"ingress": {"host": "Shop.Example.com"}}, created="2026-01-01T00:00:00Z")
    me = hosts.index_entry(b)["shop.example.com"]
    api = FakeApi({url("Ingress", "shop-ingress"): ours("shop-ingress")})
    with pytest.raises(rec.Blocked, match="team-b/web"):
        run(api, b, monkeypatch, index={"shop.example.com": [holder, me]})
    applied = [u for m, u in api.writes() if m == "PATCH"]
    assert url("Service", "shop-app") in applied and url("Ingress", "shop-ingress") not in applied
    assert ("DELETE", url("Ingress", "shop-ingress")) in api.writes()  # the one it had goes
    status = api.status_patches()
    assert status["ingressHost"] == {"host": "shop.example.com", "state": hosts.TAKEN, "heldBy": "team-b/web"}
    assert status["observedGeneration"] == 1
    ingress = next(c for c in status["conditions"] if c["type"] == reasons.INGRESS_READY)
    assert (ingress["status"], ingress["reason"]) == ("False", reasons.INGRESS_HOST_TAKEN)
    (event,) = [e for e in emitted if e[0] == reasons.INGRESS_HOST_TAKEN]
    assert "team-b/web" in event[1] and event[2]


def test_a_held_host_stays_with_its_holder(monkeypatch: pytest.MonkeyPatch, emitted: list) -> None:
    """An older Architecture that asked for the host later (and lost) does not take it away."""
    other = hosts.Claim("team-b", "web", "uid-web", "2026-01-01T00:00:00Z", hosts.TAKEN)
    b = body({"ingress": {"host": "shop.example.com"}}, status={
        "ingressHost": {"host": "shop.example.com", "state": hosts.GRANTED, "heldBy": ""}})
    api = FakeApi()
    run(api, b, monkeypatch, index={"shop.example.com": [other]})
    assert url("Ingress", "shop-ingress") in [u for m, u in api.writes() if m == "PATCH"]
    assert [e for e in emitted if e[0] == reasons.INGRESS_HOST_TAKEN] == []


def test_while_pending_the_ingress_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch, emitted: list) -> None:
    """Two stacks that shared a host before the check existed: neither loses its Ingress until the order
    has decided between them."""
    rival = hosts.Claim("team-b", "web", "uid-web", "2026-01-01T00:00:00Z", None)
    api = FakeApi({url("Ingress", "shop-ingress"): ours("shop-ingress")})
    with pytest.raises(rec.Blocked):
        run(api, body(), monkeypatch, index={"archop.local": [rival]})
    assert not [w for w in api.writes() if w[1] == url("Ingress", "shop-ingress")]
    assert api.status_patches()["ingressHost"] == {"host": "archop.local", "state": hosts.PENDING,
                                                   "heldBy": "team-b/web"}


def test_kept_volumes_release_only_this_architectures_secrets(monkeypatch: pytest.MonkeyPatch,
                                                              emitted: list) -> None:
    api = FakeApi({url("Secret", "shop-db-superuser"): ours("shop-db-superuser"),
                   url("Secret", "shop-db-app"): foreign("shop-db-app")})
    monkeypatch.setattr(apply, "api", lambda: api)
    b = body({"database": {"storage": {"reclaimPolicy": "Retain"}}})
    rec.delete(name="shop", namespace=NS, body=b, spec=b["spec"], logger=logging.getLogger("test"))
    patches = [(u, p) for m, u, p in api.sent if m == "PATCH"]
    assert patches == [(url("Secret", "shop-db-superuser"),
                        {"metadata": {"uid": "uid-of-shop-db-superuser", "ownerReferences": None}})]
    (deleting,) = [m for r, m, _ in emitted if r == reasons.DELETING]
    assert deleting.endswith("with Secrets shop-db-superuser")


def _secret_bodies(api: FakeApi) -> dict[str, dict[str, Any]]:
    return {b["metadata"]["name"]: b for m, u, b in api.sent if m == "POST" and u == "secrets" and b}


def test_tls_secrets_are_created_once_owned_and_the_pods_carry_the_certificate(
        monkeypatch: pytest.MonkeyPatch, emitted: list) -> None:
    api = FakeApi()
    run(api, body(), monkeypatch)
    created = _secret_bodies(api)
    for secret in ("shop-ca", "shop-db-tls", "shop-cache-tls"):
        refs = created[secret]["metadata"]["ownerReferences"]
        assert [(r["kind"], r["name"], r["uid"]) for r in refs] == [(names.KIND, "shop", UID)]
    stamps = {}
    for kind, workload, secret in (("StatefulSet", "shop-db", "shop-db-tls"),
                                   ("Deployment", "shop-cache", "shop-cache-tls")):
        stamp = api.objects[url(kind, workload)]["spec"]["template"]["metadata"]["annotations"][
            tls.CERT_ANNOTATION]
        assert stamp == tls.fingerprint(base64.b64decode(created[secret]["data"]["tls.crt"]).decode())
        stamps[kind, workload] = stamp
    bundle = api.objects[url("ConfigMap", "shop-db-ca")]
    assert bundle["data"]["ca.crt"] == base64.b64decode(created["shop-ca"]["data"]["ca.crt"]).decode()
    assert bundle["metadata"]["ownerReferences"][0]["uid"] == UID
    ca_stamp = api.objects[url("Deployment", "shop-app")]["spec"]["template"]["metadata"]["annotations"][
        tls.CA_ANNOTATION]
    assert ca_stamp == tls.fingerprint(bundle["data"]["ca.crt"])
    assert not [m for _, m, _ in emitted if "PRIVATE KEY" in m or "BEGIN" in m]
    # A second reconcile finds them (this Architecture's) and creates or reissues nothing.
    api.sent.clear()
    run(api, body(), monkeypatch)
    assert [u for m, u in api.writes() if m == "POST"] == []
    for (kind, workload), stamp in stamps.items():
        assert api.objects[url(kind, workload)]["spec"]["template"]["metadata"]["annotations"][
            tls.CERT_ANNOTATION] == stamp
    assert api.objects[url("Deployment", "shop-app")]["spec"]["template"]["metadata"]["annotations"][
        tls.CA_ANNOTATION] == ca_stamp
    assert reasons.SERVER_CERTIFICATE_RENEWED not in [r for r, _, _ in emitted]


def existing_tls(expiring: str | None = None) -> dict[str, dict[str, Any]]:
    """The CA and both server Secrets as the API returns them (this Architecture's); the server certificate
    in Secret `expiring` was issued 350 days ago (15 days left), the other one today."""
    old = tls.Issuer(now=lambda: datetime.now(UTC) - timedelta(days=350))
    ca = old.new_ca("ca")
    out = {url("Secret", "shop-ca"): {**tls.ca_secret("shop", NS, ca),
                                      "metadata": ours("shop-ca")["metadata"]}}
    for server in tls.servers("shop", NS):
        issuer = old if server.secret == expiring else tls.Issuer()
        secret = tls.server_secret("shop", NS, server, issuer.issue_server(ca, server.dns_names), ca)
        secret["metadata"] = {**ours(server.secret)["metadata"], "resourceVersion": "42"}
        out[url("Secret", server.secret)] = secret
    return out


def _ca_of(objects: dict[str, dict[str, Any]]) -> tls.KeyPair:
    data = objects[url("Secret", "shop-ca")]["data"]
    return tls.KeyPair(base64.b64decode(data["ca.crt"]).decode(), base64.b64decode(data["ca.key"]).decode())


@pytest.mark.parametrize(("secret", "kind", "workload", "other"), [
    ("shop-db-tls", "StatefulSet", "shop-db", "shop-cache-tls"),
    ("shop-cache-tls", "Deployment", "shop-cache", "shop-db-tls"),
])
def test_an_expiring_server_certificate_is_reissued_in_place(
        monkeypatch: pytest.MonkeyPatch, emitted: list, secret: str, kind: str, workload: str,
        other: str) -> None:
    objects = existing_tls(expiring=secret)
    ca = _ca_of(objects)
    api = FakeApi(objects)
    run(api, body(), monkeypatch)
    patches = [(u, b) for m, u, b in api.sent if m == "PATCH" and u.startswith("secrets/") and b]
    assert [u for u, _ in patches] == [url("Secret", secret)]  # the other certificate is current: kept
    patch = patches[0][1]
    assert patch["metadata"] == {"uid": f"uid-of-{secret}", "resourceVersion": "42"}
    fresh = tls.KeyPair(base64.b64decode(patch["data"]["tls.crt"]).decode(),
                        base64.b64decode(patch["data"]["tls.key"]).decode())
    (server,) = [s for s in tls.servers("shop", NS) if s.secret == secret]
    assert tls.renewal(fresh, ca, server.dns_names, datetime.now(UTC)) is tls.Renewal.CURRENT
    (renewed,) = [m for r, m, _ in emitted if r == reasons.SERVER_CERTIFICATE_RENEWED]
    assert f"Secret {secret} (expiring)" in renewed and "BEGIN" not in renewed
    assert ("POST", "secrets") not in [(m, u) for m, u in api.writes() if "shop-ca" in str(u)]
    assert sorted(b["metadata"]["name"] for b in _secret_bodies(api).values()) == [
        "shop-cache", "shop-db-app", "shop-db-replication", "shop-db-superuser"]  # CA kept, not recreated
    stamp = api.objects[url(kind, workload)]["spec"]["template"]["metadata"]["annotations"]
    assert stamp[tls.CERT_ANNOTATION] == tls.fingerprint(fresh.cert_pem)
    kept = base64.b64decode(objects[url("Secret", other)]["data"]["tls.crt"]).decode()
    (other_kind, other_workload) = next(s.workload for s in tls.servers("shop", NS) if s.secret == other)
    assert api.objects[url(other_kind, other_workload)]["spec"]["template"]["metadata"]["annotations"][
        tls.CERT_ANNOTATION] == tls.fingerprint(kept)


def test_a_foreign_ca_secret_stops_everything(monkeypatch: pytest.MonkeyPatch, emitted: list) -> None:
    api = FakeApi({url("Secret", "shop-ca"): foreign("shop-ca")})
    with pytest.raises(rec.Blocked):
        run(api, body(), monkeypatch)
    assert api.writes() == []
    assert api.status_patches()["foreignObjects"] == ["Secret shop-ca"]


def _data_of(api: FakeApi, secret: str) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in api.objects[url("Secret", secret)]["data"].items()}


def _with_data(name: str, data: dict[str, str], rv: str = "7") -> dict[str, Any]:
    obj = ours(name)
    obj["metadata"]["resourceVersion"] = rv
    obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return obj


def test_old_contract_secrets_get_their_connection_keys_and_keep_their_passwords(
        monkeypatch: pytest.MonkeyPatch, emitted: list, caplog: pytest.LogCaptureFixture) -> None:
    """An Architecture from before the contract: N-db-app and N-cache hold only their passwords. The reconcile
    writes the derived keys into them and records their passwords as applied (one conditional merge patch
    each: uid and resourceVersion as read), creates nothing new, and no password reaches an event or the
    log."""
    db_pw, cache_pw = "0ld-db-pw/with:odd@chars", "0ld-cache-pw"
    api = FakeApi({
        url("Secret", "shop-db-app"): _with_data("shop-db-app", {"username": "app", "password": db_pw}),
        url("Secret", "shop-cache"): _with_data("shop-cache", {"password": cache_pw}, rv="8")})
    caplog.set_level(logging.DEBUG)
    run(api, body(), monkeypatch)
    patches = {u: b for m, u, b in api.sent if m == "PATCH" and u in (url("Secret", "shop-db-app"),
                                                                       url("Secret", "shop-cache"))}
    for secret, rv, pw in (("shop-db-app", "7", db_pw), ("shop-cache", "8", cache_pw)):
        meta = patches[url("Secret", secret)]["metadata"]
        assert (meta["uid"], meta["resourceVersion"]) == (f"uid-of-{secret}", rv)
        assert secrets.records(meta["annotations"][secrets.APPLIED_ANNOTATION], pw)
        assert pw not in json.dumps(meta)
    db = _data_of(api, "shop-db-app")
    assert db == {"username": "app", "password": db_pw, **secrets.database_keys("shop", NS, "app", db_pw)}
    cache = _data_of(api, "shop-cache")
    assert cache == {"password": cache_pw, **secrets.cache_keys("shop", NS, cache_pw)}
    for patch in patches.values():
        assert not {"username", "password"} & set(patch["data"])  # never rewritten
    assert not [b for m, u, b in api.sent if m == "POST" and b and b["metadata"]["name"] in ("shop-db-app",
                                                                                              "shop-cache")]
    (updated,) = [m for r, m, _ in emitted if r == reasons.SECRETS_UPDATED]
    assert ("Secret shop-db-app (dbname, host, jdbc-uri, pgpass, port, ro-host, ro-uri, uri, user, the "
            "record of its applied password)") in updated
    assert "Secret shop-cache (host, port, url, the record of its applied password)" in updated
    told = " ".join([m for _, m, _ in emitted] + [r.getMessage() for r in caplog.records]
                    + [json.dumps(api.status_patches())])
    for value in (db_pw, cache_pw, quote(db_pw, safe="")):
        assert value not in told
    # Once written, a second reconcile finds them complete and writes nothing.
    api.sent.clear()
    emitted.clear()
    run(api, body(), monkeypatch)
    assert not [u for m, u, b in api.sent if m == "PATCH" and u.startswith("secrets/")]
    assert reasons.SECRETS_UPDATED not in [r for r, _, _ in emitted]


def test_a_secret_written_since_it_was_read_is_read_again(monkeypatch: pytest.MonkeyPatch,
                                                          emitted: list) -> None:
    secret = url("Secret", "shop-db-app")
    api = FakeApi({secret: _with_data("shop-db-app", {"username": "app", "password": "pw"})},
                  written_after_read=frozenset({secret}))
    with pytest.raises(kopf.TemporaryError, match="Secret shop-db-app changed after it was read"):
        run(api, body(), monkeypatch)
    assert set(api.objects[secret]["data"]) == {"username", "password"}  # the late patch changed nothing


def test_no_app_tier_prunes_the_app_the_cdn_and_the_ingress(monkeypatch: pytest.MonkeyPatch,
                                                            emitted: list) -> None:
    children = [("Deployment", "shop-app"), ("Service", "shop-app"), ("NetworkPolicy", "shop-app"),
                ("PodDisruptionBudget", "shop-app"), ("ConfigMap", "shop-cdn"), ("Ingress", "shop-ingress")]
    api = FakeApi({url(kind, name): ours(name) for kind, name in children})
    run(api, body({"app": {"enabled": False}}), monkeypatch)
    deletes = {u: b["preconditions"]["uid"] for m, u, b in api.sent if m == "DELETE" and b}
    assert deletes == {url(kind, name): f"uid-of-{name}" for kind, name in children}
    applied = [u for m, u, b in api.sent if m == "PATCH" and b and "kind" in b]
    assert not [u for u in applied if u in deletes]
    assert url("StatefulSet", "shop-db") in applied and url("Deployment", "shop-cache") in applied
    status = api.status_patches()
    assert status["endpoints"]["app"] == "" and status["appReady"] == "0/0"
    assert status["ingressHost"] is None  # no Ingress, so no claim on a host


def statefulset(image: str) -> dict[str, Any]:
    """The database StatefulSet as deployed: this Architecture's, running `image`."""
    sts = ours("shop-db")
    sts["spec"] = {"template": {"spec": {"containers": [{"name": "postgres", "image": image},
                                                         {"name": "fence", "image": image}]}}}
    return sts


def applied_images(api: FakeApi) -> set[str]:
    (sts,) = [b for m, u, b in api.sent if m == "PATCH" and u == url("StatefulSet", "shop-db")]
    return {c["image"] for c in sts["spec"]["template"]["spec"]["containers"]}


def test_another_major_is_not_rolled_out_over_running_data(monkeypatch: pytest.MonkeyPatch,
                                                           emitted: list) -> None:
    """spec.database.image set where none was (no CEL rule can compare that with the operator's default):
    the StatefulSet keeps its image, the rest is applied, and the status and an event say why."""
    running = Settings().postgres_image
    api = FakeApi({url("StatefulSet", "shop-db"): statefulset(running)})
    b = body({"database": {"image": "postgres:16.4-bookworm", "followers": 3}}, status={"postgresMajor": 15})
    run(api, b, monkeypatch)
    assert applied_images(api) == {running}
    (sts,) = [b for m, u, b in api.sent if m == "PATCH" and u == url("StatefulSet", "shop-db")]
    assert sts["spec"]["replicas"] == 4  # the rest of the spec is applied
    record = api.status_patches()["majorUpgradeRefused"]
    assert record == {"image": "postgres:16.4-bookworm", "source": "spec", "imageMajor": 16, "dataMajor": 15,
                      "runningImage": running}
    (event,) = [e for e in emitted if e[0] == reasons.MAJOR_UPGRADE_REFUSED]
    assert event[2] and "spec.database.image" in event[1] and "new Architecture" in event[1]
    # Known already (an operator restart resumes it): no second event.
    emitted.clear()
    run(FakeApi({url("StatefulSet", "shop-db"): statefulset(running)}),
        body(b["spec"], status={"postgresMajor": 15, "majorUpgradeRefused": record}), monkeypatch)
    assert [e for e in emitted if e[0] == reasons.MAJOR_UPGRADE_REFUSED] == []


def test_a_new_default_major_is_not_rolled_out_and_the_old_one_clears_the_refusal(
        monkeypatch: pytest.MonkeyPatch, emitted: list) -> None:
    """The operator's ARCHOP_POSTGRES_IMAGE moved to another major (Helm value, operator upgrade): an
    Architecture that leaves spec.database.image unset keeps its image; setting the image back resolves it."""
    monkeypatch.setattr(rec.config, "settings", lambda: Settings(postgres_image="postgres:16.4-bookworm"))
    api = FakeApi({url("StatefulSet", "shop-db"): statefulset("postgres:15.18-bookworm")})
    run(api, body(status={}), monkeypatch)  # before the first probe: the running tag stands for the data
    assert applied_images(api) == {"postgres:15.18-bookworm"}
    record = api.status_patches()["majorUpgradeRefused"]
    assert (record["source"], record["dataMajor"]) == ("default", 15)
    (event,) = [m for r, m, _ in emitted if r == reasons.MAJOR_UPGRADE_REFUSED]
    assert "ARCHOP_POSTGRES_IMAGE" in event and "spec.database.image" in event
    api = FakeApi({url("StatefulSet", "shop-db"): statefulset("postgres:15.18-bookworm")})
    run(api, body({"database": {"image": "postgres:15.20-bookworm"}},
                  status={"postgresMajor": 15, "majorUpgradeRefused": record}), monkeypatch)
    assert applied_images(api) == {"postgres:15.20-bookworm"}  # a minor update rolls out
    assert api.status_patches()["majorUpgradeRefused"] is None
