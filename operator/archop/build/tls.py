"""TLS for the database and cache tiers: an operator-managed CA and the server certificates it signs.

Four children, all created by the reconcile (handlers/reconcile.py), never on their own:
- Secret N-ca (ca.crt, ca.key): the CA, created once and never rewritten (every client trusts it; a new CA
  would break them all at once). Only the operator reads ca.key.
- Secret N-db-tls (tls.crt, tls.key, ca.crt): the Postgres servers' certificate, with a DNS name for every way
  clients reach a database pod (server_names).
- Secret N-cache-tls (tls.crt, tls.key, ca.crt): the Redis server's certificate, with every name of the cache
  Service (cache_server_names).
- ConfigMap N-db-ca (ca.crt): the CA certificate alone, what the demo app mounts (it verifies both Postgres
  and Redis against it): mounting a Secret would put a private key on the app's nodes.

Each server certificate is created once, and reissued when it is about to expire, names a different set, or
was not signed by the CA: `due` is that one decision, made by the reconcile's `plan` and by the periodic
check (handlers/certificates.py) alike. The pod template of the workload that presents a certificate carries
its fingerprint (`stamp`), so a reissued one restarts the pods.

`plan` is pure (objects in, manifests out); key generation and the clock are parameters, so tests can pin
them. The private keys leave this module only inside Secret manifests: KeyPair keeps them out of repr().
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from archop import names
from archop.build import meta

CA_VALIDITY = timedelta(days=3650)
SERVER_VALIDITY = timedelta(days=365)
RENEW_BEFORE = timedelta(days=30)  # a server certificate is reissued this long before it expires
# Certificates start a little in the past: a node whose clock is behind must not see one "not yet valid".
BACKDATE = timedelta(minutes=5)
# Kubernetes' default cluster domain: the fully qualified Service names end in it.
CLUSTER_DOMAIN = "cluster.local"

CA_CERT, CA_KEY = "ca.crt", "ca.key"
TLS_CERT, TLS_KEY = "tls.crt", "tls.key"
# Where the app pods mount the CA bundle (ConfigMap N-db-ca): the connection strings of the contract name
# this file (sslrootcert=, build/secrets.py), and the app's container gets its path as ARCHOP_CA_FILE
# (build/app.py).
CLIENT_CA_DIR = "/etc/archop-db-ca"
CLIENT_CA_FILE = f"{CLIENT_CA_DIR}/{CA_CERT}"
# The pod template of each workload carries its server certificate's fingerprint: a reissued certificate
# changes the template, and the pods restart to load it (the database's in the operator's order: followers,
# switchover, old leader; the cache's by the Deployment's rolling update).
CERT_ANNOTATION = "archop.io/server-certificate"
# The pod template of the app carries the CA's fingerprint: it verifies both servers against the CA bundle,
# and its Redis client reads the CA file only when it builds a connection's TLS context (redis-py keeps that
# context for the connection's life, reconnects included), so a new CA restarts the app pods.
CA_ANNOTATION = "archop.io/ca-certificate"


class Renewal(Enum):
    """Whether a server certificate must be reissued, and why."""

    CURRENT = "current"  # keep it
    MISSING = "missing"  # no Secret yet: issue the first one
    EXPIRING = "expiring"  # fewer than RENEW_BEFORE left (or expired)
    NAMES = "names"  # its DNS names are not exactly its Server's dns_names
    ISSUER = "issuer"  # not signed by the current CA (or there is no CA yet: a new one signs a new one)
    UNREADABLE = "unreadable"  # missing or unparsable data, or a key that does not match the certificate


class TlsError(ValueError):
    """The CA Secret exists but cannot be used. It is never replaced automatically (see module doc)."""


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    cert_pem: str
    key_pem: str = field(repr=False)

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem.encode())

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_pem.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TlsError("the private key is not an EC key")
        return key


def new_p256_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True)
class Issuer:
    """How certificates are made: the key generator and the clock (tests pin both)."""

    new_key: Callable[[], ec.EllipticCurvePrivateKey] = new_p256_key
    now: Callable[[], datetime] = lambda: datetime.now(UTC)

    def new_ca(self, common_name: str) -> KeyPair:
        key = self.new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        start = self.now() - BACKDATE
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + CA_VALIDITY)
            # path_length 0: this CA signs server certificates only, never another CA.
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=True, crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return _pair(cert, key)

    def issue_server(self, ca: KeyPair, dns_names: tuple[str, ...]) -> KeyPair:
        key = self.new_key()
        ca_cert = ca.cert
        start = self.now() - BACKDATE
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + SERVER_VALIDITY)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            # ECDSA signs the (EC)DHE handshake: digital signature is the only key usage a TLS server needs.
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=False, crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                           critical=False)
            .sign(ca.key, hashes.SHA256())
        )
        return _pair(cert, key)


def _pair(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> KeyPair:
    return KeyPair(
        cert.public_bytes(serialization.Encoding.PEM).decode(),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()).decode())


@dataclass(frozen=True)
class Server:
    """One server certificate the CA signs: the Secret that holds it, the tier whose pods present it, the
    workload (kind, name) whose pod template carries its fingerprint, and the DNS names clients dial."""

    component: str
    secret: str
    workload: tuple[str, str]
    dns_names: tuple[str, ...]


def server_names(arch: str, namespace: str) -> tuple[str, ...]:
    """Every name a client uses for a database server: the rw/ro/r Services in each form a resolver
    completes (short, .ns, .ns.svc, fully qualified) and each pod through the headless Service (one
    wildcard label, whatever names.db_pod_host builds). The first is the certificate's common name."""
    out: list[str] = []
    for svc in (names.db_rw(arch), names.db_ro(arch), names.db_r(arch)):
        host = names.service_host(svc, namespace)
        out += [svc, f"{svc}.{namespace}", host, f"{host}.{CLUSTER_DOMAIN}"]
    pods = names.db_pod_host(arch, "*", namespace)
    out += [pods, f"{pods}.{CLUSTER_DOMAIN}"]
    return tuple(out)


