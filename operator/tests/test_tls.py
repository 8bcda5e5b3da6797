"""build/tls.py: the CA, the database's and the cache's server certificates, and when they are reissued."""

from __future__ import annotations

import base64
import fnmatch
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from archop import names
from archop.build import tls
from archop.spec import MAX_FOLLOWERS
from crdschema import CRD_PATH
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

NOW = datetime(2026, 3, 1, tzinfo=UTC)
ISSUER = tls.Issuer(now=lambda: NOW)


@pytest.fixture(scope="module")
def ca() -> tls.KeyPair:
    return ISSUER.new_ca("test CA")


@pytest.fixture(scope="module")
def server(ca: tls.KeyPair) -> tls.KeyPair:
    return ISSUER.issue_server(ca, tls.server_names("shop", "demo"))


def test_the_names_cover_every_service_form_and_every_pod() -> None:
    got = tls.server_names("shop", "demo")
    for svc in ("shop-db-rw", "shop-db-ro", "shop-db-r"):
        assert {svc, f"{svc}.demo", f"{svc}.demo.svc", f"{svc}.demo.svc.cluster.local"} <= set(got)
    pods = [p for p in got if p.startswith("*.")]
    assert pods == ["*.shop-db-headless.demo.svc", "*.shop-db-headless.demo.svc.cluster.local"]
    for i in range(1 + MAX_FOLLOWERS):  # the wildcard stands for exactly one label: the pod's name
        host = names.db_pod_host("shop", names.db_pod("shop", i), "demo")
        assert fnmatch.fnmatch(host, pods[0]) and "." not in host[: -len(pods[0]) + 1]
    assert len(got) == len(set(got))


def test_the_ca_signs_certificates_and_nothing_else(ca: tls.KeyPair) -> None:
    cert = ca.cert
    assert isinstance(ca.key.curve, ec.SECP256R1)
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert cert.not_valid_after_utc - NOW >= timedelta(days=3649)
    assert cert.not_valid_before_utc <= NOW
    cert.verify_directly_issued_by(cert)  # self-signed


def test_the_server_certificate(ca: tls.KeyPair, server: tls.KeyPair) -> None:
    cert = server.cert
    cert.verify_directly_issued_by(ca.cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == list(tls.server_names("shop", "demo"))
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign and not usage.key_encipherment
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH]
    assert timedelta(days=364) < cert.not_valid_after_utc - NOW <= tls.SERVER_VALIDITY
    assert cert.public_key().public_numbers() == server.key.public_key().public_numbers()


def test_the_cache_names_are_the_cache_services() -> None:
    got = tls.cache_server_names("shop", "demo")
    assert got == ("shop-cache", "shop-cache.demo", "shop-cache.demo.svc",
                   "shop-cache.demo.svc.cluster.local")
    assert names.service_host(names.cache("shop"), "demo") in got  # what the app dials (DEMOAPP_REDIS_HOST)
    db, cache = tls.servers("shop", "demo")
    assert (db.secret, db.component, db.workload, db.dns_names) == (
        "shop-db-tls", names.DATABASE, ("StatefulSet", "shop-db"), tls.server_names("shop", "demo"))
    assert (cache.secret, cache.component, cache.workload, cache.dns_names) == (
        "shop-cache-tls", names.CACHE, ("Deployment", "shop-cache"), got)


def test_keys_stay_out_of_reprs(ca: tls.KeyPair) -> None:
    assert "PRIVATE KEY" not in repr(ca)
    p = tls.plan("shop", "demo", {}, ISSUER)
    assert "PRIVATE" not in repr(p) and base64.b64encode(b"-----BEGIN PRIVATE").decode()[:12] not in repr(p)


