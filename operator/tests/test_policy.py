"""The operands' NetworkPolicies (build/policy.py), rule by rule: default deny both ways, then only what each
tier needs. A small evaluator below answers "is this connection admitted?" the way the NetworkPolicy API
defines it, so the tests read as connections, not as dict shapes."""

from __future__ import annotations

import dataclasses
from typing import Any

import kubernetes_validate.utils as kv
import pytest
from archop import names
from archop.build import app, build_all, policy
from archop.config import Settings
from archop.spec import ArchitectureSpec
from buildfixtures import NAMESPACE, SETTINGS, STUB_CDN_CONF, example_specs

K8S_VERSION = "1.34.0"
OPERATOR_NS = SETTINGS.namespace
ARCH = "shop"


# ------------------------------------------------------------------------------------ a tiny evaluator


@dataclasses.dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str]
    ip: str = "10.244.9.9"


def _labels_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "the builders only use matchLabels"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _ip_in(cidr: str, ip: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)


def _peer_matches(peer: dict[str, Any], policy_ns: str, other: Pod | str) -> bool:
    """NetworkPolicyPeer semantics: ipBlock alone; otherwise namespaceSelector AND podSelector, a missing
    namespaceSelector meaning the policy's own namespace. An address that is no pod matches ipBlocks only."""
    if "ipBlock" in peer:
        assert set(peer) == {"ipBlock"}
        ip = other if isinstance(other, str) else other.ip
        return _ip_in(peer["ipBlock"]["cidr"], ip)
    if isinstance(other, str):
        return False
    if "namespaceSelector" in peer:
        ns_ok = _labels_match(peer["namespaceSelector"], {policy.NAMESPACE_LABEL: other.namespace})
    else:
        ns_ok = other.namespace == policy_ns
    pod_ok = _labels_match(peer.get("podSelector", {}), other.labels)
    return ns_ok and pod_ok


def _rules_admit(rules: list[dict[str, Any]], policy_ns: str, other: Pod | str, port: int, proto: str,
                 direction: str) -> bool:
    key = "from" if direction == "ingress" else "to"
    for rule in rules:
        ports = rule.get("ports")
        if ports is not None and not any(p["port"] == port and p["protocol"] == proto for p in ports):
            continue
        peers = rule.get(key)
        if peers is None or any(_peer_matches(peer, policy_ns, other) for peer in peers):
            return True
    return False


def admitted(policies: list[dict[str, Any]], src: Pod | str, dst: Pod | str, port: int,
             proto: str = "TCP") -> bool:
    """Egress of src (if any policy selects it) and ingress of dst (likewise) must both admit the packet."""
    for pod, other, direction in ((src, dst, "egress"), (dst, src, "ingress")):
        if isinstance(pod, str):
            continue
        selecting = [p for p in policies if p["metadata"]["namespace"] == pod.namespace
                     and _labels_match(p["spec"]["podSelector"], pod.labels)
                     and direction.capitalize() in p["spec"]["policyTypes"]]
        if not selecting:
            continue
        if not any(_rules_admit(p["spec"][direction], pod.namespace, other, port, proto, direction)
                   for p in selecting):
            return False
    return True


def tier(component: str, arch: str = ARCH, namespace: str = NAMESPACE, **extra: str) -> Pod:
    return Pod(namespace, {**names.labels(arch, component), **extra})


_CHART = {names.L_NAME: "archop", names.L_INSTANCE: "archop"}
OPERATOR = Pod(OPERATOR_NS, {**_CHART, names.L_COMPONENT: "operator"})
HELM_TEST_POD = Pod(OPERATOR_NS, {**_CHART, names.L_COMPONENT: "test"})
TRAEFIK = Pod("traefik", {"app": "traefik"})
COREDNS = Pod("kube-system", {"k8s-app": "kube-dns"})
STRANGER = Pod(NAMESPACE, {"app": "curl"})

DB, CACHE, APP = tier(names.DATABASE), tier(names.CACHE), tier(names.APP)
LEADER = tier(names.DATABASE, **{names.L_ROLE: names.LEADER})
FOLLOWER = tier(names.DATABASE, **{names.L_ROLE: names.FOLLOWER})


def spec_of(**overrides: Any) -> ArchitectureSpec:
    return ArchitectureSpec.parse(overrides)


def build(spec: ArchitectureSpec | None = None, settings: Settings = SETTINGS) -> list[dict[str, Any]]:
    return policy.build_policies(ARCH, NAMESPACE, spec or spec_of(), settings)


CDN_SPEC = spec_of()  # the defaults: CDN on, cache on
CDN_PORT, APP_PORT = CDN_SPEC.cdn.port, CDN_SPEC.app.port
METRICS_PORT = app.metrics_port(CDN_SPEC)


# ------------------------------------------------------------------------------------------- structure


