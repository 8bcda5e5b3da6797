"""The app tier: Deployment N-app (demo app + CDN sidecar), Service, PodDisruptionBudget, autoscaler."""

from __future__ import annotations

from typing import Any

from archop import names
from archop.build import APP_SERVICE_PORT, cdn, container_security, meta, pod_security, secret_env
from archop.build.cache import PORT as REDIS_PORT
from archop.spec import ArchitectureSpec

APP_UID = 10001  # the demo app image's user archop, uid and gid 10001 (Dockerfile, stage runtime)
NGINX_UID = 101  # the nginx user (uid and gid 101) of the official image; the offline Debian image keeps it
DB_PORT = 5432
DB_NAME = "app"
# The CA certificate (ConfigMap N-db-ca): the app verifies the database servers (verify-full) and the Redis
# server (TLS, hostname checked) against it; the same CA signs both certificates (build/tls.py).
DB_CA_DIR = "/etc/archop-db-ca"
CDN_HASH_ANNOTATION = "archop.io/cdn-config-hash"


def build_app(
    arch: str,
    namespace: str,
    spec: ArchitectureSpec,
    app_image: str,
    cdn_image: str,
    cdn_conf_hash: str,
) -> list[dict]:
    """Deployment and Service always; the PDB only when more than one pod runs; the HPA only when enabled."""
    out = [
        deployment(arch, namespace, spec, app_image, cdn_image, cdn_conf_hash),
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


def app_env(arch: str, namespace: str, spec: ArchitectureSpec) -> list[dict[str, Any]]:
    """The demo app's whole configuration (DEMOAPP_*); passwords only by secretKeyRef."""
    return [
        {"name": "DEMOAPP_PORT", "value": str(spec.app.port)},
        {"name": "DEMOAPP_METRICS_PORT", "value": str(metrics_port(spec))},
        {"name": "DEMOAPP_DB_RW_HOST", "value": names.service_host(names.db_rw(arch), namespace)},
        {"name": "DEMOAPP_DB_RO_HOST", "value": names.service_host(names.db_ro(arch), namespace)},
        {"name": "DEMOAPP_DB_PORT", "value": str(DB_PORT)},
        {"name": "DEMOAPP_DB_NAME", "value": DB_NAME},
        {"name": "DEMOAPP_DB_SSLMODE", "value": "verify-full"},
        {"name": "DEMOAPP_DB_SSLROOTCERT", "value": f"{DB_CA_DIR}/ca.crt"},
        secret_env("DEMOAPP_DB_USER", names.db_secret(arch, "app"), "username"),
        secret_env("DEMOAPP_DB_PASSWORD", names.db_secret(arch, "app"), "password"),
        {"name": "DEMOAPP_REDIS_HOST", "value": names.service_host(names.cache(arch), namespace)},
        {"name": "DEMOAPP_REDIS_PORT", "value": str(REDIS_PORT)},
        {"name": "DEMOAPP_REDIS_TLS", "value": "true"},
        {"name": "DEMOAPP_REDIS_CA_FILE", "value": f"{DB_CA_DIR}/ca.crt"},
        secret_env("DEMOAPP_REDIS_PASSWORD", names.cache(arch), "password"),
        {"name": "DEMOAPP_CACHE_ENABLED", "value": "true" if spec.cache.enabled else "false"},
        {"name": "DEMOAPP_CACHE_TTL_SECONDS", "value": str(spec.cache.ttl_seconds)},
    ]


def _app_container(arch: str, namespace: str, spec: ArchitectureSpec, image: str) -> dict[str, Any]:
    port = spec.app.port
    return {
        "name": "app",
        "image": image,
        "env": app_env(arch, namespace, spec),
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": metrics_port(spec), "protocol": "TCP"}],
        # /readyz checks the app's own dependencies; /healthz only that the process serves.
        # /readyz fails while the database leader is away; 4 x 3 s rides out a failover (measured well under
        # 12 s) instead of emptying the Service, so the CDN and the retries carry the requests meanwhile.
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": port}, "periodSeconds": 3,
                           "timeoutSeconds": 2, "failureThreshold": 4},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": port}, "initialDelaySeconds": 5,
                          "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3},
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
    arch: str, namespace: str, spec: ArchitectureSpec, app_image: str, cdn_image: str, cdn_conf_hash: str
) -> dict[str, Any]:
    sel = names.selector(arch, names.APP)
    containers = [_app_container(arch, namespace, spec, app_image)]
    volumes: list[dict[str, Any]] = [{"name": "app-tmp", "emptyDir": {}},
                                     {"name": "db-ca", "configMap": {"name": names.db_ca_bundle(arch)}}]
    annotations: dict[str, str] = {}
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
