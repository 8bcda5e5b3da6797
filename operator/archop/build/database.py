"""The database tier as manifests: ConfigMap with the scripts, headless + rw/ro/r Services, StatefulSet.

Pure: spec in, dicts out. Secrets are created by the core (N-db-superuser / -replication / -app). The pods get
the user names as secretKeyRef env and the passwords only as files of a read-only projected volume
(SECRETS_DIR), never in the environment or on a command line. Which pod leads is never visible here: the
operator labels pods (archop.io/role) at run time and the rw/ro Services select on that label.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from archop import names
from archop.build import container_security, pod_security, secret_env, tls
from archop.failover import lease
from archop.spec import MAX_FOLLOWERS, ArchitectureSpec

PORT = 5432
# The postgres user of the official image (uid and gid 999); the offline image built from Debian packages
# (e2e/cluster/build-images.sh) creates it with the same ids. Both containers run as it: the lease agent
# signals the postmaster (same uid, no capability needed) and both write the socket directory.
UID = 999
DATA_MOUNT = "/var/lib/postgresql/data"
PGDATA = f"{DATA_MOUNT}/pgdata"  # a subdirectory: volume roots may hold lost+found
CONF_DIR = "/etc/archop"
RUN_DIR = "/var/run/postgresql"
# The passwords, one file per Secret (only the postgres container mounts them): start.sh reads them into its
# own passfile and into initdb/psql, never into the environment or argv.
SECRETS_DIR = "/etc/archop-secrets"
PASSWORD_FILES = {"superuser": "superuser-password", "replication": "replication-password",
                  "app": "app-password"}
# Owner root, group fsGroup (999): readable by the postgres user and nobody else. The kubelet adds the group
# read bit to Secret files anyway when fsGroup is set, so 0440 is what the pod sees with 0400 too.
SECRET_FILE_MODE = 0o440
# The N-db-tls Secret (tls.crt, tls.key, ca.crt), postgres container only. Postgres accepts a key file owned
# by root without group write or any access for others: the kubelet makes Secret files root's, group fsGroup.
TLS_DIR = "/etc/archop-tls"
TLS_FILE_MODE = 0o440
# The pod template carries the server certificate's fingerprint (tls.stamp): a reissued one changes the
# template, and the operator's ordered restart (followers, switchover, old leader) loads it.
CERT_ANNOTATION = tls.CERT_ANNOTATION
SCRIPT_FILES = ("start.sh", "fence.sh", "stop.sql", "postgresql.conf", "pg_hba.conf")
BOOTSTRAP_LEADER_KEY = "bootstrap-leader"
# Put Debian's server binaries on PATH for probes too (the official image has them there already).
_PATH_PREFIX = 'for d in /usr/lib/postgresql/*/bin; do [ -d "$d" ] && PATH="$d:$PATH"; done; '


def script(name: str) -> str:
    """One shipped file of archop/scripts (also used by the integration tests, so they run the same code)."""
    return resources.files("archop").joinpath("scripts", name).read_text()


def bootstrap_leader(name: str) -> str:
    """The first leader: the operator records it in status.currentLeader at bootstrap."""
    return names.db_pod(name, 0)


def replicas(spec: ArchitectureSpec, current_leader: str | None = None) -> int:
    """1 + followers; never fewer than the leader's ordinal + 1 (the monitor switches over first)."""
    want = spec.database.instances
    if current_leader and current_leader.rsplit("-", 1)[-1].isdigit():
        want = max(want, int(current_leader.rsplit("-", 1)[-1]) + 1)
    return want


def build_database(
    name: str,
    namespace: str,
    spec: ArchitectureSpec,
    image: str,
    settings: Any = None,
    current_leader: str | None = None,
) -> list[dict]:
    """All database manifests for Architecture `name`. `current_leader` (status.currentLeader) keeps a
    scale-down from removing the leader's pod before the monitor has switched over."""
    del settings  # nothing operator-wide is needed here yet; kept for the uniform builder signature
    n = replicas(spec, current_leader)
    return [
        config_map(name, namespace, n),
        _service(name, namespace, names.db_headless(name), names.selector(name, names.DATABASE), True),
        _service(name, namespace, names.db_rw(name), names.role_selector(name, names.LEADER)),
        _service(name, namespace, names.db_ro(name), names.role_selector(name, names.FOLLOWER)),
        _service(name, namespace, names.db_r(name), names.selector(name, names.DATABASE)),
        statefulset(name, namespace, spec, image, n),
        *disruption_budgets(name, namespace, n),
    ]


