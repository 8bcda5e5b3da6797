"""The Redis cache tier: one Deployment (no persistence) and its Service N-cache on 6379, TLS only.

Redis listens with TLS alone (`port 0`): the server certificate is Secret N-cache-tls (build/tls.py, signed by
the Architecture's CA, named for the Service), mounted as files; clients verify it against the CA and
authenticate with the password (requirepass) over the encrypted channel, not with a client certificate.
"""

from __future__ import annotations

from typing import Any

from archop import names
from archop.build import container_security, meta, pod_security, tls
from archop.spec import ArchitectureSpec

PORT = 6379  # the TLS port; Redis's plain TCP port is off
UID = 999  # the redis user (uid and gid 999) of the official image; the offline Debian-built image keeps it
AUTH_DIR = "/etc/archop-redis"  # the N-cache Secret's password, as a read-only file
PASSWORD_FILE = f"{AUTH_DIR}/password"
# Owner root, group fsGroup: readable by the redis user only (the kubelet adds the group read bit anyway).
SECRET_FILE_MODE = 0o440
# The N-cache-tls Secret (tls.crt, tls.key, ca.crt), read-only, files root:<fsGroup> 0440 like the password.
TLS_DIR = "/etc/archop-redis-tls"
CA_FILE = f"{TLS_DIR}/{tls.CA_CERT}"
TLS_FILE_MODE = 0o440
# As the database (ssl_min_version): every client of the cache (the demo app, redis-cli) speaks TLS 1.3.
TLS_PROTOCOLS = "TLSv1.3"
# On the pod templates of Redis and of the app: the revision of N-cache's password record (build/secrets.py,
# `revision`). Redis reads requirepass only at start, so a new password rolls it; never the password itself.
PASSWORD_ANNOTATION = "archop.io/cache-password-revision"


def _read_password(password_file: str) -> str:
    """sh: the password into $pw, quoted as one '...' word of Redis's config syntax (redis-cli splits its
    input the same way; inside '...' only \\' is special).

    The password never reaches argv or the environment (argv is readable by anyone from /proc, the environment
    is inherited by every child): the shell reads the mounted file (cat's argv holds the path only) and keeps
    the value in an unexported variable. An empty or missing file fails rather than run Redis without one.
    """
    return (f'pw=$(cat {password_file}) && [ -n "$pw" ] || '
            f'{{ echo "archop: no password in {password_file}" >&2; exit 1; }}\n'
            + r"""pw=$(printf '%s' "$pw" | sed "s/'/\\\\'/g")""" + "\n")


def start_script(password_file: str = PASSWORD_FILE) -> str:
    """sh -c text that runs redis-server with its container args ("$@") and requirepass from the file.

    redis-server reads the requirepass line from stdin ("-": a here-document, which sh feeds through a pipe,
    no file) and everything else from its arguments. exec: Redis is pid 1 and gets the kubelet's SIGTERM.
    """
    return _read_password(password_file) + 'exec redis-server - "$@" <<EOF\n' + "requirepass '$pw'\nEOF\n"


def ping_script(password_file: str = PASSWORD_FILE, port: int = PORT, ca_file: str = CA_FILE) -> str:
    """sh -c text for the probes: AUTH, then PING, on redis-cli's stdin, over TLS with the server's
    certificate verified against the CA (the only way in: Redis has no plain port). redis-cli checks the
    chain, not the name: the probe dials 127.0.0.1 inside the pod. The replies are compared: redis-cli exits
    0 even when the server answers with an error such as NOAUTH, or prints nothing when TLS fails."""
    cli = f"redis-cli --tls --cacert {ca_file} -p {port}"
    return _read_password(password_file) + (
        f"""[ "$(printf "AUTH '%s'\\nPING\\n" "$pw" | {cli})" = "$(printf 'OK\\nPONG')" ]\n""")


