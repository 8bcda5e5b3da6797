"""Every name, label key and selector the operator writes. Nothing else spells them.

See docs/conventions.md for the table this module implements.
"""

from __future__ import annotations

import re

GROUP = "archop.io"
VERSION = "v1alpha1"
KIND = "Architecture"
PLURAL = "architectures"
API_VERSION = f"{GROUP}/{VERSION}"
FINALIZER = f"{GROUP}/finalizer"
LEASE_NAME = "archop-operator"
MANAGER = "archop"  # field manager for server-side apply, and app.kubernetes.io/managed-by
# Annotation on each Architecture: the namespace of the operator release that manages it (handlers/claim.py).
CLAIM_ANNOTATION = f"{GROUP}/operator"

# Label keys.
L_NAME = "app.kubernetes.io/name"
L_INSTANCE = "app.kubernetes.io/instance"
L_COMPONENT = "app.kubernetes.io/component"
L_PART_OF = "app.kubernetes.io/part-of"
L_MANAGED_BY = "app.kubernetes.io/managed-by"
L_ARCH = f"{GROUP}/architecture"
L_ROLE = f"{GROUP}/role"

# Components and their app names.
DATABASE, CACHE, APP, INGRESS, NETWORK = "database", "cache", "app", "ingress", "network"
APP_NAMES = {DATABASE: "postgres", CACHE: "redis", APP: "demoapp", INGRESS: "demoapp", NETWORK: "archop"}

# Database roles (values of L_ROLE).
LEADER, FOLLOWER, FENCED = "leader", "follower", "fenced"


def labels(arch: str, component: str) -> dict[str, str]:
    """The full label set every child of `arch` in `component` carries."""
    return {
        L_NAME: APP_NAMES[component],
        L_INSTANCE: arch,
        L_COMPONENT: component,
        L_PART_OF: "archop",
        L_MANAGED_BY: MANAGER,
        L_ARCH: arch,
    }


def selector(arch: str, component: str) -> dict[str, str]:
    """The stable subset of labels used in selectors (selectors are immutable, so keep them small)."""
    return {L_ARCH: arch, L_COMPONENT: component}


def role_selector(arch: str, role: str) -> dict[str, str]:
    return {**selector(arch, DATABASE), L_ROLE: role}


# Child names.
def db(arch: str) -> str:
    return f"{arch}-db"


def db_headless(arch: str) -> str:
    return f"{arch}-db-headless"


def db_rw(arch: str) -> str:
    return f"{arch}-db-rw"


def db_ro(arch: str) -> str:
    return f"{arch}-db-ro"


def db_r(arch: str) -> str:
    return f"{arch}-db-r"


def db_leader_budget(arch: str) -> str:
    """PodDisruptionBudget of the leader's pod: no eviction while it leads (a drain waits for the
    switchover)."""
    return f"{arch}-db-leader"


def db_followers_budget(arch: str) -> str:
    """PodDisruptionBudget of the followers: one evicted at a time."""
    return f"{arch}-db-followers"


# The StatefulSet's volume claim template: its controller names the PVCs data-N-db-<ordinal>.
DB_VOLUME = "data"


def is_db_volume(arch: str, pvc: str) -> bool:
    """Whether a PVC name is one of the database volumes of `arch` (data-N-db-<ordinal>)."""
    return re.fullmatch(rf"{DB_VOLUME}-{re.escape(db(arch))}-[0-9]+", pvc) is not None


def db_config(arch: str) -> str:
    return f"{arch}-db-config"


def db_secret(arch: str, user: str) -> str:
    """user is one of 'superuser', 'replication', 'app'."""
    return f"{arch}-db-{user}"


def ca_secret(arch: str) -> str:
    """The operator-managed CA (ca.crt, ca.key): it signs the database's and the cache's server
    certificates."""
    return f"{arch}-ca"


def db_tls_secret(arch: str) -> str:
    """The database servers' certificate and key (tls.crt, tls.key, ca.crt)."""
    return f"{arch}-db-tls"


def db_ca_bundle(arch: str) -> str:
    """ConfigMap with the CA certificate alone (ca.crt): what clients outside the database pods mount. The
    same CA signs the cache's certificate, so the app verifies Redis against it too."""
    return f"{arch}-db-ca"


def db_pod(arch: str, ordinal: int) -> str:
    return f"{arch}-db-{ordinal}"


SLOT_PREFIX = "archop_"


def db_slot(pod: str) -> str:
    """The physical replication slot a follower streams through on the leader: archop_<pod, - as _>. Slot
    names allow only lower-case letters, digits and underscores; start.sh derives the same name."""
    return SLOT_PREFIX + pod.replace("-", "_")


def db_pod_host(arch: str, pod: str, namespace: str) -> str:
    """Stable DNS name of one database pod, through the headless Service."""
    return f"{pod}.{db_headless(arch)}.{namespace}.svc"


def cache(arch: str) -> str:
    return f"{arch}-cache"


def cache_tls_secret(arch: str) -> str:
    """The Redis server's certificate and key (tls.crt, tls.key, ca.crt)."""
    return f"{arch}-cache-tls"


def app(arch: str) -> str:
    return f"{arch}-app"


def cdn(arch: str) -> str:
    return f"{arch}-cdn"


def ingress(arch: str) -> str:
    return f"{arch}-ingress"


def service_host(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc"
