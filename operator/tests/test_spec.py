"""ArchitectureSpec.parse: camelCase CR spec -> typed spec with defaults."""

from __future__ import annotations

import pytest
import yaml
from archop.spec import ArchitectureSpec, EnvFrom, EnvVar, KeyRef, RefKind, Resources, app_enabled
from crdschema import ROOT


def test_empty_spec_is_all_defaults() -> None:
    assert ArchitectureSpec.parse({}) == ArchitectureSpec()
    assert ArchitectureSpec.parse(None) == ArchitectureSpec()


def test_production_example_parses_every_field() -> None:
    raw = yaml.safe_load((ROOT / "examples" / "production.yaml").read_text())["spec"]
    spec = ArchitectureSpec.parse(raw)
    db = spec.database
    assert (db.followers, db.instances, db.synchronous, db.sync_replicas) == (3, 4, True, 2)
    assert (db.storage_size, db.reclaim_policy, db.storage_class) == ("10Gi", "Retain", None)
    assert db.failover.max_lag_bytes == 1048576 and db.failover.leader_timeout_seconds == 3.0
    assert db.resources == Resources(requests={"cpu": "500m", "memory": "1Gi"},
                                     limits={"cpu": "2", "memory": "2Gi"})
    cache = spec.cache
    assert (cache.max_memory, cache.eviction_policy, cache.ttl_seconds) == ("256mb", "allkeys-lfu", 60)
    auto = spec.app.autoscaling
    assert (auto.enabled, auto.min_replicas, auto.max_replicas, auto.target_cpu_percent) == (True, 3, 12, 65)
    assert (spec.cdn.cache_size, spec.cdn.ttl_seconds, spec.cdn.port) == ("1g", 120, 8081)
    ing = spec.ingress
    assert (ing.host, ing.class_name) == ("shop.example.com", "traefik")
    assert ing.tls_secret_name == "shop-example-com-tls"


def test_partial_tiers_keep_other_defaults() -> None:
    spec = ArchitectureSpec.parse({
        "database": {"followers": 0, "storage": {"storageClassName": "fast"}, "switchoverTo": "shop-db-0",
                     "failover": {"allowDataLoss": True}},
        "cache": {"enabled": False},
        "ingress": {"host": ""},
    })
    assert spec.database.followers == 0 and spec.database.storage_class == "fast"
    assert spec.database.switchover_to == "shop-db-0"
    assert spec.database.failover.allow_data_loss and spec.database.failover.enabled
    assert spec.database.storage_size == "1Gi" and not spec.database.synchronous
    assert not spec.cache.enabled and spec.cache.max_memory == "64mb"
    assert spec.ingress.host == "" and spec.ingress.path == "/"


def test_numeric_quantities_become_strings() -> None:
    spec = ArchitectureSpec.parse({"app": {"resources": {"requests": {"cpu": 1}, "limits": {"cpu": 2}}}})
    assert spec.app.resources.requests == {"cpu": "1"} and spec.app.resources.limits == {"cpu": "2"}
    assert spec.app.resources.as_dict() == {"requests": {"cpu": "1"}, "limits": {"cpu": "2"}}


def test_resources_default_only_when_requests_absent() -> None:
    spec = ArchitectureSpec.parse({"cache": {"resources": {"limits": {"memory": "1Gi"}}}})
    assert spec.cache.resources.requests == {"cpu": "50m", "memory": "64Mi"}
    assert spec.cache.resources.limits == {"memory": "1Gi"}


def test_own_app_example_parses_every_app_field() -> None:
    raw = yaml.safe_load((ROOT / "examples" / "own-app.yaml").read_text())["spec"]
    app = ArchitectureSpec.parse(raw).app
    assert app.enabled and app.image == "registry.example.com/team/shop-api:1.4.2"
    assert (app.command, app.args, app.port) == (("/app/shop-api",), ("serve", "--listen", ":9000"), 9000)
    assert (app.readiness_path, app.liveness_path) == ("/ready", "/live")
    assert app.env == (EnvVar("LOG_LEVEL", value="info"),
                       EnvVar("PAYMENT_API_KEY", ref=KeyRef(RefKind.SECRET, "shop-api-keys", "payments")))
    assert app.env_from == (EnvFrom(RefKind.CONFIG_MAP, "shop-api-config"),)


def test_the_demo_app_is_the_default() -> None:
    app = ArchitectureSpec().app
    assert app.enabled and app.image is None and (app.command, app.args, app.env, app.env_from) == ((),) * 4
    assert (app.readiness_path, app.liveness_path) == ("/readyz", "/healthz")


def test_the_cdn_and_the_ingress_follow_the_app_unless_told() -> None:
    off = ArchitectureSpec.parse({"app": {"enabled": False}})
    assert not off.app.enabled and not off.cdn.enabled and not off.ingress.enabled
    on = ArchitectureSpec.parse({"cdn": {"enabled": False}})
    assert on.app.enabled and not on.cdn.enabled and on.ingress.enabled
    assert app_enabled({"app": {"enabled": False}}) is False and app_enabled(None) is True


def test_env_entries_become_container_env_as_written() -> None:
    env = ArchitectureSpec.parse({"app": {"env": [
        {"name": "A", "value": "1"}, {"name": "B"},
        {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k", "optional": True}}},
        {"name": "D", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k", "optional": False}}}]}}).app.env
    assert [e.manifest() for e in env] == [
        {"name": "A", "value": "1"}, {"name": "B", "value": ""},
        {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k", "optional": True}}},
        {"name": "D", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]


@pytest.mark.parametrize(("app", "fragment"), [
    ({"env": [{"value": "x"}]}, r"app.env\[0\] needs a name"),
    ({"env": [{"name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
     "may not both be set"),
    ({"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
     "exactly one of secretKeyRef and configMapKeyRef, not fieldRef"),
    ({"env": [{"name": "A", "valueFrom": {}}]}, "exactly one of secretKeyRef and configMapKeyRef"),
    ({"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}}]}, "needs a key"),
    ({"env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"key": "k"}}}]}, "needs a name"),
    ({"env": [{"name": "A", "valueFromm": {}}]}, "name, value and valueFrom only"),
    ({"envFrom": [{"secretRef": {"name": "s"}, "configMapRef": {"name": "c"}}]},
     r"app.envFrom\[0\] must have exactly one of secretRef and configMapRef"),
    ({"envFrom": [{"secretRef": {}}]}, "needs a name"),
    ({"command": "run"}, "app.command must be a list"),
    ({"env": {"A": "1"}}, "app.env and app.envFrom must be lists"),
])
def test_malformed_app_specs_are_refused_by_spec_py_too(app: dict, fragment: str) -> None:
    """The CRD refuses these first; spec.py refuses them again (the reconcile turns that into a permanent
    error) rather than build a pod from a shape it does not understand."""
    with pytest.raises(ValueError, match=fragment):
        ArchitectureSpec.parse({"app": app})
