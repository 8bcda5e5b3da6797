"""Every Kubernetes API permission the operator needs, and why: the one table of its RBAC.

- charts/archop/templates/rbac.yaml (rules in _rbac.tpl) grants exactly these, nothing more and without
  wildcards, in both RBAC modes (see docs/security.md);
- archop.apply, the only module that talks to the API for the operator's own calls, asks require() before
  every request and refuses a call this table does not declare;
- operator/tests/test_permissions.py checks both ways: it walks the source (archop.apply's call sites, the
  kopf handlers and calls, the Lease library archop.election uses) and fails on any API call not in this
  table and on any need in this table the code no longer has; and it renders the chart in both modes and
  compares the rules with this table.

A new call without RBAC therefore fails a test before it fails in a cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from archop import names


class Scope(Enum):
    """Where a permission is granted."""

    # Namespaced objects next to the Architectures: cluster-wide (ClusterRole + ClusterRoleBinding) by
    # default; a Role + RoleBinding in each of watchNamespaces in the namespaced mode.
    WATCHED = "watched"
    # Cluster-scoped objects: always a ClusterRole.
    CLUSTER = "cluster"
    # The release namespace only (the operator's own Lease): always a Role there.
    RELEASE = "release"


# The chart's roles (named <fullname>-<role>) and whose calls each one carries.
FRAMEWORK = "framework"  # kopf itself: list/watch of Architectures, its annotations and finalizer, events
APPLICATION = "application"  # archop's own calls on namespaced objects (archop.apply)
NODES = "nodes"  # archop's own calls on cluster-scoped objects (archop.apply)
LEADER_ELECTION = "leader-election"  # the operator's Lease (archop.election, kubernetes.leaderelection)
ROLES = (FRAMEWORK, APPLICATION, NODES, LEADER_ELECTION)
# The roles whose calls go through archop.apply.
OPERATOR_ROLES = (APPLICATION, NODES)

# What a request verb of archop.apply needs from RBAC, and the HTTP method it is sent with. A server-side
# apply is a PATCH, which creates the object when it does not exist yet: the API server then checks
# `create` as well.
REQUEST_VERBS: dict[str, tuple[str, ...]] = {
    "get": ("get",), "list": ("list",), "create": ("create",), "patch": ("patch",), "delete": ("delete",),
    "apply": ("patch", "create"),
}
METHODS = {"get": "GET", "list": "GET", "create": "POST", "patch": "PATCH", "delete": "DELETE",
           "apply": "PATCH"}


@dataclass(frozen=True)
class Kind:
    """A kind the operator addresses, and how its URL is spelled."""

    group: str  # "" for the core group
    kind: str
    plural: str
    namespaced: bool = True


KINDS: dict[str, Kind] = {k.kind: k for k in (
    Kind(names.GROUP, names.KIND, names.PLURAL),
    Kind("", "Pod", "pods"),
    Kind("", "Secret", "secrets"),
    Kind("", "ConfigMap", "configmaps"),
    Kind("", "Service", "services"),
    Kind("", "PersistentVolumeClaim", "persistentvolumeclaims"),
    Kind("", "Node", "nodes", namespaced=False),
    Kind("apps", "StatefulSet", "statefulsets"),
    Kind("apps", "Deployment", "deployments"),
    Kind("policy", "PodDisruptionBudget", "poddisruptionbudgets"),
    Kind("autoscaling", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    Kind("networking.k8s.io", "Ingress", "ingresses"),
    Kind("networking.k8s.io", "NetworkPolicy", "networkpolicies"),
    Kind("coordination.k8s.io", "Lease", "leases"),
)}


@dataclass(frozen=True)
class Need:
    """One RBAC rule: `verbs` on `resource` (plural, or plural/subresource) of `group`."""

    role: str
    scope: Scope
    group: str
    resource: str
    verbs: tuple[str, ...]
    why: str
    resource_names: tuple[str, ...] = ()

    def rule(self) -> dict[str, list[str]]:
        """The rule as the chart renders it."""
        rule = {"apiGroups": [self.group], "resources": [self.resource]}
        if self.resource_names:
            rule["resourceNames"] = list(self.resource_names)
        rule["verbs"] = list(self.verbs)
        return rule


_W, _C, _R = Scope.WATCHED, Scope.CLUSTER, Scope.RELEASE
_ARCH, _STATUS = names.PLURAL, f"{names.PLURAL}/status"
_COORDINATION = "coordination.k8s.io"

NEEDS: tuple[Need, ...] = (
    # kopf (main.py): it lists and watches Architectures (its handlers and the ingress_hosts index share that
    # one watch), and merge/JSON-patches them for its finalizer and its progress and diff-base annotations
    # (AnnotationsProgressStorage: kopf writes no status). Events:
    # kopf.info/warn (archop.events) and kopf's own handler reports are POSTed; kopf never patches one.
    # Scanning is disabled and peering standalone: no CRDs, Namespaces or KopfPeerings are read.
    Need(FRAMEWORK, _W, names.GROUP, _ARCH, ("list", "watch", "patch"),
         "kopf: the watch stream, the finalizer, progress and diff-base annotations"),
    Need(FRAMEWORK, _W, "", "events", ("create",), "kopf: events on Architectures"),

    # archop.apply, for the reconcile and delete handlers, the monitor daemon and the claim.
    Need(APPLICATION, _W, names.GROUP, _ARCH, ("get", "patch"),
         "the claim annotation (read, then a conditional write); dropping the switchover annotation; the "
         "status read again after a password was set on the leader"),
    Need(APPLICATION, _W, names.GROUP, _STATUS, ("patch",), "status: conditions, leader, failover record"),
    Need(APPLICATION, _W, "", "pods", ("list", "patch", "delete"),
         "the database pods: observed by label, role labels moved on failover, deleted to restart one "
         "(rolling update, a stuck or crash-looping follower)"),
    Need(APPLICATION, _W, "", "secrets", ("get", "create", "patch"),
         "the generated credentials: read by name (the ownership check, the monitor, the password check), "
         "created once, their connection keys and the record of the applied password written (N-db-app, "
         "N-cache), server certificates reissued, released (owner references dropped) when the volumes are "
         "kept; never listed or watched"),
    Need(APPLICATION, _W, "", "persistentvolumeclaims", ("list", "patch", "delete"),
         "the database volumes: grown on a bigger storage size, deleted with reclaimPolicy Delete"),
    # Every child is read by name before anything is applied or pruned: is it this Architecture's
    # (archop.ownership)? A Service or ConfigMap of that name that is someone else's is never changed.
    Need(APPLICATION, _W, "", "services", ("get", "create", "patch", "delete"),
         "the ownership check; server-side apply; pruning"),
    Need(APPLICATION, _W, "", "configmaps", ("get", "create", "patch", "delete"),
         "the ownership check; server-side apply; pruning"),
    Need(APPLICATION, _W, "apps", "statefulsets", ("get", "create", "patch"),
         "the ownership check (which also reads the deployed volume size); server-side apply; the update "
         "revision is read"),
    Need(APPLICATION, _W, "apps", "deployments", ("get", "create", "patch", "delete"),
         "the ownership check; server-side apply; readiness is read; the cache and app Deployments are "
         "pruned when their tier is disabled"),
    Need(APPLICATION, _W, "policy", "poddisruptionbudgets", ("get", "create", "patch", "delete"),
         "the ownership check; server-side apply; pruning"),
    Need(APPLICATION, _W, "autoscaling", "horizontalpodautoscalers", ("get", "create", "patch", "delete"),
         "the ownership check; server-side apply; pruning"),
    Need(APPLICATION, _W, "networking.k8s.io", "ingresses", ("get", "create", "patch", "delete"),
         "the ownership check; server-side apply; the published address is read; pruning"),
    Need(APPLICATION, _W, "networking.k8s.io", "networkpolicies", ("get", "create", "patch", "delete"),
         "the ownership check; server-side apply; pruning"),
    Need(APPLICATION, _W, _COORDINATION, "leases", ("get",),
         "the claim: is the release that claimed an Architecture still alive? Its Lease, by name, read only",
         resource_names=(names.LEASE_NAME,)),
    Need(NODES, _C, "", "nodes", ("list",), "whether the node of each database pod is Ready (failover)"),

    # archop.election (kubernetes.leaderelection's LeaseLock): read, create once, renew by replacing.
    # create cannot be limited by name (the object does not exist yet).
    Need(LEADER_ELECTION, _R, _COORDINATION, "leases", ("create",), "the operator Lease, created once"),
    Need(LEADER_ELECTION, _R, _COORDINATION, "leases", ("get", "update"),
         "the operator Lease: read and renewed by its holder", resource_names=(names.LEASE_NAME,)),
)


def role_needs(role: str) -> tuple[Need, ...]:
    return tuple(n for n in NEEDS if n.role == role)


def grants(roles: tuple[str, ...] = ROLES) -> Iterator[tuple[str, str, str, str]]:
    """(role, group, resource, verb) of every need, one per verb."""
    for need in NEEDS:
        if need.role in roles:
            for verb in need.verbs:
                yield need.role, need.group, need.resource, verb


class NotGranted(Exception):
    """A call the table does not declare: the chart's RBAC would refuse it."""


def require(api_version: str, kind: str, verb: str, subresource: str = "") -> Kind:
    """The Kind of a request archop.apply is about to send, if the operator's roles grant `verb` on it."""
    group = api_version.rpartition("/")[0]
    found = KINDS.get(kind)
    if found is None or found.group != group:
        raise NotGranted(f"{kind} ({api_version}) is not in archop/permissions.py: declare it (KINDS, NEEDS) "
                         "and grant it in the chart")
    resource = f"{found.plural}/{subresource}" if subresource else found.plural
    granted = {(g, r, v) for _, g, r, v in grants(OPERATOR_ROLES)}
    missing = [v for v in REQUEST_VERBS[verb] if (group, resource, v) not in granted]
    if missing:
        raise NotGranted(f"{'/'.join(missing)} on {resource} is not declared in archop/permissions.py: "
                         "declare it (NEEDS) and grant it in the chart")
    return found