def tls_args(tls_dir: str = TLS_DIR, port: int = PORT) -> list[str]:
    """redis-server's TLS settings: TLS on `port` only (plain TCP off), the server certificate and key from
    the mounted Secret, no client certificates asked for (clients authenticate with the password)."""
    return [
        "--port", "0",
        "--tls-port", str(port),
        "--tls-cert-file", f"{tls_dir}/{tls.TLS_CERT}",
        "--tls-key-file", f"{tls_dir}/{tls.TLS_KEY}",
        "--tls-ca-cert-file", f"{tls_dir}/{tls.CA_CERT}",
        "--tls-auth-clients", "no",
        "--tls-protocols", TLS_PROTOCOLS,
    ]


def build_cache(arch: str, namespace: str, spec: ArchitectureSpec, image: str,
                password_revision: str | None = None) -> list[dict]:
    """Nothing when the cache is disabled (the reconciler prunes what was there). `password_revision`: see
    PASSWORD_ANNOTATION (None: no annotation)."""
    if not spec.cache.enabled:
        return []
    return [deployment(arch, namespace, spec, image, password_revision), service(arch, namespace)]


def password_annotations(password_revision: str | None) -> dict[str, str]:
    """The pod-template annotations of the Redis Deployment that follow N-cache's password."""
    return {PASSWORD_ANNOTATION: password_revision} if password_revision else {}


def deployment(arch: str, namespace: str, spec: ArchitectureSpec, image: str,
               password_revision: str | None = None) -> dict[str, Any]:
    cache = spec.cache
    secret = names.cache(arch)
    probe: dict[str, Any] = {"exec": {"command": ["sh", "-c", ping_script()]}, "periodSeconds": 5,
                             "timeoutSeconds": 2}
    container = {
        "name": "redis",
        "image": image,
        # requirepass from the mounted file, on stdin (start_script); "redis-server" is $0, the args are "$@".
        "command": ["sh", "-c", start_script(), "redis-server"],
        "args": [
            *tls_args(),
            "--maxmemory", cache.max_memory,
            "--maxmemory-policy", cache.eviction_policy,
            # A cache: no RDB snapshots, no AOF. A restart starts cold, which cache-aside tolerates.
            "--save", "",
            "--appendonly", "no",
        ],
        "ports": [{"name": "redis", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {**probe, "failureThreshold": 2},
        "livenessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 3},
        "resources": cache.resources.as_dict(),
        "securityContext": container_security(UID),
        # Read-only root filesystem: /data (Redis's working directory) and /tmp are the writable paths.
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"},
                         {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True},
                         {"name": "tls", "mountPath": TLS_DIR, "readOnly": True}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(arch, namespace, names.cache(arch), names.CACHE),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": names.selector(arch, names.CACHE)},
            # Start the new pod before stopping the old one: the app keeps a cache through a rollout.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": names.labels(arch, names.CACHE),
                             **_annotations(password_annotations(password_revision))},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": pod_security(UID),
                    "containers": [container],
                    "volumes": [
                        {"name": "data", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                        {"name": "auth", "secret": {"secretName": secret, "defaultMode": SECRET_FILE_MODE,
                                                    "items": [{"key": "password", "path": "password"}]}},
                        {"name": "tls", "secret": {
                            "secretName": names.cache_tls_secret(arch), "defaultMode": TLS_FILE_MODE,
                            "items": [{"key": k, "path": k}
                                      for k in (tls.TLS_CERT, tls.TLS_KEY, tls.CA_CERT)]}},
                    ],
                },
            },
        },
    }


def _annotations(annotations: dict[str, str]) -> dict[str, Any]:
    return {"annotations": annotations} if annotations else {}


def service(arch: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(arch, namespace, names.cache(arch), names.CACHE),
        "spec": {
            "type": "ClusterIP",
            "selector": names.selector(arch, names.CACHE),
            "ports": [{"name": "redis", "port": PORT, "targetPort": PORT, "protocol": "TCP"}],
        },
    }
