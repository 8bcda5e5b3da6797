"""Settings from ARCHOP_* variables, and the image each component runs."""

from __future__ import annotations

import re

import pytest
from archop import names
from archop.config import CDN, Settings, image_for
from archop.spec import ArchitectureSpec


def test_defaults_from_an_empty_environment() -> None:
    s = Settings.from_env({"ARCHOP_NAMESPACE": "ops", "ARCHOP_POD_NAME": "archop-0"})
    assert (s.postgres_image, s.redis_image, s.nginx_image, s.app_image) == (
        "postgres:15.20-bookworm", "redis:7.0.15-bookworm", "nginx:1.27.5-bookworm", "archop/demoapp:0.1.0")
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
        "postgres:15.20-bookworm", "redis:7.0.15-bookworm", "archop/demoapp:0.1.0", "nginx:1.27.5-bookworm"]
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


def test_network_policy_peers_default_to_the_offline_cluster() -> None:
    s = Settings.from_env({})
    assert s.operator_pod_labels == (("app.kubernetes.io/component", "operator"),
                                     ("app.kubernetes.io/name", "archop"))
    assert (s.ingress_namespace, s.ingress_pod_labels) == ("traefik", (("app", "traefik"),))
    assert s.ingress_cidrs == ()
    assert (s.dns_namespace, s.dns_pod_labels) == ("kube-system", (("k8s-app", "kube-dns"),))
    assert s.metrics_scraper_namespaces == ()


def test_network_policy_peers_from_the_environment() -> None:
    s = Settings.from_env({
        "ARCHOP_OPERATOR_POD_LABELS": "app.kubernetes.io/name=archop, app.kubernetes.io/instance=blue,"
                                      "app.kubernetes.io/component=operator",
        "ARCHOP_INGRESS_NAMESPACE": "ingress-nginx",
        "ARCHOP_INGRESS_POD_LABELS": "app.kubernetes.io/name=ingress-nginx,empty=",
        "ARCHOP_INGRESS_CIDRS": "172.18.0.2, 10.0.0.7/8,172.18.0.2/32, fd00::1/64",
        "ARCHOP_DNS_NAMESPACE": "dns",
        "ARCHOP_DNS_POD_LABELS": "app=unbound",
        "ARCHOP_METRICS_SCRAPER_NAMESPACES": "monitoring, ops",
    })
    assert s.operator_pod_labels == (("app.kubernetes.io/component", "operator"),
                                     ("app.kubernetes.io/instance", "blue"),
                                     ("app.kubernetes.io/name", "archop"))
    assert s.ingress_namespace == "ingress-nginx"
    assert s.ingress_pod_labels == (("app.kubernetes.io/name", "ingress-nginx"), ("empty", ""))
    # Normalised: a bare address is a /32, host bits are cleared, repeats dropped.
    assert s.ingress_cidrs == ("172.18.0.2/32", "10.0.0.0/8", "fd00::/64")
    assert (s.dns_namespace, s.dns_pod_labels) == ("dns", (("app", "unbound"),))
    assert s.metrics_scraper_namespaces == ("monitoring", "ops")


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"ARCHOP_INGRESS_CIDRS": "172.18.0.300/32"},
         "ARCHOP_INGRESS_CIDRS: '172.18.0.300/32' is not a CIDR"),
        ({"ARCHOP_INGRESS_CIDRS": "traefik"}, "is not a CIDR"),
        ({"ARCHOP_INGRESS_POD_LABELS": "app"}, "ARCHOP_INGRESS_POD_LABELS: 'app' is not key=value"),
        ({"ARCHOP_INGRESS_POD_LABELS": "bad key=x"}, "is not key=value"),
        ({"ARCHOP_DNS_POD_LABELS": "k8s-app=kube dns"}, "is not a valid label value"),
        ({"ARCHOP_OPERATOR_POD_LABELS": "-x=y"}, "ARCHOP_OPERATOR_POD_LABELS"),
        ({"ARCHOP_INGRESS_NAMESPACE": "Traefik"},
         "ARCHOP_INGRESS_NAMESPACE: 'Traefik' is not a namespace name"),
        ({"ARCHOP_DNS_NAMESPACE": "kube_system"}, "ARCHOP_DNS_NAMESPACE"),
        ({"ARCHOP_METRICS_SCRAPER_NAMESPACES": "Monitoring"}, "ARCHOP_METRICS_SCRAPER_NAMESPACES"),
    ],
)
def test_bad_network_policy_peers_are_refused_with_the_variable_named(env, fragment) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        Settings.from_env(env)


def test_blank_peer_labels_keep_the_defaults() -> None:
    """The operator is never admitted by namespace alone: its labels cannot be emptied."""
    s = Settings.from_env({"ARCHOP_OPERATOR_POD_LABELS": " ", "ARCHOP_INGRESS_POD_LABELS": ""})
    assert s.operator_pod_labels == Settings().operator_pod_labels
    assert s.ingress_pod_labels == Settings().ingress_pod_labels
    with pytest.raises(ValueError, match="ARCHOP_OPERATOR_POD_LABELS=', ,' holds no key=value pair"):
        Settings.from_env({"ARCHOP_OPERATOR_POD_LABELS": ", ,"})
