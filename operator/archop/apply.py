"""Effects on the Kubernetes API through pykube: the children read by name (for the ownership check,
archop.ownership), server-side apply of built children, Secrets created once, status and pod-label patches,
pruning. Writes and deletes of an object that was read carry its uid as a precondition. Every API failure
becomes a kopf.TemporaryError with a clear message.

The operator's only way to the API (kopf's own calls and the Lease aside): every request goes through
_request, which first asks archop.permissions whether the chart's RBAC grants it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import kopf
import pykube
import requests

from archop import names, permissions

log = logging.getLogger("archop.apply")

APPLY = {"Content-Type": "application/apply-patch+yaml"}
MERGE = {"Content-Type": "application/merge-patch+json"}
_CLIENT_MAX_AGE = 600.0  # seconds: re-read the service-account token (it rotates) every so often

_lock = threading.Lock()
_cached: tuple[float, pykube.HTTPClient] | None = None


def api() -> pykube.HTTPClient:
    """A client: in-cluster from the service account, else from KUBECONFIG (or ~/.kube/config)."""
    global _cached
    with _lock:
        if _cached is not None and time.monotonic() - _cached[0] < _CLIENT_MAX_AGE:
            return _cached[1]
        try:
            config = pykube.KubeConfig.from_service_account()
        except FileNotFoundError:
            config = pykube.KubeConfig.from_env()
        client = pykube.HTTPClient(config, timeout=10)
        _cached = (time.monotonic(), client)
        return client


def _describe(manifest: dict[str, Any]) -> str:
    meta = manifest.get("metadata", {})
    return f"{manifest.get('kind')} {meta.get('namespace', '')}/{meta.get('name')}"


def _temporary(action: str, what: str, exc: Exception) -> kopf.TemporaryError:
    """Map an API or transport failure to a retry, saying what failed and why (never the body sent)."""
    if isinstance(exc, pykube.exceptions.HTTPError):
        # Conflicts and throttling clear up quickly; a refused object needs someone to look first.
        delay = 5 if exc.code in (409, 429) or exc.code >= 500 else 30
        return kopf.TemporaryError(f"{action} {what} failed: HTTP {exc.code}: {exc}", delay=delay)
    return kopf.TemporaryError(f"{action} {what} failed: cannot reach the API server: {exc}", delay=5)


def _request(client: pykube.HTTPClient, verb: str, api_version: str, kind: str, namespace: str | None,
             name: str | None, what: str, action: str, subresource: str = "", **kwargs: Any) -> Any:
    """One API request: `verb` (a key of permissions.REQUEST_VERBS) on `kind`, object `name` (None: the
    collection) in `namespace` (None: cluster-scoped). Refused here, before anything is sent, unless
    archop.permissions declares it (the chart grants exactly that table)."""
    try:
        resource = permissions.require(api_version, kind, verb, subresource)
    except permissions.NotGranted as exc:
        raise kopf.PermanentError(f"{action} {what}: {exc}") from None
    url = "/".join(part for part in (resource.plural, name, subresource) if part)
    try:
        response = client.request(permissions.METHODS[verb], url=url, version=api_version,
                                  namespace=namespace, **kwargs)
    except requests.RequestException as exc:
        raise _temporary(action, what, exc) from exc
    return response


def _check(response: Any, action: str, what: str, ok_codes: tuple[int, ...] = ()) -> bool:
    """True when the call succeeded, False for an expected failure code (e.g. 404 on delete)."""
    if response.status_code in ok_codes:
        return False
    try:
        response.raise_for_status()
    except requests.HTTPError as exc:
        detail = _api_message(response)
        raise _temporary(action, what, pykube.exceptions.HTTPError(response.status_code, detail)) from exc
    return True


def _api_message(response: Any) -> str:
    try:
        return str(response.json().get("message") or response.reason)
    except ValueError:
        return str(response.reason)


def server_side_apply(client: pykube.HTTPClient, manifest: dict[str, Any], uid: str | None = None) -> bool:
    """Server-side apply as field manager archop, forcing conflicts. True when the apply created the object
    (201 Created), False when it changed an existing one (200).

    With `uid` (the object the ownership check found), the apply carries metadata.uid, which the API server
    checks against the stored object: an object deleted and created again in between has another uid, and
    the apply is refused (422 "field is immutable") instead of changing it."""
    what = _describe(manifest)
    meta = manifest["metadata"]
    body = {**manifest, "metadata": {**meta, "uid": uid}} if uid else manifest
    response = _request(
        client, "apply", manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"],
        what, "applying",
        data=json.dumps(body), headers=APPLY, params={"fieldManager": names.MANAGER, "force": "true"},
    )
    if uid and response.status_code in (409, 422):
        raise kopf.TemporaryError(f"applying {what}: it was replaced after the ownership check ("
                                  f"{_api_message(response)}); checking again", delay=5)
    _check(response, "applying", what)
    return bool(response.status_code == 201)


def _key(manifest: dict[str, Any]) -> tuple[str, str, str]:
    return manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"]


def read_children(client: pykube.HTTPClient, manifests: list[dict[str, Any]]
                  ) -> dict[tuple[str, str, str], dict[str, Any] | None]:
    """Each child as it exists now (None: it does not), by (apiVersion, kind, name): what the ownership check
    (archop.ownership) looks at before anything is applied, created or deleted. One GET per child."""
    found: dict[tuple[str, str, str], dict[str, Any] | None] = {}
    for manifest in manifests:
        meta = manifest["metadata"]
        found[_key(manifest)] = get(client, manifest["apiVersion"], manifest["kind"], meta["namespace"],
                                    meta["name"])
    return found


def apply_all(client: pykube.HTTPClient, manifests: list[dict[str, Any]], owner: dict[str, Any],
              existing: dict[tuple[str, str, str], dict[str, Any] | None]) -> list[str]:
    """Adopt each child (owner reference, namespace) and server-side apply it as field manager archop.

    `existing` is what read_children found, every object of it checked to be the owner's. How far this is
    free of races:
    - an object that existed is applied with its uid as a precondition: if it was replaced in between, the
      API server refuses the apply (and the next attempt checks the new object);
    - an object that did not exist is created by the apply. Server-side apply cannot say "create only": an
      object someone else creates with that name in the milliseconds between the read and the apply is
      taken over. The apply's answer shows it (200 instead of 201 Created): the names of such children are
      returned, so the reconcile can say so loudly.
    """
    surprises = []
    for manifest in manifests:
        kopf.adopt(manifest, owner=owner)  # type: ignore[arg-type]
        found = existing.get(_key(manifest))
        uid = str((found.get("metadata") or {}).get("uid") or "") if found is not None else None
        created = server_side_apply(client, manifest, uid=uid or None)
        if found is None and not created:
            surprises.append(_describe(manifest))
    return surprises


def create_if_absent(client: pykube.HTTPClient, manifest: dict[str, Any], owner: dict[str, Any]) -> bool:
    """Create the object unless one of that name exists; never overwrite. True when it was created."""
    kopf.adopt(manifest, owner=owner)  # type: ignore[arg-type]
    what = _describe(manifest)
    response = _request(
        client, "create", manifest["apiVersion"], manifest["kind"], manifest["metadata"]["namespace"], None,
        what, "creating", data=json.dumps(manifest), params={"fieldManager": names.MANAGER},
    )
    return _check(response, "creating", what, ok_codes=(409,))


def replace_secret_data(client: pykube.HTTPClient, manifest: dict[str, Any], uid: str,
                        resource_version: str) -> bool:
    """Replace an existing Secret's data (a reissued certificate) with the manifest's. Only the object that
    was read: the patch carries its uid and resourceVersion, and the API server refuses it (409) when the
    Secret was replaced or written since. False then; the caller reads it again."""
    meta = manifest["metadata"]
    return patch_secret_data(client, meta["namespace"], meta["name"], manifest["data"], uid, resource_version,
                             "renewing")


def patch_secret_data(client: pykube.HTTPClient, namespace: str, name: str, data: dict[str, str], uid: str,
                      resource_version: str, action: str = "patching",
                      annotations: dict[str, str] | None = None) -> bool:
    """Merge `data` (base64 values) into an existing Secret's data, and `annotations` into its annotations,
    in one write: the keys they name are written, every other key stays as it is. Only the object that was
    read: the patch carries its uid and resourceVersion, and the API server refuses it (409) when the Secret
    was replaced or written since. False then; the caller reads it again. Errors never quote the body (the
    values are secret)."""
    meta: dict[str, Any] = {"uid": uid, "resourceVersion": resource_version}
    if annotations:
        meta["annotations"] = annotations
    return merge_patch(client, "v1", "Secret", namespace, name, {"metadata": meta, "data": data},
                       action, f"Secret {namespace}/{name}", ok_codes=(409, 422))


def delete(client: pykube.HTTPClient, manifest: dict[str, Any], uid: str | None = None) -> bool:
    """Delete one object (its dependents in the background). True when something was deleted.

    With `uid`, only that very object: DeleteOptions.preconditions.uid makes the API server refuse (409
    Conflict) when the object of that name is another one by now, e.g. deleted and created again by someone
    else since it was read; nothing is deleted then (False)."""
    what = _describe(manifest)
    meta = manifest["metadata"]
    options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
    if uid:
        options["preconditions"] = {"uid": uid}
    response = _request(
        client, "delete", manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"],
        what, "deleting", data=json.dumps(options),
    )
    return _check(response, "deleting", what, ok_codes=(404, 409) if uid else (404,))


def get(client: pykube.HTTPClient, api_version: str, kind: str, namespace: str, name: str) -> dict | None:
    """One object as a dict, or None when it does not exist."""
    what = f"{kind} {namespace}/{name}"
    response = _request(client, "get", api_version, kind, namespace, name, what, "reading")
    if not _check(response, "reading", what, ok_codes=(404,)):
        return None
    return dict(response.json())


def list_objects(
    client: pykube.HTTPClient, api_version: str, kind: str, namespace: str | None, selector: dict[str, str]
) -> list[dict[str, Any]]:
    """Objects of `kind` with these labels, in `namespace` (None: a cluster-scoped kind)."""
    what = f"{kind} in {namespace} with {selector}" if namespace else f"{kind} with {selector}"
    params = {"labelSelector": ",".join(f"{k}={v}" for k, v in selector.items())} if selector else {}
    response = _request(client, "list", api_version, kind, namespace, None, what, "listing", params=params)
    _check(response, "listing", what)
    return list(response.json().get("items", []))


def merge_patch(client: pykube.HTTPClient, api_version: str, kind: str, namespace: str, name: str,
                patch: dict[str, Any], action: str = "patching", what: str = "", subresource: str = "",
                ok_codes: tuple[int, ...] = ()) -> bool:
    """JSON merge patch of one object (None values delete keys). False for a code in `ok_codes`."""
    what = what or f"{kind} {namespace}/{name}"
    response = _request(client, "patch", api_version, kind, namespace, name, what, action,
                        subresource=subresource, data=json.dumps(patch), headers=MERGE)
    return _check(response, action, what, ok_codes=ok_codes)


def patch_status(client: pykube.HTTPClient, name: str, namespace: str, patch: dict[str, Any]) -> None:
    """JSON merge patch of the Architecture's status subresource (None values delete keys)."""
    merge_patch(client, names.API_VERSION, names.KIND, namespace, name, {"status": patch},
                what=f"{names.KIND} {namespace}/{name} status", subresource="status")