def cache_server_names(arch: str, namespace: str) -> tuple[str, ...]:
    """Every name a client uses for the Redis server: the cache Service in each form a resolver completes
    (short, .ns, .ns.svc, what the app dials, and fully qualified). The first is the common name."""
    svc = names.cache(arch)
    host = names.service_host(svc, namespace)
    return (svc, f"{svc}.{namespace}", host, f"{host}.{CLUSTER_DOMAIN}")


def servers(arch: str, namespace: str) -> tuple[Server, ...]:
    """Every server certificate of an Architecture. The cache's exists even while the cache is disabled
    (like its password Secret), so enabling it needs nothing new; it is renewed then with no pod to roll."""
    return (Server(names.DATABASE, names.db_tls_secret(arch), ("StatefulSet", names.db(arch)),
                   server_names(arch, namespace)),
            Server(names.CACHE, names.cache_tls_secret(arch), ("Deployment", names.cache(arch)),
                   cache_server_names(arch, namespace)))


def renewal(server: KeyPair, ca: KeyPair | None, dns_names: tuple[str, ...], now: datetime) -> Renewal:
    """Does a server certificate need reissuing? `ca` None: there is no CA yet (a new one will sign)."""
    try:
        cert, key = server.cert, server.key
        ca_cert = ca.cert if ca is not None else None
    except (ValueError, TypeError):
        return Renewal.UNREADABLE
    if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
        return Renewal.UNREADABLE
    if ca_cert is None:
        return Renewal.ISSUER
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return Renewal.ISSUER
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return Renewal.NAMES
    if sorted(sans.get_values_for_type(x509.DNSName)) != sorted(dns_names):
        return Renewal.NAMES
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return Renewal.EXPIRING
    return Renewal.CURRENT


def fingerprint(cert_pem: str) -> str:
    """Short SHA-256 of a certificate: the pod template carries it, so a reissued one rolls the pods."""
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()[:16]


