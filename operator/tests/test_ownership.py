"""ownership.py, and how archop.apply uses it: an object is the operator's to change only if it belongs to
this very Architecture; what it writes and deletes carries the uid it checked."""

from __future__ import annotations

import json
from typing import Any

import kopf
import pytest
import requests
from archop import apply, names
from archop.ownership import database_pods, owned, why_foreign

UID = "uid-shop"
LABELS = names.labels("shop", names.DATABASE)


def obj(refs: list[dict[str, Any]] | None = None, labels: dict[str, str] | None = None,
        name: str = "shop-db-app") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "demo", "uid": "uid-obj"}
    if refs is not None:
        meta["ownerReferences"] = refs
    if labels is not None:
        meta["labels"] = labels
    return {"metadata": meta}


def ref(kind: str = "Architecture", name: str = "shop", uid: str = UID, controller: bool = True) -> dict:
    return {"apiVersion": names.API_VERSION if kind == "Architecture" else "apps/v1", "kind": kind,
            "name": name, "uid": uid, "controller": controller}


# ---------------------------------------------------------------------------------------------- owned


def sts(uid: str = "uid-sts", owner_uid: str = UID) -> dict[str, Any]:
    return {"metadata": {"name": "shop-db", "uid": uid, "ownerReferences": [ref(uid=owner_uid)]}}


