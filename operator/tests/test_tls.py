"""build/tls.py: the database CA and server certificate, and when the reconcile reissues the latter."""

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


def test_keys_stay_out_of_reprs(ca: tls.KeyPair) -> None:
    assert "PRIVATE KEY" not in repr(ca)
    p = tls.plan("shop", "demo", None, None, ISSUER)
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


def _existing(manifest: dict) -> dict:
    """A Secret as the API server returns it: data only, metadata filled in."""
    return {**manifest, "metadata": {**manifest["metadata"], "uid": "u1", "resourceVersion": "7"}}


def test_plan_creates_both_secrets_once(ca: tls.KeyPair) -> None:
    first = tls.plan("shop", "demo", None, None, ISSUER)
    assert [(m["kind"], m["metadata"]["name"], m["type"]) for m in first.create] == [
        ("Secret", "shop-ca", "Opaque"), ("Secret", "shop-db-tls", "kubernetes.io/tls")]
    assert first.replace is None and first.renewal is tls.Renewal.MISSING
    for m in first.create:
        assert m["metadata"]["labels"] == names.labels("shop", names.DATABASE)
        assert "stringData" not in m
    ca_secret, server_secret = (_existing(m) for m in first.create)
    assert set(ca_secret["data"]) == {"ca.crt", "ca.key"}
    assert set(server_secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    assert first.bundle["kind"] == "ConfigMap" and first.bundle["metadata"]["name"] == "shop-db-ca"
    assert set(first.bundle["data"]) == {"ca.crt"}  # the certificate only, never a key
    again = tls.plan("shop", "demo", ca_secret, server_secret, ISSUER)
    assert again.create == () and again.replace is None and again.renewal is tls.Renewal.CURRENT
    assert again.revision == first.revision and again.bundle == first.bundle


def test_plan_reissues_an_expiring_certificate_with_the_same_ca() -> None:
    old = tls.Issuer(now=lambda: NOW - timedelta(days=340))
    ca = old.new_ca("ca")
    ca_secret = _existing(tls.ca_secret("shop", "demo", ca))
    server_secret = _existing(tls.server_secret("shop", "demo", old.issue_server(
        ca, tls.server_names("shop", "demo")), ca))
    p = tls.plan("shop", "demo", ca_secret, server_secret, ISSUER)
    assert p.renewal is tls.Renewal.EXPIRING and p.create == ()
    assert p.replace is not None and p.replace["metadata"]["name"] == "shop-db-tls"
    fresh = x509.load_pem_x509_certificate(base64.b64decode(p.replace["data"]["tls.crt"]))
    fresh.verify_directly_issued_by(ca.cert)
    assert fresh.not_valid_after_utc > NOW + timedelta(days=360)
    assert p.revision == tls.fingerprint(base64.b64decode(p.replace["data"]["tls.crt"]).decode())


def test_plan_issues_a_server_certificate_for_an_existing_ca(ca: tls.KeyPair) -> None:
    p = tls.plan("shop", "demo", _existing(tls.ca_secret("shop", "demo", ca)), None, ISSUER)
    assert [m["metadata"]["name"] for m in p.create] == ["shop-db-tls"]
    assert base64.b64decode(p.create[0]["data"]["ca.crt"]).decode() == ca.cert_pem


def test_an_unusable_ca_is_never_replaced() -> None:
    broken = {"metadata": {"name": "shop-ca"}, "data": {"ca.crt": base64.b64encode(b"nope").decode()}}
    with pytest.raises(tls.TlsError, match="never replaces a CA"):
        tls.plan("shop", "demo", broken, None, ISSUER)
    with pytest.raises(tls.TlsError):
        tls.read_ca_cert(broken)


def test_the_passfile_covers_every_pod_the_crd_allows() -> None:
    crd = yaml.safe_load(CRD_PATH.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["database"]["properties"]["followers"]["maximum"] == MAX_FOLLOWERS