def disruption_budgets(name: str, namespace: str, count: int) -> list[dict]:
    """Budgets that make a drain wait for a switchover rather than evict the leader (CloudNativePG does the
    same). The leader's pod: never evicted while it carries the leader label; the monitor hands over when the
    leader's node is cordoned, the label moves and the drain's next retry evicts the pod as a follower.
    The followers: one at a time; one that is not ready serves nothing and never holds a drain up. As
    minAvailable of the followers (count - 2), not maxUnavailable 1: for maxUnavailable the disruption
    controller counts the StatefulSet's whole scale as expected, the leader included, and then allows no
    follower eviction at all while every follower is healthy.
    A single instance has nobody to hand over to, so no budget: a drain takes the database down."""
    if count < 2:
        return []

    def budget(obj_name: str, role: str, rule: dict) -> dict:
        return {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _meta(name, namespace, obj_name),
            "spec": {**rule, "selector": {"matchLabels": names.role_selector(name, role)}},
        }

    return [
        budget(names.db_leader_budget(name), names.LEADER, {"minAvailable": 1}),
        budget(names.db_followers_budget(name), names.FOLLOWER,
               {"minAvailable": count - 2, "unhealthyPodEvictionPolicy": "AlwaysAllow"}),
    ]


def _meta(name: str, namespace: str, obj_name: str) -> dict:
    return {"name": obj_name, "namespace": namespace, "labels": names.labels(name, names.DATABASE)}


def peers(name: str, namespace: str, count: int) -> str:
    return " ".join(
        f"{names.db_pod_host(name, names.db_pod(name, i), namespace)}:{PORT}" for i in range(count)
    )


def passfile_hosts(name: str, namespace: str) -> str:
    """The servers a database pod may send its passwords to (start.sh's passfile): the read-write Service
    and every pod the spec can ever have, so a follower repointed to a pod added after it started still
    finds its line."""
    pods = (names.db_pod_host(name, names.db_pod(name, i), namespace) for i in range(1 + MAX_FOLLOWERS))
    return " ".join([names.service_host(names.db_rw(name), namespace), *pods])


def config_map(name: str, namespace: str, count: int) -> dict:
    data = {f: script(f) for f in SCRIPT_FILES}
    data[BOOTSTRAP_LEADER_KEY] = bootstrap_leader(name)
    data["peers"] = peers(name, namespace, count)
    data["passfile-hosts"] = passfile_hosts(name, namespace)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(name, namespace, names.db_config(name)),
        "data": data,
    }


def _service(name: str, namespace: str, svc: str, selector: dict[str, str], headless: bool = False) -> dict:
    spec: dict[str, Any] = {
        "selector": dict(selector),
        "ports": [{"name": "postgres", "port": PORT, "targetPort": PORT, "protocol": "TCP"}],
    }
    if headless:
        # Stable per-pod DNS even before readiness: followers and the start script need the leader's name.
        spec.update(clusterIP="None", publishNotReadyAddresses=True)
    else:
        spec["type"] = "ClusterIP"
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, namespace, svc), "spec": spec}


def _env(name: str, namespace: str) -> list[dict]:
    cfg = names.db_config(name)
    return [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "PGDATA", "value": PGDATA},
        {"name": "PGPORT", "value": str(PORT)},
        {"name": "ARCHOP_RUN_DIR", "value": RUN_DIR},
        {"name": "ARCHOP_CONF_DIR", "value": CONF_DIR},
        {"name": "ARCHOP_PRIMARY_HOST", "value": names.service_host(names.db_rw(name), namespace)},
        {"name": "ARCHOP_PRIMARY_PORT", "value": str(PORT)},
        {"name": "ARCHOP_BOOTSTRAP_LEADER",
         "valueFrom": {"configMapKeyRef": {"name": cfg, "key": BOOTSTRAP_LEADER_KEY}}},
        {"name": "ARCHOP_PEERS", "valueFrom": {"configMapKeyRef": {"name": cfg, "key": "peers"}}},
        {"name": "ARCHOP_PASSFILE_HOSTS",
         "valueFrom": {"configMapKeyRef": {"name": cfg, "key": "passfile-hosts"}}},
        {"name": "ARCHOP_SECRETS_DIR", "value": SECRETS_DIR},
        {"name": "ARCHOP_TLS_DIR", "value": TLS_DIR},
        # User names only: the passwords are files under SECRETS_DIR (see _secrets_volume).
        secret_env("POSTGRES_USER", names.db_secret(name, "superuser"), "username"),
        secret_env("REPLICATION_USER", names.db_secret(name, "replication"), "username"),
        secret_env("APP_USER", names.db_secret(name, "app"), "username"),
    ]


def _secrets_volume(name: str) -> dict:
    """The three passwords as files of one read-only volume, e.g. SECRETS_DIR/replication-password."""
    return {"name": "secrets", "projected": {
        "defaultMode": SECRET_FILE_MODE,
        "sources": [
            {"secret": {"name": names.db_secret(name, which), "items": [{"key": "password", "path": path}]}}
            for which, path in PASSWORD_FILES.items()
        ],
    }}


def _tls_volume(name: str) -> dict:
    return {"name": "tls", "secret": {
        "secretName": names.db_tls_secret(name), "defaultMode": TLS_FILE_MODE,
        "items": [{"key": k, "path": k} for k in (tls.TLS_CERT, tls.TLS_KEY, tls.CA_CERT)],
    }}