def test_one_policy_per_tier_each_denying_both_directions_by_default() -> None:
    pols = {p["metadata"]["name"]: p["spec"] for p in build()}
    assert list(pols) == ["shop-db", "shop-cache", "shop-app"]
    for spec in pols.values():
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        assert "ingress" in spec and "egress" in spec
    assert pols["shop-db"]["podSelector"]["matchLabels"] == names.selector(ARCH, names.DATABASE)
    assert pols["shop-cache"]["podSelector"]["matchLabels"] == names.selector(ARCH, names.CACHE)
    assert pols["shop-app"]["podSelector"]["matchLabels"] == names.selector(ARCH, names.APP)


def test_no_rule_is_open_to_any_peer_or_any_port() -> None:
    """Every rule names its peers and its ports: nothing falls back to 'everyone' or 'every port'."""
    for spec in (p["spec"] for p in build(settings=dataclasses.replace(
            SETTINGS, metrics_scraper_namespaces=("monitoring",), ingress_cidrs=("172.18.0.2/32",)))):
        for direction, key in (("ingress", "from"), ("egress", "to")):
            for rule in spec[direction]:
                assert rule.get(key), rule
                assert rule.get("ports"), rule
                for peer in rule[key]:
                    assert peer.get("podSelector", {}).get("matchLabels") or "ipBlock" in peer or (
                        peer.get("namespaceSelector", {}).get("matchLabels")), peer


def test_without_a_cache_there_is_no_cache_policy_and_no_egress_to_redis() -> None:
    pols = build(spec_of(cache={"enabled": False}))
    assert [p["metadata"]["name"] for p in pols] == ["shop-db", "shop-app"]
    assert not admitted(pols, APP, CACHE, 6379)


@pytest.mark.parametrize("example", list(example_specs()))
def test_policies_are_valid_for_the_pinned_kubernetes(example: str) -> None:
    name, spec = example_specs()[example]
    for settings in (SETTINGS, dataclasses.replace(SETTINGS, ingress_cidrs=("172.18.0.0/16", "fd00::/64"),
                                                   metrics_scraper_namespaces=("monitoring", "ops"))):
        for manifest in policy.build_policies(name, NAMESPACE, spec, settings):
            kv.validate(manifest, K8S_VERSION, strict=True)


def test_build_all_applies_the_policies_before_any_workload() -> None:
    """Pods never start unprotected: the policies come first in apply order."""
    kinds = [m["kind"] for m in build_all(ARCH, NAMESPACE, CDN_SPEC, SETTINGS, STUB_CDN_CONF)]
    first_workload = min(kinds.index(k) for k in ("StatefulSet", "Deployment"))
    assert max(i for i, k in enumerate(kinds) if k == "NetworkPolicy") < first_workload


# --------------------------------------------------------------------------------------------- database


def test_the_database_admits_the_app_its_peers_and_the_operator_on_5432_only() -> None:
    pols = build()
    for client in (APP, DB, OPERATOR):
        assert admitted(pols, client, LEADER, 5432), client
        assert not admitted(pols, client, LEADER, 5433), client
    for outsider in (STRANGER, CACHE, TRAEFIK, COREDNS, "192.0.2.10"):
        assert not admitted(pols, outsider, LEADER, 5432), outsider


def test_database_pods_reach_each_other_for_replication_and_rewind() -> None:
    pols = build()
    assert admitted(pols, FOLLOWER, LEADER, 5432) and admitted(pols, LEADER, FOLLOWER, 5432)
    assert not admitted(pols, FOLLOWER, LEADER, 22)


def test_database_egress_is_its_peers_and_dns_only() -> None:
    pols = build()
    assert admitted(pols, DB, COREDNS, 53, "UDP") and admitted(pols, DB, COREDNS, 53, "TCP")
    for target, port in ((APP, APP_PORT), (CACHE, 6379), (OPERATOR, 9090), (STRANGER, 5432),
                         ("10.96.0.1", 443), ("172.18.0.2", 6443), ("192.0.2.1", 80)):
        assert not admitted(pols, DB, target, port), target
    # DNS only from the cluster DNS pods, not from any pod listening on 53.
    assert not admitted(pols, DB, Pod("kube-system", {"k8s-app": "other"}), 53, "UDP")
    assert not admitted(pols, DB, Pod("default", {"k8s-app": "kube-dns"}), 53, "UDP")


def test_another_architecture_cannot_reach_this_database() -> None:
    pols = build()
    assert not admitted(pols, tier(names.APP, arch="other"), LEADER, 5432)
    assert not admitted(pols, tier(names.DATABASE, arch="other"), LEADER, 5432)
    # The same labels in another namespace are no peer either.
    assert not admitted(pols, tier(names.APP, namespace="elsewhere"), LEADER, 5432)


# ------------------------------------------------------------------------------------------ the operator


