"""The app tier: Deployment N-app (the app + the CDN sidecar), Service, PodDisruptionBudget, autoscaler.

The app is the demo app unless spec.app.image names another; either way its container gets the connection
contract (docs/connecting.md): DATABASE_URL, DATABASE_RO_URL and REDIS_URL by secretKeyRef from the Secrets
N-db-app and N-cache (build/secrets.py), and the CA those URLs trust, mounted where they say. Nothing is built
when spec.app.enabled is false (the reconciler prunes what was there).
"""

from __future__ import annotations

from typing import Any

from archop import names
from archop.build import (
    APP_SERVICE_PORT,
    cache,
    cdn,
    container_security,
    meta,
    pod_security,
    secret_env,
    secrets,
    tls,
)
from archop.spec import ArchitectureSpec

# The pod's user: the demo app image's user archop, uid and gid 10001 (Dockerfile, stage runtime). Another
# image runs as this uid too (docs/connecting.md, "Your own app").
APP_UID = 10001
NGINX_UID = 101  # the nginx user (uid and gid 101) of the official image; the offline Debian image keeps it
# The CA certificate (ConfigMap N-db-ca): the app verifies the database servers (verify-full) and the Redis
# server (TLS, hostname checked) against it; the same CA signs both certificates (build/tls.py).
DB_CA_DIR = tls.CLIENT_CA_DIR
CDN_HASH_ANNOTATION = "archop.io/cdn-config-hash"
# The revision of N-db-app's password record (build/secrets.py, `revision`; never the password): the app reads
# DATABASE_URL at start, so a new password rolls it. N-cache's is cache.PASSWORD_ANNOTATION, while the cache
# runs (REDIS_URL).
DB_PASSWORD_ANNOTATION = "archop.io/db-app-password-revision"

# The connection contract in the app container's environment (docs/connecting.md). The URLs carry passwords,
# so they come by secretKeyRef only; REDIS_URL only while the cache runs.
DATABASE_URL, DATABASE_RO_URL, REDIS_URL = "DATABASE_URL", "DATABASE_RO_URL", "REDIS_URL"
CA_FILE_ENV = "ARCHOP_CA_FILE"  # the CA file's path: what a Redis client needs besides REDIS_URL
CONTRACT_ENV = (DATABASE_URL, DATABASE_RO_URL, REDIS_URL, CA_FILE_ENV)
# The demo app's knobs the operator derives from the spec (app/README.md); other apps may ignore them.
DEMO_ENV = ("DEMOAPP_PORT", "DEMOAPP_METRICS_PORT", "DEMOAPP_CACHE_TTL_SECONDS")
# Names spec.app.env may not use (the CRD refuses them: two entries of one name break the apply).
RESERVED_ENV = CONTRACT_ENV + DEMO_ENV


def build_app(
    arch: str,
    namespace: str,
    spec: ArchitectureSpec,
    app_image: str,
    cdn_image: str,
    cdn_conf_hash: str,
    passwords: secrets.PasswordRevisions | None = None,
) -> list[dict]:
    """Nothing when the app tier is disabled; else the Deployment and the Service; the PDB only when more
    than one pod runs; the HPA only when enabled. `passwords`: see password_annotations."""
    if not spec.app.enabled:
        return []
    out = [
        deployment(arch, namespace, spec, app_image, cdn_image, cdn_conf_hash, passwords),
        service(arch, namespace, spec),
    ]
    if min_replicas(spec) > 1:
        out.append(disruption_budget(arch, namespace))
    if spec.app.autoscaling.enabled:
        out.append(autoscaler(arch, namespace, spec))
    return out


def min_replicas(spec: ArchitectureSpec) -> int:
    auto = spec.app.autoscaling
    return auto.min_replicas if auto.enabled else spec.app.replicas