def pod(name: str, refs: list[dict[str, Any]] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": LABELS}
    if refs is not None:
        meta["ownerReferences"] = refs
    return {"metadata": meta}


def test_only_the_pods_of_this_architectures_statefulset_are_its_database_pods() -> None:
    """The operator sends them the superuser's password: copying the labels must not earn it."""
    mine = pod("shop-db-0", [ref("StatefulSet", "shop-db", "uid-sts")])
    squatter = pod("shop-db-7", None)  # the labels alone
    other_sts = pod("shop-db-1", [ref("StatefulSet", "shop-db", "uid-other")])  # a StatefulSet since replaced
    renamed = pod("x-0", [ref("StatefulSet", "x", "uid-sts")])
    not_controller = pod("shop-db-2", [ref("StatefulSet", "shop-db", "uid-sts", controller=False)])
    got, foreign = database_pods([mine, squatter, other_sts, renamed, not_controller], sts(), "shop", UID)
    assert got == [mine]
    assert foreign == ["shop-db-7", "shop-db-1", "x-0", "shop-db-2"]
    # A StatefulSet that is not this Architecture's (or none at all) vouches for no pod.
    assert database_pods([mine], sts(owner_uid="uid-someone"), "shop", UID) == ([], ["shop-db-0"])
    assert database_pods([mine], None, "shop", UID) == ([], ["shop-db-0"])


def test_an_owner_reference_with_the_architectures_uid_makes_it_ours() -> None:
    assert owned(obj([ref()]), "Service", "shop", UID)
    assert owned(obj([ref("Deployment", "x", "uid-x"), ref(controller=False)]), "Service", "shop", UID)


@pytest.mark.parametrize("candidate", [
    obj(),  # a user's own Service
    obj(labels=LABELS),  # our labels are not enough for a Service: only the uid is
    obj([ref("Deployment", "other", "uid-other")], labels=LABELS),
    obj([ref(uid="uid-earlier-shop")], labels=LABELS),  # an earlier Architecture of the same name
])
def test_anything_else_is_foreign(candidate: dict[str, Any]) -> None:
    assert not owned(candidate, "Service", "shop", UID)


def test_a_released_secret_is_ours_by_its_labels() -> None:
    """The database Secrets lose their owner references when an Architecture with reclaimPolicy Retain is
    deleted: a new one of that name finds them by the labels the builders set."""
    assert owned(obj(labels=LABELS), "Secret", "shop", UID)
    assert owned(obj([], labels=LABELS), "Secret", "shop", UID)


@pytest.mark.parametrize("secret", ["shop-ca", "shop-db-tls", "shop-cache", "shop-anything"])
def test_only_the_released_database_secrets_are_ours_by_labels(secret: str) -> None:
    """The CA and the certificates are never released: a labelled look-alike (a planted CA, whose key its
    planter knows) is foreign, and the reconcile stops before it trusts it."""
    assert not owned(obj(labels=LABELS, name=secret), "Secret", "shop", UID)
    assert owned(obj([ref()], labels=LABELS, name=secret), "Secret", "shop", UID)


def test_the_released_secrets_are_the_database_users() -> None:
    from archop.build.secrets import DB_USERS
    from archop.ownership import retained_secrets

    assert retained_secrets("shop") == {names.db_secret("shop", u) for u in DB_USERS}


@pytest.mark.parametrize("candidate", [
    obj(labels={**LABELS, names.L_ARCH: "other"}),  # another Architecture's
    obj(labels={k: v for k, v in LABELS.items() if k != names.L_MANAGED_BY}),  # not managed by archop
    obj(labels={}),
    obj([ref("Deployment", "x", "uid-x")], labels=LABELS),  # labelled, but someone else owns it
    obj([ref(uid="uid-earlier-shop")], labels=LABELS),  # the garbage collector's until it is gone
])
def test_a_secret_without_both_labels_or_with_another_owner_is_foreign(candidate: dict[str, Any]) -> None:
    assert not owned(candidate, "Secret", "shop", UID)


def test_without_the_architectures_uid_nothing_is_ours() -> None:
    assert not owned(obj([ref(uid="")]), "Service", "shop", "")
    assert not owned(obj(labels=LABELS), "Secret", "shop", "")


def test_why_foreign_says_whose_it_is() -> None:
    assert why_foreign(obj(), "shop") == "it has no owner reference to this Architecture"
    assert why_foreign(obj([ref("Deployment", "web", "u")]), "shop") == "it belongs to Deployment web"
    assert "earlier Architecture shop" in why_foreign(obj([ref(uid="old")]), "shop")


# ---------------------------------------------------------------------------------------------- apply


class FakeApi:
    """Answers GETs from `objects` (by URL), everything else with `status`; records every request."""

    def __init__(self, objects: dict[str, dict[str, Any]] | None = None, status: int = 200) -> None:
        self.objects, self.status = objects or {}, status
        self.sent: list[dict[str, Any]] = []

    def request(self, method: str, **kwargs: Any) -> requests.Response:
        self.sent.append({"method": method, **kwargs})
        response = requests.Response()
        if method == "GET":
            found = self.objects.get(kwargs["url"])
            response.status_code, response.reason = (200, "OK") if found else (404, "Not Found")
            response._content = json.dumps(found or {"message": "not found"}).encode()
        else:
            response.status_code, response.reason = self.status, "x"
            response._content = json.dumps({"message": "refused"}).encode()
        return response

    def bodies(self, method: str) -> list[dict[str, Any]]:
        return [json.loads(s["data"]) for s in self.sent if s["method"] == method]


SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop-db-rw", "namespace": "demo"}}
OWNER = {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {"name": "shop", "uid": UID}}


def test_read_children_gets_each_child_by_name() -> None:
    api = FakeApi({"services/shop-db-rw": obj([ref()])})
    ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": "shop-ingress", "namespace": "demo"}}
    found = apply.read_children(api, [SERVICE, ingress])
    assert found[("v1", "Service", "shop-db-rw")]["metadata"]["uid"] == "uid-obj"
    assert found[("networking.k8s.io/v1", "Ingress", "shop-ingress")] is None
    assert [(s["method"], s["url"]) for s in api.sent] == [("GET", "services/shop-db-rw"),
                                                           ("GET", "ingresses/shop-ingress")]


def test_an_existing_child_is_applied_with_its_uid() -> None:
    api = FakeApi(status=200)
    found = {("v1", "Service", "shop-db-rw"): obj([ref()])}
    assert apply.apply_all(api, [json.loads(json.dumps(SERVICE))], OWNER, found) == []
    (sent,) = api.bodies("PATCH")
    assert sent["metadata"]["uid"] == "uid-obj"
    assert sent["metadata"]["ownerReferences"][0]["uid"] == UID


def test_a_new_child_is_applied_without_a_uid_and_a_surprise_is_reported() -> None:
    created = FakeApi(status=201)
    assert apply.apply_all(created, [json.loads(json.dumps(SERVICE))], OWNER, {}) == []
    assert "uid" not in created.bodies("PATCH")[0]["metadata"]
    # 200, not 201: the object existed after all (someone created it between the read and the apply)
    existed = FakeApi(status=200)
    surprises = apply.apply_all(existed, [json.loads(json.dumps(SERVICE))], OWNER, {})
    assert surprises == ["Service demo/shop-db-rw"]


@pytest.mark.parametrize("code", [409, 422])
def test_an_apply_refused_for_its_uid_is_retried(code: int) -> None:
    with pytest.raises(kopf.TemporaryError, match="replaced after the ownership check"):
        apply.server_side_apply(FakeApi(status=code), SERVICE, uid="uid-obj")


def test_delete_carries_the_uid_precondition() -> None:
    api = FakeApi(status=200)
    assert apply.delete(api, SERVICE, uid="uid-obj")
    (options,) = api.bodies("DELETE")
    assert options["preconditions"] == {"uid": "uid-obj"}
    assert options["propagationPolicy"] == "Background"
    # another object of that name by now: the API server says 409, and nothing was deleted
    assert not apply.delete(FakeApi(status=409), SERVICE, uid="uid-obj")


def test_delete_without_a_uid_sends_no_precondition() -> None:
    api = FakeApi(status=200)
    apply.delete_pod(api, "demo", "shop-db-1")
    assert "preconditions" not in api.bodies("DELETE")[0]


def test_release_carries_the_uid() -> None:
    api = FakeApi(status=200)
    assert apply.release(api, "v1", "Secret", "demo", "shop-db-app", uid="uid-obj")
    (patch,) = api.bodies("PATCH")
    assert patch == {"metadata": {"uid": "uid-obj", "ownerReferences": None}}
    assert not apply.release(FakeApi(status=422), "v1", "Secret", "demo", "shop-db-app", uid="uid-obj")


def test_only_the_database_volumes_are_deleted_each_by_uid() -> None:
    pvcs = [{"metadata": {"name": "data-shop-db-0", "namespace": "demo", "uid": "u0"}},
            {"metadata": {"name": "data-shop-db-12", "namespace": "demo", "uid": "u12"}},
            {"metadata": {"name": "my-own-claim", "uid": "mine"}},  # carries the labels, is not ours
            {"metadata": {"name": "data-shop-db-x", "uid": "x"}}]

    class Listing(FakeApi):
        def request(self, method: str, **kwargs: Any) -> requests.Response:
            if method == "GET":
                self.sent.append({"method": method, **kwargs})
                response = requests.Response()
                response.status_code, response._content = 200, json.dumps({"items": pvcs}).encode()
                return response
            return super().request(method, **kwargs)

    api = Listing(status=200)
    assert apply.delete_volumes(api, "shop", "demo") == ["data-shop-db-0", "data-shop-db-12"]
    deletes = [(s["url"], json.loads(s["data"])["preconditions"])
               for s in api.sent if s["method"] == "DELETE"]
    assert deletes == [("persistentvolumeclaims/data-shop-db-0", {"uid": "u0"}),
                       ("persistentvolumeclaims/data-shop-db-12", {"uid": "u12"})]


def test_db_volume_names() -> None:
    assert names.is_db_volume("shop", "data-shop-db-0")
    assert not names.is_db_volume("shop", "data-shop-db-")
    assert not names.is_db_volume("shop", "data-shopx-db-0")
    assert not names.is_db_volume("sh.p", "data-shop-db-0")