def annotate_if_unchanged(
    client: pykube.HTTPClient, name: str, namespace: str, resource_version: str, annotations: dict[str, str]
) -> bool:
    """Set annotations on Architecture `name` only if it is still at `resource_version`: a merge patch that
    carries metadata.resourceVersion is refused with 409 Conflict when someone wrote in between. False then
    (and when the Architecture is gone); the caller reads it again and decides anew."""
    return merge_patch(client, names.API_VERSION, names.KIND, namespace, name,
                       {"metadata": {"resourceVersion": resource_version, "annotations": annotations}},
                       "annotating", f"{names.KIND} {namespace}/{name} annotations", ok_codes=(404, 409))


def annotate(client: pykube.HTTPClient, name: str, namespace: str,
             annotations: dict[str, str | None]) -> bool:
    """Set (or, with None, remove) annotations on Architecture `name`. False when it is gone."""
    return merge_patch(client, names.API_VERSION, names.KIND, namespace, name,
                       {"metadata": {"annotations": annotations}},
                       "annotating", f"{names.KIND} {namespace}/{name} annotations", ok_codes=(404,))


def patch_pod_labels(
    client: pykube.HTTPClient, namespace: str, pod: str, labels: dict[str, str | None]
) -> None:
    """Set (or, with None, remove) labels of one pod: how roles move between database pods."""
    merge_patch(client, "v1", "Pod", namespace, pod, {"metadata": {"labels": labels}},
                what=f"Pod {namespace}/{pod} labels")