def cache_volume_limit(cache_size: str) -> str:
    """nginx max_size (100m, 1g, 512k, bytes) plus half again, as a Kubernetes quantity in Mi."""
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    size = cache_size.strip().lower()
    factor = units.get(size[-1], 1)
    number = int(size[:-1] if size[-1] in units else size)
    mebibytes = max(1, -(-number * factor * 3 // 2 // 1024**2))  # ceiling division
    return f"{mebibytes}Mi"


METRICS_PORTS = (9102, 9103, 9104)  # the first that neither app.port nor cdn.port takes


def metrics_port(spec: ArchitectureSpec) -> int:
    """Where the app serves /metrics: its own port, which the app Service never exposes, so /metrics is not
    reachable through the Ingress or the CDN (the API port answers 404 for it)."""
    return next(p for p in METRICS_PORTS if p not in (spec.app.port, spec.cdn.port))


def target_port(spec: ArchitectureSpec) -> int:
    """The Service sends traffic through the caching sidecar when there is one."""
    return spec.cdn.port if spec.cdn.enabled else spec.app.port


def contract_env(arch: str, spec: ArchitectureSpec) -> list[dict[str, Any]]:
    """The connection contract (docs/connecting.md): the URLs by secretKeyRef, never as values (they hold the
    passwords), and where the CA they trust is mounted."""
    out = [secret_env(DATABASE_URL, names.db_secret(arch, "app"), secrets.URI),
           secret_env(DATABASE_RO_URL, names.db_secret(arch, "app"), secrets.RO_URI)]
    if spec.cache.enabled:
        out.append(secret_env(REDIS_URL, names.cache(arch), secrets.URL))
    out.append({"name": CA_FILE_ENV, "value": tls.CLIENT_CA_FILE})
    return out


def password_annotations(spec: ArchitectureSpec, passwords: secrets.PasswordRevisions | None
                         ) -> dict[str, str]:
    """The pod-template annotations of the app that follow the passwords in its environment: N-db-app's
    always, N-cache's while the cache runs (only then is REDIS_URL there)."""
    out = {}
    if passwords is not None and passwords.database:
        out[DB_PASSWORD_ANNOTATION] = passwords.database
    if passwords is not None and spec.cache.enabled:
        out.update(cache.password_annotations(passwords.cache))
    return out


def app_env(arch: str, spec: ArchitectureSpec) -> list[dict[str, Any]]:
    """The app container's environment: the contract, the demo app's knobs (DEMOAPP_*), then spec.app.env
    (whose names the CRD keeps apart from these)."""
    return [
        *contract_env(arch, spec),
        {"name": "DEMOAPP_PORT", "value": str(spec.app.port)},
        {"name": "DEMOAPP_METRICS_PORT", "value": str(metrics_port(spec))},
        {"name": "DEMOAPP_CACHE_TTL_SECONDS", "value": str(spec.cache.ttl_seconds)},
        *(e.manifest() for e in spec.app.env),
    ]


def _app_container(arch: str, spec: ArchitectureSpec, image: str) -> dict[str, Any]:
    port = spec.app.port
    container: dict[str, Any] = {"name": "app", "image": image}
    if spec.app.command:
        container["command"] = list(spec.app.command)
    if spec.app.args:
        container["args"] = list(spec.app.args)
    container["env"] = app_env(arch, spec)
    if spec.app.env_from:
        # The operator's variables and spec.app.env are `env`, which wins over envFrom's of the same name.
        container["envFrom"] = [e.manifest() for e in spec.app.env_from]
    return {
        **container,
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": metrics_port(spec), "protocol": "TCP"}],
        # readinessPath checks the app's own dependencies (the demo app's /readyz: the leader answers);
        # livenessPath only that the process serves (/healthz). /readyz fails while the database leader is
        # away; 4 x 3 s rides out a failover (measured well under 12 s) instead of emptying the Service, so
        # the CDN and the retries carry the requests meanwhile.
        "readinessProbe": {"httpGet": {"path": spec.app.readiness_path, "port": port}, "periodSeconds": 3,
                           "timeoutSeconds": 2, "failureThreshold": 4},
        "livenessProbe": {"httpGet": {"path": spec.app.liveness_path, "port": port},
                          "initialDelaySeconds": 5, "periodSeconds": 10, "timeoutSeconds": 2,
                          "failureThreshold": 3},
        "resources": spec.app.resources.as_dict(),
        "securityContext": container_security(APP_UID),
        "volumeMounts": [{"name": "app-tmp", "mountPath": "/tmp"},
                         {"name": "db-ca", "mountPath": DB_CA_DIR, "readOnly": True}],
    }


def _cdn_container(spec: ArchitectureSpec, image: str) -> dict[str, Any]:
    port = spec.cdn.port
    return {
        "name": "cdn",
        "image": image,
        # Explicit config path: the image's default config listens on 80 and writes to the root filesystem.
        # -e stderr: the built-in error log path is not writable on a read-only root filesystem.
        "command": ["nginx", "-e", "stderr", "-c", f"{cdn.CONF_DIR}/{cdn.CONF_KEY}", "-g", "daemon off;"],
        "ports": [{"name": "cdn", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": cdn.HEALTH_PATH, "port": port}, "periodSeconds": 3,
                           "timeoutSeconds": 2, "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": cdn.HEALTH_PATH, "port": port}, "initialDelaySeconds": 5,
                          "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": container_security(NGINX_UID),
        "volumeMounts": [
            {"name": "cdn-config", "mountPath": cdn.CONF_DIR, "readOnly": True},
            {"name": "cdn-cache", "mountPath": "/var/cache/nginx"},
            {"name": "cdn-tmp", "mountPath": "/tmp"},
        ],
    }


def deployment(
    arch: str, namespace: str, spec: ArchitectureSpec, app_image: str, cdn_image: str, cdn_conf_hash: str,
    passwords: secrets.PasswordRevisions | None = None,
) -> dict[str, Any]:
    sel = names.selector(arch, names.APP)
    containers = [_app_container(arch, spec, app_image)]
    volumes: list[dict[str, Any]] = [{"name": "app-tmp", "emptyDir": {}},
                                     {"name": "db-ca", "configMap": {"name": names.db_ca_bundle(arch)}}]
    annotations: dict[str, str] = password_annotations(spec, passwords)
    if spec.cdn.enabled:
        containers.append(_cdn_container(spec, cdn_image))
        volumes += [
            {"name": "cdn-config", "configMap": {"name": names.cdn(arch)}},
            # Head-room above nginx's max_size: the cache manager trims only periodically.
            {"name": "cdn-cache", "emptyDir": {"sizeLimit": cache_volume_limit(spec.cdn.cache_size)}},
            {"name": "cdn-tmp", "emptyDir": {}},
        ]
        annotations[CDN_HASH_ANNOTATION] = cdn_conf_hash
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # Pod Security Standard "restricted". The pod's ids are the app's; the CDN sidecar overrides them with
        # nginx's (container_security). Its writable paths are emptyDirs, writable by any uid.
        "securityContext": pod_security(APP_UID),
        "topologySpreadConstraints": [{
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(sel)},
        }],
        "containers": containers,
        "volumes": volumes,
    }
    template_meta: dict[str, Any] = {"labels": names.labels(arch, names.APP)}
    if annotations:
        template_meta["annotations"] = annotations
    dep_spec: dict[str, Any] = {
        "selector": {"matchLabels": dict(sel)},
        # Never below the desired count during a rollout: a new pod must be ready before an old one goes.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {"metadata": template_meta, "spec": pod_spec},
    }
    if not spec.app.autoscaling.enabled:
        # With an autoscaler the replica count is its field; applying one here would fight it.
        dep_spec = {"replicas": spec.app.replicas, **dep_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(arch, namespace, names.app(arch), names.APP),
        "spec": dep_spec,
    }


def service(arch: str, namespace: str, spec: ArchitectureSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(arch, namespace, names.app(arch), names.APP),
        "spec": {
            "type": "ClusterIP",
            "selector": names.selector(arch, names.APP),
            "ports": [{"name": "http", "port": APP_SERVICE_PORT, "targetPort": target_port(spec),
                       "protocol": "TCP"}],
        },
    }


def disruption_budget(arch: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(arch, namespace, names.app(arch), names.APP),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": names.selector(arch, names.APP)}},
    }


def autoscaler(arch: str, namespace: str, spec: ArchitectureSpec) -> dict[str, Any]:
    auto = spec.app.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(arch, namespace, names.app(arch), names.APP),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": names.app(arch)},
            "minReplicas": auto.min_replicas,
            "maxReplicas": auto.max_replicas,
            "metrics": [{
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": auto.target_cpu_percent},
                },
            }],
        },
    }
