"""The CRD's CEL rules, evaluated with cel-python (plus the Kubernetes functions they use) on real objects."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from archop import names
from crdschema import EXAMPLES, apply_defaults, cel_errors, defaults_breaking_rules, openapi_schema


def arch(spec: dict[str, Any], name: str = "shop") -> dict[str, Any]:
    return apply_defaults({"apiVersion": names.API_VERSION, "kind": names.KIND,
                           "metadata": {"name": name}, "spec": copy.deepcopy(spec)}, openapi_schema())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_every_rule(path) -> None:
    obj = apply_defaults(yaml.safe_load(path.read_text()), openapi_schema())
    assert cel_errors(obj) == []
    assert cel_errors(obj, old=copy.deepcopy(obj)) == []


@pytest.mark.parametrize(
    ("spec", "name", "fragment"),
    [
        ({"database": {"followers": 1, "replication": {"mode": "sync", "syncReplicas": 2}}}, "shop",
         "syncReplicas must not exceed database.followers"),
        ({"database": {"followers": 0, "replication": {"mode": "sync"}, "failover": {"enabled": False}}},
         "shop",
         "syncReplicas must not exceed database.followers"),
        ({"app": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}}}, "shop",
         "minReplicas must not exceed app.autoscaling.maxReplicas"),
        ({"ingress": {"host": "", "tlsSecretName": "cert"}}, "shop", "tlsSecretName requires ingress.host"),
        ({"cdn": {"port": 8080}}, "shop", "cdn.port must differ from app.port"),
        ({"database": {"followers": 2, "switchoverTo": "shop-db-3"}}, "shop", "switchoverTo must name"),
        ({"database": {"switchoverTo": "other-db-1"}}, "shop", "switchoverTo must name"),
        ({"database": {"switchoverTo": "shopx-db-1"}}, "shop", "switchoverTo must name"),
        ({"database": {"failover": {"leaderTimeoutSeconds": 2, "podLostTimeoutSeconds": 5}}}, "shop",
         "podLostTimeoutSeconds must not exceed leaderTimeoutSeconds"),
        ({"database": {"failover": {"podLostTimeoutSeconds": 4}}}, "shop",
         "podLostTimeoutSeconds must not exceed leaderTimeoutSeconds"),
        ({"database": {"replication": {"dataDurability": "required"}}}, "shop",
         "dataDurability requires mode: sync"),
        ({"database": {"replication": {"mode": "async", "dataDurability": "preferred"}}}, "shop",
         "dataDurability requires mode: sync"),
        ({"app": {"enabled": False}, "ingress": {"enabled": True}}, "shop",
         "ingress.enabled may not be true while app.enabled is false"),
        ({"app": {"enabled": False}, "cdn": {"enabled": True}}, "shop",
         "cdn.enabled may not be true while app.enabled is false"),
        ({"app": {"env": [{"name": "REDIS_URL", "value": "redis://elsewhere"}]}}, "shop",
         "app.env may not set DATABASE_URL, DATABASE_RO_URL, REDIS_URL"),
        ({"app": {"args": ["--db", "$(DATABASE_RO_URL)"]}}, "shop",
         "app.args may not expand $(DATABASE_URL)"),
        ({"app": {"command": ["sh", "-c", "exec app $(DATABASE_URL)"]}}, "shop",
         "app.command may not expand"),
        ({"app": {"env": [{"name": "V", "value": "x",
                           "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]}},
         "shop", "app.env[].value and app.env[].valueFrom may not both be set"),
        # What is left of a valueFrom.fieldRef once the API server has pruned the unknown field.
        ({"app": {"env": [{"name": "POD", "valueFrom": {}}]}}, "shop",
         "app.env[].valueFrom must have exactly one of secretKeyRef and configMapKeyRef"),
        ({"app": {"envFrom": [{"secretRef": {"name": "s"}, "configMapRef": {"name": "c"}}]}}, "shop",
         "app.envFrom[] must have exactly one of secretRef and configMapRef"),
        ({"app": {"env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "other-db-replication",
                                                                          "key": "password"}}}]}}, "shop",
         "app.env may not read an Architecture's own keys"),
        ({"app": {"envFrom": [{"secretRef": {"name": "shop-db-tls"}}]}}, "shop",
         "app.envFrom may not read an Architecture's own keys"),
        ({}, "a" * 41, "metadata.name must be a DNS label of at most 40"),
        ({}, "9lives", "metadata.name must be a DNS label"),
    ],
)
def test_cross_field_rules_refuse(spec, name, fragment) -> None:
    errors = cel_errors(arch(spec, name))
    assert len(errors) == 1 and fragment in errors[0], errors


@pytest.mark.parametrize(
    "spec",
    [
        {"database": {"followers": 2, "replication": {"mode": "sync", "syncReplicas": 2}}},
        {"database": {"replication": {"mode": "sync", "dataDurability": "preferred"}}},
        {"database": {"followers": 0, "replication": {"mode": "async", "syncReplicas": 3},
                      "failover": {"enabled": False}}},
        {"database": {"followers": 2, "switchoverTo": "shop-db-2"}},
        {"database": {"followers": 2, "switchoverTo": "shop-db-0"}},
        {"ingress": {"host": "shop.example.com", "tlsSecretName": "cert"}},
        {"cdn": {"enabled": False, "port": 8080}},
        {"database": {"failover": {"leaderTimeoutSeconds": 5, "podLostTimeoutSeconds": 5}}},
        {"app": {"autoscaling": {"minReplicas": 3, "maxReplicas": 3}}},
        {"app": {"enabled": False}},
        {"app": {"enabled": False, "port": 8081}},  # no sidecar, so no clash
        {"app": {"enabled": False}, "cdn": {"enabled": False}, "ingress": {"enabled": False}},
        {"app": {"enabled": True}, "cdn": {"enabled": True}, "ingress": {"enabled": True}},
        {"app": {"command": ["/app"], "args": ["--ca", "$(ARCHOP_CA_FILE)", "--level=$(LOG_LEVEL)"],
                 "env": [{"name": "LOG_LEVEL", "value": "info"},
                         {"name": "CA", "valueFrom": {"secretKeyRef": {"name": "shop-ca", "key": "ca.crt"}}},
                         {"name": "DB",
                          "valueFrom": {"secretKeyRef": {"name": "shop-db-app", "key": "uri"}}}],
                 "envFrom": [{"configMapRef": {"name": "shop-ca"}}, {"secretRef": {"name": "shop-db-app"}}]}},
    ],
)
def test_cross_field_rules_accept(spec) -> None:
    assert cel_errors(arch(spec)) == []


def test_storage_may_grow_but_not_shrink() -> None:
    old = arch({"database": {"storage": {"size": "2Gi"}}})
    grow = arch({"database": {"storage": {"size": "2560Mi"}}})
    shrink = arch({"database": {"storage": {"size": "1500Mi"}}})
    assert cel_errors(grow, old=old) == []
    (error,) = cel_errors(shrink, old=old)
    assert "database.storage.size may not shrink" in error
    assert cel_errors(shrink) == []  # on create there is no old size to compare with


def test_storage_class_is_immutable_but_reclaim_policy_is_not() -> None:
    old = arch({"database": {"storage": {"storageClassName": "standard", "reclaimPolicy": "Delete"}}})
    retain = arch({"database": {"storage": {"storageClassName": "standard", "reclaimPolicy": "Retain"}}})
    other = arch({"database": {"storage": {"storageClassName": "fast"}}})
    unset = arch({"database": {"storage": {}}})
    assert cel_errors(retain, old=old) == []
    for new in (other, unset):
        (error,) = cel_errors(new, old=old)
        assert "storageClassName is immutable" in error
    (error,) = cel_errors(old, old=unset)
    assert "storageClassName is immutable" in error


def test_defaults_satisfy_their_own_rules() -> None:
    assert defaults_breaking_rules() == []