def test_renewal(ca: tls.KeyPair, server: tls.KeyPair) -> None:
    dns = tls.server_names("shop", "demo")
    assert tls.renewal(server, ca, dns, NOW) is tls.Renewal.CURRENT
    expires = server.cert.not_valid_after_utc
    assert tls.renewal(server, ca, dns, expires - timedelta(days=31)) is tls.Renewal.CURRENT
    assert tls.renewal(server, ca, dns, expires - timedelta(days=29)) is tls.Renewal.EXPIRING
    assert tls.renewal(server, ca, dns, expires + timedelta(days=1)) is tls.Renewal.EXPIRING
    assert tls.renewal(server, ca, tls.server_names("shop", "other"), NOW) is tls.Renewal.NAMES
    assert tls.renewal(server, ISSUER.new_ca("another CA"), dns, NOW) is tls.Renewal.ISSUER
    other_key = ISSUER.issue_server(ca, dns).key_pem
    assert tls.renewal(tls.KeyPair(server.cert_pem, other_key), ca, dns, NOW) is tls.Renewal.UNREADABLE
    assert tls.renewal(tls.KeyPair("garbage", server.key_pem), ca, dns, NOW) is tls.Renewal.UNREADABLE
    assert tls.renewal(server, None, dns, NOW) is tls.Renewal.ISSUER  # no CA yet: a new one signs a new one


def _existing(manifest: dict) -> dict:
    """A Secret as the API server returns it: data only, metadata filled in."""
    return {**manifest, "metadata": {**manifest["metadata"], "uid": "u1", "resourceVersion": "7"}}


def _found(*secrets: dict) -> dict:
    """What the reconcile's read_children of tls.stubs gives: each TLS child by ref, None when absent."""
    out: dict = {(m["apiVersion"], m["kind"], m["metadata"]["name"]): None for m in tls.stubs("shop", "demo")}
    out.update({("v1", "Secret", m["metadata"]["name"]): m for m in secrets})
    return out


DB, CACHE = tls.servers("shop", "demo")


def test_plan_creates_every_secret_once(ca: tls.KeyPair) -> None:
    first = tls.plan("shop", "demo", _found(), ISSUER)
    assert [(m["kind"], m["metadata"]["name"], m["type"]) for m in first.create] == [
        ("Secret", "shop-ca", "Opaque"), ("Secret", "shop-db-tls", "kubernetes.io/tls"),
        ("Secret", "shop-cache-tls", "kubernetes.io/tls")]
    assert first.replace == ()
    assert first.renewals == {"shop-db-tls": tls.Renewal.MISSING, "shop-cache-tls": tls.Renewal.MISSING}
    for m, component in zip(first.create, (names.DATABASE, names.DATABASE, names.CACHE), strict=True):
        assert m["metadata"]["labels"] == names.labels("shop", component)
        assert "stringData" not in m
    ca_secret, db_secret, cache_secret = (_existing(m) for m in first.create)
    assert set(ca_secret["data"]) == {"ca.crt", "ca.key"}
    for server, secret in ((DB, db_secret), (CACHE, cache_secret)):
        assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
        pair = tls.KeyPair(base64.b64decode(secret["data"]["tls.crt"]).decode(),
                           base64.b64decode(secret["data"]["tls.key"]).decode())
        pair.cert.verify_directly_issued_by(
            x509.load_pem_x509_certificate(base64.b64decode(ca_secret["data"]["ca.crt"])))
        sans = pair.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == list(server.dns_names)
        assert first.revision(server.component) == tls.fingerprint(pair.cert_pem)
    assert first.revision(names.DATABASE) != first.revision(names.CACHE)  # two keys, two certificates
    assert first.ca_revision == tls.fingerprint(base64.b64decode(ca_secret["data"]["ca.crt"]).decode())
    assert first.bundle["kind"] == "ConfigMap" and first.bundle["metadata"]["name"] == "shop-db-ca"
    assert set(first.bundle["data"]) == {"ca.crt"}  # the certificate only, never a key
    again = tls.plan("shop", "demo", _found(ca_secret, db_secret, cache_secret), ISSUER)
    assert again.create == () and again.replace == ()
    assert set(again.renewals.values()) == {tls.Renewal.CURRENT}
    assert [again.revision(c) for c in (names.DATABASE, names.CACHE)] == [
        first.revision(c) for c in (names.DATABASE, names.CACHE)]
    assert again.bundle == first.bundle and again.ca_revision == first.ca_revision