def delete_pod(client: pykube.HTTPClient, namespace: str, pod: str) -> bool:
    """Delete one pod (its controller starts a new one). False when it was gone already."""
    return delete(client, {"apiVersion": "v1", "kind": "Pod",
                           "metadata": {"name": pod, "namespace": namespace}})


def _db_volumes(client: pykube.HTTPClient, name: str, namespace: str) -> list[dict[str, Any]]:
    """The database volumes of Architecture `name`: PVCs with the database selector's labels (the StatefulSet
    controller copies them onto the claims it creates; the builders set no others there) and a claim name
    of the StatefulSet's template, data-N-db-<ordinal>. A PVC that merely carries the labels is not one."""
    selector = names.selector(name, names.DATABASE)
    return [pvc for pvc in list_objects(client, "v1", "PersistentVolumeClaim", namespace, selector)
            if names.is_db_volume(name, pvc["metadata"]["name"])]


def delete_volumes(client: pykube.HTTPClient, name: str, namespace: str) -> list[str]:
    """Delete the database volumes (PVCs) of Architecture `name`; the names of those deleted. Each delete
    carries the uid that was listed, so a claim replaced in between is left alone."""
    deleted = []
    for pvc in _db_volumes(client, name, namespace):
        ref = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": pvc["metadata"]}
        if delete(client, ref, uid=pvc["metadata"].get("uid")):
            deleted.append(pvc["metadata"]["name"])
    return deleted


