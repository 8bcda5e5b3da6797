"""Whose is an existing object? The ownership test the operator runs before it writes or deletes a child.

Children are addressed by name (names.py), and names are not reserved: a user may have created a Service
`shop-db-rw` or a Secret `shop-db-app` before the Architecture `shop` existed, or another team's object may
carry that name. A forced server-side apply would take such an object over, a delete by name would remove
it, and the operator (which may write Services and Secrets in every watched namespace) would do on behalf of
whoever may create an Architecture what that person may not do themselves: the confused deputy. So an
existing object is the operator's to change only if it belongs to this very Architecture:

- an owner reference with the Architecture's uid: every child is adopted (kopf.adopt) when it is created,
  and an object replaced by someone else gets a new uid; a later Architecture of the same name has another
  uid, so it never inherits what an earlier one left behind while the garbage collector deletes it;
- or, for the objects the operator deliberately leaves without an owner reference (retained_secrets: the
  database Secrets released when an Architecture with reclaimPolicy Retain is deleted, so that a new
  Architecture of the same name finds the passwords of the volumes it re-attaches): no owner reference at
  all and the labels the builders set, `archop.io/architecture=<name>` and
  `app.kubernetes.io/managed-by=archop`. Whoever can set labels on an object may write it anyway, so
  labelling an object as the operator's hands it over knowingly.

Pure: objects in, answers out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from archop import names

# Kinds whose objects may be the operator's without an owner reference: only Secrets, and of those only the
# ones apply.release drops the owner references of when the volumes are kept (retained_secrets). The CA, the
# server certificates and the cache's password are always owned: a look-alike of one of those (a planted CA
# whose key its planter knows) is foreign. PersistentVolumeClaims are the StatefulSet's, selected by label
# and name (apply.delete_volumes), never applied by name.
RETAINED_KINDS = frozenset({"Secret"})
RETAINED_DB_USERS = ("superuser", "replication", "app")  # build/secrets.py DB_USERS, one Secret each


def retained_secrets(arch: str) -> frozenset[str]:
    """The Secrets an Architecture with reclaimPolicy Retain leaves behind, with the volumes they open."""
    return frozenset(names.db_secret(arch, user) for user in RETAINED_DB_USERS)
# A reconcile refused by a foreign object or a taken ingress host looks again this often (a kopf retry).
RETRY_SECONDS = 60


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def owned(obj: Mapping[str, Any], kind: str, arch: str, uid: str) -> bool:
    """True when `obj` (an existing object of `kind`) belongs to the Architecture `arch` with this `uid`."""
    if not uid:
        return False  # without the Architecture's uid nothing can be shown to be ours
    meta = _meta(obj)
    refs = meta.get("ownerReferences") or []
    if any(ref.get("uid") == uid for ref in refs):
        return True
    if kind in RETAINED_KINDS and not refs and meta.get("name") in retained_secrets(arch):
        labels = meta.get("labels") or {}
        return labels.get(names.L_ARCH) == arch and labels.get(names.L_MANAGED_BY) == names.MANAGER
    return False


def why_foreign(obj: Mapping[str, Any], arch: str) -> str:
    """Why an existing object that is not this Architecture's (owned() is False) is not, for a condition, an
    event and the log."""
    refs = _meta(obj).get("ownerReferences") or []
    if any(r.get("kind") == names.KIND and r.get("name") == arch for r in refs):
        return (f"it was left by an earlier {names.KIND} {arch}, deleted since; the garbage collector "
                "removes it")
    controller = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
    if controller is not None:
        return f"it belongs to {controller.get('kind', '?')} {controller.get('name', '?')}"
    return f"it has no owner reference to this {names.KIND}"


def database_pods(pods: list[dict[str, Any]], statefulset: Mapping[str, Any] | None, arch: str,
                  uid: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Split the pods that carry the database labels into this Architecture's own and the others' names.

    The operator connects to its database pods with the superuser's password, so a pod is one of them only
    when its controller is the database StatefulSet and that StatefulSet is this Architecture's: anyone who
    may create pods in the namespace can copy the labels, and would otherwise be sent the password."""
    if statefulset is None or not owned(statefulset, "StatefulSet", arch, uid):
        return [], [_meta(p).get("name", "?") for p in pods]
    sts_uid = _meta(statefulset).get("uid")
    mine: list[dict[str, Any]] = []
    others: list[str] = []
    for pod in pods:
        refs = _meta(pod).get("ownerReferences") or []
        ctl = next((r for r in refs if r.get("controller")), None)
        if (ctl is not None and ctl.get("kind") == "StatefulSet" and ctl.get("uid") == sts_uid
                and ctl.get("name") == names.db(arch)):
            mine.append(pod)
        else:
            others.append(_meta(pod).get("name", "?"))
    return mine, others