@pytest.mark.parametrize("server", [DB, CACHE], ids=["db", "cache"])
def test_plan_reissues_an_expiring_certificate_with_the_same_ca(server: tls.Server) -> None:
    old = tls.Issuer(now=lambda: NOW - timedelta(days=340))
    ca = old.new_ca("ca")
    secrets = {s.secret: _existing(tls.server_secret(
        "shop", "demo", s, (old if s == server else ISSUER).issue_server(ca, s.dns_names), ca))
        for s in (DB, CACHE)}
    ca_secret = _existing(tls.ca_secret("shop", "demo", ca))
    p = tls.plan("shop", "demo", _found(ca_secret, *secrets.values()), ISSUER)
    assert p.create == ()
    assert p.renewals == {s.secret: tls.Renewal.EXPIRING if s == server else tls.Renewal.CURRENT
                          for s in (DB, CACHE)}
    (replaced,) = p.replace
    assert replaced.server == server and replaced.secret["metadata"]["name"] == server.secret
    fresh = x509.load_pem_x509_certificate(base64.b64decode(replaced.secret["data"]["tls.crt"]))
    fresh.verify_directly_issued_by(ca.cert)
    assert fresh.not_valid_after_utc > NOW + timedelta(days=360)
    assert p.revision(server.component) == tls.fingerprint(
        base64.b64decode(replaced.secret["data"]["tls.crt"]).decode())


def test_plan_issues_server_certificates_for_an_existing_ca(ca: tls.KeyPair) -> None:
    p = tls.plan("shop", "demo", _found(_existing(tls.ca_secret("shop", "demo", ca))), ISSUER)
    assert [m["metadata"]["name"] for m in p.create] == ["shop-db-tls", "shop-cache-tls"]
    for m in p.create:
        assert base64.b64decode(m["data"]["ca.crt"]).decode() == ca.cert_pem


def test_a_new_ca_reissues_both_server_certificates(ca: tls.KeyPair) -> None:
    """The CA Secret was deleted to rotate it: a new CA, and both certificates signed by it."""
    first = tls.plan("shop", "demo", _found(), ISSUER)
    _, db_secret, cache_secret = (_existing(m) for m in first.create)
    p = tls.plan("shop", "demo", _found(db_secret, cache_secret), ISSUER)
    assert [m["metadata"]["name"] for m in p.create] == ["shop-ca"]
    assert p.ca_revision != first.ca_revision and p.bundle != first.bundle  # the app pods restart too
    assert p.renewals == {"shop-db-tls": tls.Renewal.ISSUER, "shop-cache-tls": tls.Renewal.ISSUER}
    new_ca = x509.load_pem_x509_certificate(base64.b64decode(p.create[0]["data"]["ca.crt"]))
    for issued in p.replace:
        x509.load_pem_x509_certificate(base64.b64decode(issued.secret["data"]["tls.crt"])
                                       ).verify_directly_issued_by(new_ca)


def _states(ca: tls.KeyPair) -> dict[str, dict]:
    """TLS children in every state the renewal decision tells apart."""
    ca_secret = _existing(tls.ca_secret("shop", "demo", ca))
    old = tls.Issuer(now=lambda: NOW - timedelta(days=340))

    def secret(server: tls.Server, pair: tls.KeyPair, signer: tls.KeyPair = ca) -> dict:
        return _existing(tls.server_secret("shop", "demo", server, pair, signer))

    current = {s: secret(s, ISSUER.issue_server(ca, s.dns_names)) for s in (DB, CACHE)}
    other_ca = ISSUER.new_ca("another CA")
    garbage = {**current[CACHE], "data": {"tls.crt": base64.b64encode(b"nope").decode()}}
    return {
        "nothing": _found(),
        "ca only": _found(ca_secret),
        "current": _found(ca_secret, *current.values()),
        "db expiring": _found(ca_secret, secret(DB, old.issue_server(ca, DB.dns_names)), current[CACHE]),
        "cache expiring": _found(ca_secret, current[DB],
                                 secret(CACHE, old.issue_server(ca, CACHE.dns_names))),
        "cache names": _found(ca_secret, current[DB], secret(CACHE, ISSUER.issue_server(ca, DB.dns_names))),
        "cache issuer": _found(ca_secret, current[DB],
                               secret(CACHE, ISSUER.issue_server(other_ca, CACHE.dns_names), other_ca)),
        "cache unreadable": _found(ca_secret, current[DB], garbage),
        "no ca": _found(*current.values()),
    }