def test_the_operator_is_one_peer_namespace_and_labels_together() -> None:
    peer = policy.operator_pods(SETTINGS)
    assert peer == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "archop-system"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/component": "operator",
                                        "app.kubernetes.io/name": "archop"}},
    }
    db_from = build()[0]["spec"]["ingress"][0]["from"]
    assert peer in db_from
    # No peer anywhere selects by the operator's labels alone (which would match them in any namespace).
    for p in build():
        for rule in p["spec"]["ingress"]:
            for other in rule["from"]:
                if other.get("podSelector", {}).get("matchLabels", {}).get(names.L_NAME) == "archop":
                    assert "namespaceSelector" in other


@pytest.mark.parametrize("target,port", [(LEADER, 5432), (CACHE, 6379)])
def test_operator_look_alikes_are_refused(target: Pod, port: int) -> None:
    pols = build()
    assert admitted(pols, OPERATOR, target, port)
    # Its labels in another namespace, e.g. an app namespace whose user copied them.
    assert not admitted(pols, dataclasses.replace(OPERATOR, namespace=NAMESPACE), target, port)
    assert not admitted(pols, dataclasses.replace(OPERATOR, namespace="team-b"), target, port)
    # Another pod of the operator's namespace that shares the name label (the helm test pod).
    assert not admitted(pols, HELM_TEST_POD, target, port)
    # The operator's namespace alone is not enough.
    assert not admitted(pols, Pod(OPERATOR_NS, {"app": "debug"}), target, port)


def test_the_operator_labels_and_namespace_follow_the_settings() -> None:
    settings = dataclasses.replace(SETTINGS, namespace="ops", operator_pod_labels=(
        (names.L_COMPONENT, "operator"), (names.L_INSTANCE, "blue"), (names.L_NAME, "archop")))
    pols = build(settings=settings)
    blue = Pod("ops", {names.L_NAME: "archop", names.L_INSTANCE: "blue", names.L_COMPONENT: "operator"})
    green = Pod("ops", {**blue.labels, names.L_INSTANCE: "green"})
    assert admitted(pols, blue, LEADER, 5432) and not admitted(pols, green, LEADER, 5432)
    assert not admitted(pols, OPERATOR, LEADER, 5432)  # archop-system is no longer the operator's home


# ---------------------------------------------------------------------------------------------- cache


def test_the_cache_admits_the_app_and_the_operator_on_6379_only() -> None:
    pols = build()
    assert admitted(pols, APP, CACHE, 6379) and admitted(pols, OPERATOR, CACHE, 6379)
    assert not admitted(pols, APP, CACHE, 6380)
    for outsider in (DB, STRANGER, TRAEFIK, tier(names.APP, arch="other"), "192.0.2.10"):
        assert not admitted(pols, outsider, CACHE, 6379), outsider


def test_the_cache_opens_no_connection_at_all() -> None:
    """One Redis, no replicas (build/cache.py): no replication peer, and it resolves no names."""
    (cache,) = [p for p in build() if p["metadata"]["name"] == "shop-cache"]
    assert cache["spec"]["egress"] == []
    for target, port, proto in ((COREDNS, 53, "UDP"), (DB, 5432, "TCP"), (CACHE, 6379, "TCP"),
                                ("192.0.2.1", 443, "TCP")):
        assert not admitted(build(), CACHE, target, port, proto)


def test_the_cache_still_runs_a_single_replica() -> None:
    """The no-egress rule above holds only while Redis has no replicas to sync with."""
    from archop.build import cache

    dep = cache.deployment(ARCH, NAMESPACE, CDN_SPEC, "redis:7")
    assert dep["spec"]["replicas"] == 1
    assert "--replicaof" not in dep["spec"]["template"]["spec"]["containers"][0]["args"]


# ------------------------------------------------------------------------------------------------ app


def test_with_a_cdn_the_ingress_controller_reaches_the_cdn_port_only() -> None:
    pols = build(CDN_SPEC)
    assert admitted(pols, TRAEFIK, APP, CDN_PORT)
    # The bypass: the app's own port is closed to the ingress controller and to everyone else.
    for client in (TRAEFIK, STRANGER, OPERATOR, DB, tier(names.APP), "192.0.2.10"):
        assert not admitted(pols, client, APP, APP_PORT), client
    (app_pol,) = [p for p in pols if p["metadata"]["name"] == "shop-app"]
    assert {p["port"] for rule in app_pol["spec"]["ingress"] for p in rule["ports"]} == {CDN_PORT}


def test_the_service_and_so_the_ingress_target_the_port_the_policy_opens() -> None:
    for spec in (CDN_SPEC, spec_of(cdn={"enabled": False})):
        (app_pol,) = [p for p in build(spec) if p["metadata"]["name"] == "shop-app"]
        (rule,) = app_pol["spec"]["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": app.target_port(spec)}]
        assert app.service(ARCH, NAMESPACE, spec)["spec"]["ports"][0]["targetPort"] == app.target_port(spec)


