"""Settings from ARCHOP_* variables, and the image each component runs."""

from __future__ import annotations

import pytest
from archop import names
from archop.config import CDN, Settings, image_for
from archop.spec import ArchitectureSpec


def test_defaults_from_an_empty_environment() -> None:
    s = Settings.from_env({"ARCHOP_NAMESPACE": "ops", "ARCHOP_POD_NAME": "archop-0"})
    assert (s.postgres_image, s.redis_image, s.nginx_image, s.app_image) == (
        "postgres:15", "redis:7", "nginx:1.27", "archop/demoapp:0.1.0")
    assert (s.namespace, s.identity, s.metrics_port, s.health_port) == ("ops", "archop-0", 9090, 8080)
    assert s.leader_election is True
    assert (s.lease_duration_seconds, s.renew_deadline_seconds, s.retry_period_seconds) == (8, 6, 1)


def test_environment_overrides() -> None:
    s = Settings.from_env({
        "ARCHOP_POSTGRES_IMAGE": "pg:16", "ARCHOP_LEADER_ELECTION": "false", "ARCHOP_METRICS_PORT": "9191",
        "ARCHOP_LEASE_DURATION_SECONDS": "30", "ARCHOP_RENEW_DEADLINE_SECONDS": "20",
        "ARCHOP_RETRY_PERIOD_SECONDS": "4", "ARCHOP_MONITOR_INTERVAL_SECONDS": "0.5",
    })
    assert s.postgres_image == "pg:16" and s.leader_election is False and s.metrics_port == 9191
    assert (s.lease_duration_seconds, s.renew_deadline_seconds, s.retry_period_seconds) == (30, 20, 4)
    assert s.monitor_interval_seconds == 0.5


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"ARCHOP_LEADER_ELECTION": "maybe"}, "is not a boolean"),
        ({"ARCHOP_METRICS_PORT": "http"}, "is not an integer"),
        ({"ARCHOP_HEALTH_PORT": "70000"}, "out of range"),
        ({"ARCHOP_LEASE_DURATION_SECONDS": "6"}, "must be greater than ARCHOP_RENEW_DEADLINE_SECONDS"),
        ({"ARCHOP_RETRY_PERIOD_SECONDS": "9"}, "must exceed 1.2 x"),
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(env, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        Settings.from_env(env)


def test_image_for_prefers_the_per_architecture_override() -> None:
    s = Settings()
    default = ArchitectureSpec()
    custom = ArchitectureSpec.parse({"database": {"image": "my/pg:15"}, "cache": {"image": "my/redis"},
                                     "app": {"image": "my/app"}, "cdn": {"image": "my/nginx"}})
    assert [image_for(s, default, c) for c in (names.DATABASE, names.CACHE, names.APP, CDN)] == [
        "postgres:15", "redis:7", "archop/demoapp:0.1.0", "nginx:1.27"]
    assert [image_for(s, custom, c) for c in (names.DATABASE, names.CACHE, names.APP, CDN)] == [
        "my/pg:15", "my/redis", "my/app", "my/nginx"]
    with pytest.raises(ValueError, match="unknown component"):
        image_for(s, default, "ingress")


def test_watched_namespaces_default_to_all_and_parse_in_order() -> None:
    assert Settings.from_env({}).watch_namespaces == ()
    assert Settings.from_env({"ARCHOP_WATCH_NAMESPACES": " "}).watch_namespaces == ()
    s = Settings.from_env({"ARCHOP_WATCH_NAMESPACES": "shop, team-b,,shop"})
    assert s.watch_namespaces == ("shop", "team-b")


@pytest.mark.parametrize("value", ["Shop", "team_b", "-shop", "a" * 64])
def test_a_watched_namespace_must_be_a_namespace_name(value: str) -> None:
    with pytest.raises(ValueError, match="ARCHOP_WATCH_NAMESPACES"):
        Settings.from_env({"ARCHOP_WATCH_NAMESPACES": value})