# ------------------------------------------------------------------------------------------- manifests


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def ca_secret(arch: str, namespace: str, ca: KeyPair) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": meta(arch, namespace, names.ca_secret(arch), names.DATABASE),
            "data": {CA_CERT: _b64(ca.cert_pem), CA_KEY: _b64(ca.key_pem)}}


def server_secret(arch: str, namespace: str, server: Server, pair: KeyPair, ca: KeyPair) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": meta(arch, namespace, server.secret, server.component),
            "data": {TLS_CERT: _b64(pair.cert_pem), TLS_KEY: _b64(pair.key_pem),
                     CA_CERT: _b64(ca.cert_pem)}}


def ca_bundle(arch: str, namespace: str, ca: KeyPair) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": meta(arch, namespace, names.db_ca_bundle(arch), names.DATABASE),
            "data": {CA_CERT: ca.cert_pem}}


def stubs(arch: str, namespace: str) -> list[dict[str, Any]]:
    """The TLS children by name only: what the reconcile (and the periodic check) reads for the ownership
    check."""
    return [{"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": namespace}}
            for kind, name in (("Secret", names.ca_secret(arch)), ("Secret", names.db_tls_secret(arch)),
                               ("Secret", names.cache_tls_secret(arch)),
                               ("ConfigMap", names.db_ca_bundle(arch)))]


def _read(secret: Mapping[str, Any], cert_key: str, key_key: str) -> KeyPair | None:
    data = secret.get("data") or {}
    try:
        return KeyPair(base64.b64decode(data[cert_key]).decode(), base64.b64decode(data[key_key]).decode())
    except (KeyError, ValueError, TypeError):
        return None


def read_ca_cert(secret: Mapping[str, Any]) -> str:
    """ca.crt of Secret N-ca (what the operator's own probes trust); TlsError when it has none."""
    try:
        pem = base64.b64decode((secret.get("data") or {})[CA_CERT]).decode()
        x509.load_pem_x509_certificate(pem.encode())
    except (KeyError, ValueError, TypeError) as exc:
        name = (secret.get("metadata") or {}).get("name")
        raise TlsError(f"Secret {name} has no readable {CA_CERT}") from exc
    return pem


def _loads(pair: KeyPair) -> bool:
    try:
        pair.cert, pair.key  # noqa: B018 - parsing is the check
    except (ValueError, TypeError):
        return False
    return True


def _secret_ref(name: str) -> tuple[str, str, str]:
    return "v1", "Secret", name


def load_ca(arch: str, found: Mapping[tuple[str, str, str], Mapping[str, Any] | None]) -> KeyPair | None:
    """The CA from Secret N-ca as read (None: there is none yet). TlsError when it exists but is unusable: the
    operator never replaces a CA by itself (see module doc)."""
    secret = found.get(_secret_ref(names.ca_secret(arch)))
    if secret is None:
        return None
    read = _read(secret, CA_CERT, CA_KEY)
    if read is None or not _loads(read):
        raise TlsError(f"Secret {names.ca_secret(arch)} holds no usable {CA_CERT} and {CA_KEY}; the "
                       "operator never replaces a CA by itself (docs/security.md, TLS)")
    return read


def due(arch: str, namespace: str, found: Mapping[tuple[str, str, str], Mapping[str, Any] | None],
        now: datetime) -> dict[str, Renewal]:
    """The renewal decision, by Secret name, for every server certificate: what the reconcile's `plan` acts
    on, and what the periodic check (handlers/certificates.py) asks before it runs the reconcile. `found` is
    the TLS children as read (apply.read_children of stubs()), each already checked to be this
    Architecture's; None or absent: the object does not exist. TlsError: the CA is unusable."""
    ca = load_ca(arch, found)
    out: dict[str, Renewal] = {}
    for server in servers(arch, namespace):
        secret = found.get(_secret_ref(server.secret))
        current = _read(secret, TLS_CERT, TLS_KEY) if secret is not None else None
        if secret is None:
            out[server.secret] = Renewal.MISSING
        elif current is None:
            out[server.secret] = Renewal.UNREADABLE
        else:
            out[server.secret] = renewal(current, ca, server.dns_names, now)
    return out