def test_the_cdn_sidecar_reaches_the_app_over_loopback() -> None:
    """Why the app port needs no rule: the sidecar's upstream is 127.0.0.1, inside the pod."""
    from archop.build import cdn

    conf = cdn.nginx_conf(CDN_SPEC)
    assert f"server 127.0.0.1:{APP_PORT};" in conf


def test_without_a_cdn_the_ingress_controller_reaches_the_app_port() -> None:
    spec = spec_of(cdn={"enabled": False})
    pols = build(spec)
    assert admitted(pols, TRAEFIK, APP, spec.app.port)
    assert not admitted(pols, STRANGER, APP, spec.app.port)
    assert not admitted(pols, TRAEFIK, APP, spec.cdn.port)


def test_the_ingress_controller_is_matched_by_namespace_and_labels() -> None:
    pols = build()
    assert not admitted(pols, Pod("traefik", {"app": "whoami"}), APP, CDN_PORT)
    assert not admitted(pols, Pod(NAMESPACE, {"app": "traefik"}), APP, CDN_PORT)
    custom = dataclasses.replace(SETTINGS, ingress_namespace="ingress-nginx", ingress_pod_labels=(
        ("app.kubernetes.io/component", "controller"), ("app.kubernetes.io/name", "ingress-nginx")))
    nginx = Pod("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx",
                                  "app.kubernetes.io/component": "controller"})
    pols = build(settings=custom)
    assert admitted(pols, nginx, APP, CDN_PORT) and not admitted(pols, TRAEFIK, APP, CDN_PORT)


def test_a_host_network_ingress_controller_is_admitted_by_address() -> None:
    """The offline cluster's traefik runs on the control-plane node's network: its connections come from
    the node's address, which no pod selector matches."""
    node_ip = "172.18.0.2"
    assert not admitted(build(), node_ip, APP, CDN_PORT)
    settings = dataclasses.replace(SETTINGS, ingress_cidrs=("172.18.0.2/32",))
    pols = build(settings=settings)
    assert admitted(pols, node_ip, APP, CDN_PORT)
    assert not admitted(pols, node_ip, APP, APP_PORT)
    assert not admitted(pols, "172.18.0.3", APP, CDN_PORT)
    assert not admitted(pols, node_ip, LEADER, 5432) and not admitted(pols, node_ip, CACHE, 6379)


def test_the_metrics_port_is_closed_unless_scrapers_are_configured() -> None:
    monitoring = Pod("monitoring", {"app": "prometheus"})
    assert not admitted(build(), monitoring, APP, METRICS_PORT)
    pols = build(settings=dataclasses.replace(SETTINGS, metrics_scraper_namespaces=("monitoring",)))
    assert admitted(pols, monitoring, APP, METRICS_PORT)
    assert not admitted(pols, monitoring, APP, APP_PORT) and not admitted(pols, monitoring, APP, CDN_PORT)
    assert not admitted(pols, STRANGER, APP, METRICS_PORT)


def test_app_egress_is_the_database_the_cache_and_dns() -> None:
    pols = build()
    assert admitted(pols, APP, LEADER, 5432) and admitted(pols, APP, FOLLOWER, 5432)  # rw and ro pools
    assert admitted(pols, APP, CACHE, 6379)
    assert admitted(pols, APP, COREDNS, 53, "UDP") and admitted(pols, APP, COREDNS, 53, "TCP")
    for target, port in ((APP, APP_PORT), (STRANGER, 80), (OPERATOR, 9090), (DB, 22), (CACHE, 5432),
                         ("10.96.0.1", 443), ("192.0.2.1", 443), (tier(names.DATABASE, arch="other"), 5432),
                         (tier(names.CACHE, arch="other"), 6379)):
        assert not admitted(pols, APP, target, port), target


def test_the_stack_pods_are_not_reachable_from_outside_the_cluster() -> None:
    pols = build(settings=dataclasses.replace(SETTINGS, ingress_cidrs=("172.18.0.2/32",)))
    targets = ((APP, CDN_PORT), (APP, APP_PORT), (APP, METRICS_PORT), (LEADER, 5432), (CACHE, 6379))
    for target, port in targets:
        assert not admitted(pols, "203.0.113.7", target, port), (target, port)


def test_dns_peers_follow_the_settings() -> None:
    settings = dataclasses.replace(SETTINGS, dns_namespace="dns", dns_pod_labels=(("app", "unbound"),))
    pols = build(settings=settings)
    unbound = Pod("dns", {"app": "unbound"})
    assert admitted(pols, APP, unbound, 53, "UDP") and admitted(pols, DB, unbound, 53, "TCP")
    assert not admitted(pols, APP, COREDNS, 53, "UDP")