def grow_volumes(client: pykube.HTTPClient, name: str, namespace: str, size: str,
                 smaller_than: Callable[[str, str], bool]) -> tuple[list[str], list[str]]:
    """Ask for `size` on every database volume still below it: (grown, refusals with the API's reason).

    A StatefulSet's volume template is immutable, so a bigger size is requested on each PVC; the
    StorageClass must allow expansion, and the API server says so when it does not."""
    grown, refused = [], []
    for pvc in _db_volumes(client, name, namespace):
        pvc_name = pvc["metadata"]["name"]
        current = pvc["spec"]["resources"]["requests"]["storage"]
        if not smaller_than(current, size):
            continue
        response = _request(
            client, "patch", "v1", "PersistentVolumeClaim", namespace, pvc_name,
            f"PersistentVolumeClaim {namespace}/{pvc_name}", "resizing",
            data=json.dumps({"spec": {"resources": {"requests": {"storage": size}}}}), headers=MERGE,
        )
        if response.ok:
            grown.append(pvc_name)
        else:
            refused.append(f"{pvc_name}: {_api_message(response)}")
    return grown, refused


def release(client: pykube.HTTPClient, api_version: str, kind: str, namespace: str, name: str,
            uid: str) -> bool:
    """Drop an object's owner references so the garbage collector keeps it after the owner is gone. Only the
    object with this `uid` (the one the caller checked is its own): the patch carries metadata.uid, and
    the API server refuses it for another object of that name. False when it is gone or another one."""
    return merge_patch(client, api_version, kind, namespace, name,
                       {"metadata": {"uid": uid, "ownerReferences": None}},
                       "releasing", f"{kind} {namespace}/{name} owner references", ok_codes=(404, 409, 422))