@dataclass(frozen=True)
class Issued:
    """One server certificate after the plan: why it is (re)issued or kept, its Secret (with the private
    key: never in a repr) and its fingerprint, which the workload's pod template carries."""

    server: Server
    renewal: Renewal
    secret: dict[str, Any] = field(repr=False)
    revision: str


@dataclass(frozen=True)
class TlsPlan:
    """What the reconcile does about TLS: create what is missing, replace the server certificates that need
    it (`replace`; each Issued.renewal says why), apply the CA bundle, and stamp the pods (`stamp`)."""

    create: tuple[dict[str, Any], ...] = field(repr=False)  # Secrets with private keys: never in a repr
    issued: tuple[Issued, ...]
    bundle: dict[str, Any]
    ca_revision: str  # the CA certificate's fingerprint
    trusting: tuple[tuple[str, str], ...]  # the workloads (kind, name) that mount the bundle

    @property
    def replace(self) -> tuple[Issued, ...]:
        """The existing server Secrets whose data is replaced by a reissued certificate."""
        return tuple(i for i in self.issued if i.renewal not in (Renewal.CURRENT, Renewal.MISSING))

    @property
    def renewals(self) -> dict[str, Renewal]:
        return {i.server.secret: i.renewal for i in self.issued}

    def revision(self, component: str) -> str:
        return next(i.revision for i in self.issued if i.server.component == component)


def plan(arch: str, namespace: str, found: Mapping[tuple[str, str, str], Mapping[str, Any] | None],
         issuer: Issuer | None = None) -> TlsPlan:
    """The TLS step of a reconcile from the TLS children as they are (`found`, as for `due`)."""
    issuer = issuer or Issuer()
    why = due(arch, namespace, found, issuer.now())  # the one renewal decision
    create: list[dict[str, Any]] = []
    ca = load_ca(arch, found)
    if ca is None:
        ca = issuer.new_ca(f"archop {namespace}/{arch} CA")
        create.append(ca_secret(arch, namespace, ca))
    issued = []
    for server in servers(arch, namespace):
        reason = why[server.secret]
        current = _read(found.get(_secret_ref(server.secret)) or {}, TLS_CERT, TLS_KEY)
        pair = current if current is not None and reason is Renewal.CURRENT else issuer.issue_server(
            ca, server.dns_names)
        manifest = server_secret(arch, namespace, server, pair, ca)
        if reason is Renewal.MISSING:
            create.append(manifest)
        issued.append(Issued(server, reason, manifest, fingerprint(pair.cert_pem)))
    return TlsPlan(create=tuple(create), issued=tuple(issued), bundle=ca_bundle(arch, namespace, ca),
                   ca_revision=fingerprint(ca.cert_pem), trusting=(("Deployment", names.app(arch)),))


def stamp(manifests: list[dict[str, Any]], tls_plan: TlsPlan) -> None:
    """Put each server certificate's fingerprint on the pod template of the workload that presents it
    (CERT_ANNOTATION), and the CA's on those that trust it (CA_ANNOTATION). A workload the spec does not
    build (a disabled cache) has nothing to stamp."""
    stamps: dict[tuple[str, str], dict[str, str]] = {}
    for i in tls_plan.issued:
        stamps.setdefault(i.server.workload, {})[CERT_ANNOTATION] = i.revision
    for workload in tls_plan.trusting:
        stamps.setdefault(workload, {})[CA_ANNOTATION] = tls_plan.ca_revision
    for m in manifests:
        annotations = stamps.get((m["kind"], m["metadata"]["name"]))
        if annotations:
            template = m["spec"]["template"].setdefault("metadata", {})
            template["annotations"] = {**template.get("annotations", {}), **annotations}