def _mounts(postgres: bool) -> list[dict]:
    """The root filesystem is read-only: every path written to is a volume (PGDATA and the passfile and lock
    next to it on the PVC; sockets, the active pg_hba.conf and the gate in RUN_DIR; /tmp for tools)."""
    out: list[dict] = [{"name": "config", "mountPath": CONF_DIR, "readOnly": True},
                       {"name": "run", "mountPath": RUN_DIR},
                       {"name": "tmp", "mountPath": "/tmp"}]
    if postgres:
        out = [{"name": names.DB_VOLUME, "mountPath": DATA_MOUNT}, *out,
               {"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True},
               {"name": "tls", "mountPath": TLS_DIR, "readOnly": True}]
    return out


def statefulset(name: str, namespace: str, spec: ArchitectureSpec, image: str, count: int) -> dict:
    db = spec.database
    sel = names.selector(name, names.DATABASE)
    retention = "Retain" if db.reclaim_policy == "Retain" else "Delete"
    pvc_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": db.storage_size}},
    }
    if db.storage_class:
        pvc_spec["storageClassName"] = db.storage_class
    ready_cmd = _PATH_PREFIX + f"exec pg_isready -q -h {RUN_DIR} -p {PORT}"
    postgres = {
        "name": "postgres",
        "image": image,
        # Explicit commands, never the image entrypoint: works with the official and Debian-built images.
        "command": ["bash", f"{CONF_DIR}/start.sh"],
        "env": _env(name, namespace),
        "ports": [{"name": "postgres", "containerPort": PORT, "protocol": "TCP"}],
        # Role-independent: the archop.io/role label, not readiness, steers rw/ro.
        "readinessProbe": {
            "exec": {"command": ["bash", "-c", ready_cmd]},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "resources": db.resources.as_dict(),
        "securityContext": container_security(UID),
        "volumeMounts": _mounts(postgres=True),
    }
    fence = {
        "name": "fence",
        "image": image,
        "command": ["bash", f"{CONF_DIR}/fence.sh"],
        "env": [
            {"name": "PGPORT", "value": str(PORT)},
            {"name": "ARCHOP_RUN_DIR", "value": RUN_DIR},
            {"name": "ARCHOP_CONF_DIR", "value": CONF_DIR},
            {"name": "PGDATA", "value": PGDATA},  # names the postmaster the agent may kill (no mount)
            # The agent connects over the socket (trust, pg_hba.conf): it needs the user name, no password.
            secret_env("POSTGRES_USER", names.db_secret(name, "superuser"), "username"),
            {"name": "ARCHOP_LEASE_SECONDS", "value": f"{lease.TTL_SECONDS:g}"},
            {"name": "ARCHOP_FAILSAFE_REPLY_SECONDS", "value": f"{lease.FAILSAFE_REPLY_SECONDS:g}"},
            {"name": "ARCHOP_LEASE_CHECK_SECONDS", "value": f"{lease.AGENT_INTERVAL_SECONDS:g}"},
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        # The same uid as postgres: kill_postgres (fence.sh) signals the postmaster without any capability.
        "securityContext": container_security(UID),
        "volumeMounts": _mounts(postgres=False),
    }
    pod_spec: dict[str, Any] = {
        # Lets `kill -9` of the postmaster work from an exec (it is not pid 1) and lets the agent see it.
        "shareProcessNamespace": True,
        "terminationGracePeriodSeconds": 10,
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        # Pod Security Standard "restricted"; fsGroup makes the PVC and the password files the group's.
        "securityContext": pod_security(UID),
        # Hard spread: one node loss must not take the leader and a synchronous follower together while other
        # nodes are free. Skew 1 still lets more instances than nodes schedule; tainted nodes the pods cannot
        # use (a control plane) do not count as empty domains.
        "topologySpreadConstraints": [{
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "nodeTaintsPolicy": "Honor",
            "labelSelector": {"matchLabels": dict(sel)},
        }],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100,
            "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": dict(sel)}},
        }]}},
        "containers": [postgres, fence],
        "volumes": [
            {"name": "config", "configMap": {"name": names.db_config(name), "defaultMode": 0o555}},
            {"name": "run", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
            _secrets_volume(name),
            _tls_volume(name),
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(name, namespace, names.db(name)),
        "spec": {
            "serviceName": names.db_headless(name),
            "replicas": count,
            "podManagementPolicy": "Parallel",
            # The operator orders restarts: followers first, then a switchover, then the old leader.
            "updateStrategy": {"type": "OnDelete"},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": retention, "whenScaled": retention},
            "selector": {"matchLabels": dict(sel)},
            "template": {"metadata": {"labels": names.labels(name, names.DATABASE)}, "spec": pod_spec},
            "volumeClaimTemplates": [{"metadata": {"name": names.DB_VOLUME}, "spec": pvc_spec}],
        },
    }