def test_the_renewal_decision_is_one_and_shared(ca: tls.KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    """tls.due, what the periodic check asks, is exactly what the reconcile's plan acts on, in every state;
    and both reach every existing certificate through tls.renewal, the one rule."""
    expected = {
        "nothing": ("missing", "missing"), "ca only": ("missing", "missing"),
        "current": ("current", "current"),
        "db expiring": ("expiring", "current"), "cache expiring": ("current", "expiring"),
        "cache names": ("current", "names"), "cache issuer": ("current", "issuer"),
        "cache unreadable": ("current", "unreadable"), "no ca": ("issuer", "issuer"),
    }
    for state, found in _states(ca).items():
        due = tls.due("shop", "demo", found, NOW)
        assert tls.plan("shop", "demo", found, ISSUER).renewals == due, state
        assert (due["shop-db-tls"].value, due["shop-cache-tls"].value) == expected[state], state
    asked: list[str] = []
    real = tls.renewal

    def spy(server: tls.KeyPair, ca_: tls.KeyPair | None, dns: tuple[str, ...], now: datetime) -> tls.Renewal:
        asked.append(dns[0])
        return real(server, ca_, dns, now)

    monkeypatch.setattr(tls, "renewal", spy)
    found = _states(ca)["current"]
    tls.due("shop", "demo", found, NOW)
    from_check = list(asked)
    asked.clear()
    tls.plan("shop", "demo", found, ISSUER)
    assert from_check == asked == ["shop-db-rw", "shop-cache"]


def test_an_unusable_ca_is_never_replaced() -> None:
    broken = {"metadata": {"name": "shop-ca"}, "data": {"ca.crt": base64.b64encode(b"nope").decode()}}
    found = {**_found(), ("v1", "Secret", "shop-ca"): broken}
    with pytest.raises(tls.TlsError, match="never replaces a CA"):
        tls.plan("shop", "demo", found, ISSUER)
    with pytest.raises(tls.TlsError, match="never replaces a CA"):
        tls.due("shop", "demo", found, NOW)
    with pytest.raises(tls.TlsError):
        tls.read_ca_cert(broken)


def test_the_stamp_names_each_workload_with_its_certificate() -> None:
    from archop.build import build_all
    from archop.config import Settings
    from archop.spec import ArchitectureSpec

    p = tls.plan("shop", "demo", _found(), ISSUER)
    manifests = build_all("shop", "demo", ArchitectureSpec(), Settings(), "conf")
    tls.stamp(manifests, p)
    stamped = {(m["kind"], m["metadata"]["name"]): m["spec"]["template"]["metadata"].get("annotations", {})
               for m in manifests if "template" in m.get("spec", {})}
    assert stamped[("StatefulSet", "shop-db")][tls.CERT_ANNOTATION] == p.revision(names.DATABASE)
    assert stamped[("Deployment", "shop-cache")][tls.CERT_ANNOTATION] == p.revision(names.CACHE)
    # The app trusts the CA (both servers are verified against it): a new CA restarts it.
    assert stamped[("Deployment", "shop-app")][tls.CA_ANNOTATION] == p.ca_revision
    assert tls.CERT_ANNOTATION not in stamped[("Deployment", "shop-app")]
    assert tls.CA_ANNOTATION not in stamped[("Deployment", "shop-cache")]
    # No cache Deployment (disabled): nothing to stamp, and nothing fails.
    off = build_all("shop", "demo", ArchitectureSpec.parse({"cache": {"enabled": False}}), Settings(), "conf")
    tls.stamp(off, p)
    assert ("Deployment", "shop-cache") not in {(m["kind"], m["metadata"]["name"]) for m in off}


def test_the_passfile_covers_every_pod_the_crd_allows() -> None:
    crd = yaml.safe_load(CRD_PATH.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["database"]["properties"]["followers"]["maximum"] == MAX_FOLLOWERS
