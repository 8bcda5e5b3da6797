"""Properties every built manifest must have, over the examples and variants of them."""

from __future__ import annotations

import dataclasses
from typing import Any

import kubernetes_validate.utils as kv
import pytest
from archop import names
from archop.build import (
    absent_optional_children,
    app,
    build_all,
    cache,
    cdn,
    content_hash,
    ingress,
    ref,
    tls,
)
from archop.build.secrets import build_secrets
from archop.spec import ArchitectureSpec
from buildfixtures import NAMESPACE, SETTINGS, STUB_CDN_CONF, counting_passwords, example_specs

K8S_VERSION = "1.34.0"  # e2e/cluster/versions.env pins v1.34.x


def variants() -> dict[str, tuple[str, ArchitectureSpec]]:
    out = dict(example_specs())
    out["bare"] = ("bare", ArchitectureSpec.parse({
        "cache": {"enabled": False}, "cdn": {"enabled": False}, "ingress": {"enabled": False},
        "app": {"replicas": 1}, "database": {"followers": 0}}))
    out["catch-all-tls"] = ("web", ArchitectureSpec.parse({"ingress": {"host": "", "className": "traefik"}}))
    return out


def everything(name: str, spec: ArchitectureSpec) -> list[dict[str, Any]]:
    return build_secrets(name, NAMESPACE, password=counting_passwords()) + build_all(
        name, NAMESPACE, spec, SETTINGS, STUB_CDN_CONF)


def pod_specs(manifests: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(m["metadata"]["name"], m["spec"]["template"]["spec"]) for m in manifests
            if m["kind"] in ("Deployment", "StatefulSet")]


VARIANTS = variants()


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_manifest_is_valid_for_the_pinned_kubernetes(variant: str) -> None:
    for manifest in everything(*VARIANTS[variant]):
        kv.validate(manifest, K8S_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_child_is_labelled_and_namespaced(variant: str) -> None:
    name, spec = VARIANTS[variant]
    for manifest in everything(name, spec):
        labels = manifest["metadata"]["labels"]
        assert manifest["metadata"]["namespace"] == NAMESPACE
        assert labels[names.L_ARCH] == name and labels[names.L_MANAGED_BY] == names.MANAGER
        assert labels == names.labels(name, labels[names.L_COMPONENT]), ref(manifest)


@pytest.mark.parametrize("variant", VARIANTS)
def test_my_pods_declare_resources_and_probes(variant: str) -> None:
    """Security is test_hardening.py's (every pod, the database's too); this is the rest of the contract."""
    name, spec = VARIANTS[variant]
    mine = [m for m in build_all(name, NAMESPACE, spec, SETTINGS, STUB_CDN_CONF)
            if m["metadata"]["labels"][names.L_COMPONENT] != names.DATABASE]
    for _, pod in pod_specs(mine):
        for c in pod["containers"]:
            assert c["resources"]["requests"], c["name"]
            assert "readinessProbe" in c and "livenessProbe" in c, c["name"]


def test_app_env_is_the_documented_contract() -> None:
    """The connection contract (docs/connecting.md) by secretKeyRef, the CA's path, the demo app's knobs."""
    name, spec = VARIANTS["minimal"]
    env = {e["name"]: e for e in app.app_env(name, spec)}
    assert set(env) == set(app.RESERVED_ENV) == {
        "DATABASE_URL", "DATABASE_RO_URL", "REDIS_URL", "ARCHOP_CA_FILE",
        "DEMOAPP_PORT", "DEMOAPP_METRICS_PORT", "DEMOAPP_CACHE_TTL_SECONDS"}

    def ref_of(var: str) -> dict[str, str]:
        assert "value" not in env[var]  # the URLs hold passwords: never a literal value
        return env[var]["valueFrom"]["secretKeyRef"]

    assert ref_of("DATABASE_URL") == {"name": "shop-db-app", "key": "uri"}
    assert ref_of("DATABASE_RO_URL") == {"name": "shop-db-app", "key": "ro-uri"}
    assert ref_of("REDIS_URL") == {"name": "shop-cache", "key": "url"}
    # The URIs name the CA file where the pod mounts ConfigMap shop-db-ca; REDIS_URL's client is told apart.
    assert env["ARCHOP_CA_FILE"]["value"] == f"{app.DB_CA_DIR}/ca.crt" == tls.CLIENT_CA_FILE
    (dep, *_) = app.build_app(name, NAMESPACE, spec, "a", "n", "h")
    pod = dep["spec"]["template"]["spec"]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "db-ca"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "db-ca"]
    assert (mount["mountPath"], volume["configMap"]["name"]) == (app.DB_CA_DIR, "shop-db-ca")
    secret = {s["metadata"]["name"]: s["stringData"] for s in build_secrets(name, NAMESPACE)}
    assert f"sslrootcert={tls.CLIENT_CA_FILE}" in secret["shop-db-app"]["uri"]
    assert env["DEMOAPP_PORT"]["value"] == "8080" and env["DEMOAPP_CACHE_TTL_SECONDS"]["value"] == "30"
    # No cache, no REDIS_URL: the app knows there is none.
    off = dataclasses.replace(spec, cache=dataclasses.replace(spec.cache, enabled=False))
    assert "REDIS_URL" not in {e["name"] for e in app.app_env(name, off)}


OWN_APP = {
    "image": "registry.local:5000/team/api:1.4.2",
    "command": ["/app/api"], "args": ["serve", "--listen", ":9000"], "port": 9000,
    "readinessPath": "/ready?deep=1", "livenessPath": "/live",
    "env": [{"name": "LOG_LEVEL", "value": "debug"}, {"name": "EMPTY"},
            {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "api-keys", "key": "primary"}}},
            {"name": "FEATURES", "valueFrom": {"configMapKeyRef": {"name": "flags", "key": "list",
                                                                   "optional": True}}}],
    "envFrom": [{"configMapRef": {"name": "api-config"}},
                {"secretRef": {"name": "api-extra", "optional": True}}],
}


def test_your_own_app_gets_its_command_env_probes_and_the_contract() -> None:
    spec = ArchitectureSpec.parse({"app": OWN_APP})
    (dep, *_) = app.build_app("shop", NAMESPACE, spec, "registry.local:5000/team/api:1.4.2", "n", "h")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert (c["image"], c["command"], c["args"]) == (
        OWN_APP["image"], ["/app/api"], ["serve", "--listen", ":9000"])
    env = [e["name"] for e in c["env"]]
    # The contract first, then the user's, in their order, as they wrote them.
    assert env[:len(app.app_env("shop", ArchitectureSpec()))] == [e["name"] for e in app.app_env(
        "shop", ArchitectureSpec())]
    assert c["env"][-4:] == [
        {"name": "LOG_LEVEL", "value": "debug"}, {"name": "EMPTY", "value": ""},
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "api-keys", "key": "primary"}}},
        {"name": "FEATURES",
         "valueFrom": {"configMapKeyRef": {"name": "flags", "key": "list", "optional": True}}}]
    assert len(env) == len(set(env))
    assert c["envFrom"] == [{"configMapRef": {"name": "api-config"}},
                            {"secretRef": {"name": "api-extra", "optional": True}}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready?deep=1", "port": 9000}
    assert c["livenessProbe"]["httpGet"] == {"path": "/live", "port": 9000}
    # The demo app keeps its paths and the image's entrypoint.
    (demo, *_) = app.build_app("shop", NAMESPACE, ArchitectureSpec(), "a", "n", "h")
    d = demo["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in d and "args" not in d and "envFrom" not in d
    assert (d["readinessProbe"]["httpGet"]["path"], d["livenessProbe"]["httpGet"]["path"]) == (
        "/readyz", "/healthz")


def test_no_app_tier_builds_no_app_cdn_or_ingress_and_prunes_them() -> None:
    spec = ArchitectureSpec.parse({"app": {"enabled": False}})
    assert not spec.cdn.enabled and not spec.ingress.enabled  # they follow the app
    built = build_all("shop", NAMESPACE, spec, SETTINGS, STUB_CDN_CONF)
    assert not [ref(m) for m in built
                if m["metadata"]["labels"][names.L_COMPONENT] in (names.APP, names.INGRESS)]
    assert ("networking.k8s.io/v1", "NetworkPolicy", "shop-app") not in {ref(m) for m in built}
    assert {("apps/v1", "StatefulSet", "shop-db"), ("apps/v1", "Deployment", "shop-cache")} <= {
        ref(m) for m in built}
    absent = {ref(m) for m in absent_optional_children("shop", NAMESPACE, built)}
    assert {("apps/v1", "Deployment", "shop-app"), ("v1", "Service", "shop-app"),
            ("policy/v1", "PodDisruptionBudget", "shop-app"),
            ("autoscaling/v2", "HorizontalPodAutoscaler", "shop-app"),
            ("networking.k8s.io/v1", "NetworkPolicy", "shop-app"), ("v1", "ConfigMap", "shop-cdn"),
            ("networking.k8s.io/v1", "Ingress", "shop-ingress")} == absent - {
        ("apps/v1", "Deployment", "shop-cache"), ("v1", "Service", "shop-cache"),
        ("networking.k8s.io/v1", "NetworkPolicy", "shop-cache")}
    # The Secrets of the contract are made all the same: an app of your own uses them.
    assert {s["metadata"]["name"] for s in build_secrets("shop", NAMESPACE)} >= {"shop-db-app", "shop-cache"}
    # An explicit true that slipped past the CRD is ignored, not built.
    sneaky = ArchitectureSpec.parse({"app": {"enabled": False}, "cdn": {"enabled": True},
                                     "ingress": {"enabled": True}})
    assert not sneaky.cdn.enabled and not sneaky.ingress.enabled


def _by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in manifests}


def test_service_targets_the_sidecar_only_when_the_cdn_runs() -> None:
    name, spec = VARIANTS["minimal"]
    with_cdn = _by_kind(app.build_app(name, NAMESPACE, spec, "a", "n", "h"))
    no_cdn_spec = dataclasses.replace(spec, cdn=dataclasses.replace(spec.cdn, enabled=False))
    without = _by_kind(app.build_app(name, NAMESPACE, no_cdn_spec, "a", "n", "h"))
    assert with_cdn["Service"]["spec"]["ports"][0]["targetPort"] == spec.cdn.port
    assert without["Service"]["spec"]["ports"][0]["targetPort"] == spec.app.port
    pod = with_cdn["Deployment"]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["app", "cdn"]
    sidecar = pod["containers"][1]
    assert sidecar["command"] == [
        "nginx", "-e", "stderr", "-c", "/etc/archop-cdn/nginx.conf", "-g", "daemon off;"]
    assert sidecar["securityContext"]["runAsUser"] == 101
    mounts = {m["mountPath"] for m in sidecar["volumeMounts"]}
    assert mounts == {"/etc/archop-cdn", "/var/cache/nginx", "/tmp"}
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/cdn-health", "port": spec.cdn.port}
    assert [c["name"] for c in without["Deployment"]["spec"]["template"]["spec"]["containers"]] == ["app"]


def test_metrics_port_is_never_behind_the_service() -> None:
    """/metrics has its own container port; the Service (so the Ingress and the CDN) reaches only the API."""
    name, spec = VARIANTS["minimal"]
    for app_port, cdn_port in ((8080, 8081), (9102, 8081), (9102, 9103), (8080, 9102)):
        s = dataclasses.replace(spec, app=dataclasses.replace(spec.app, port=app_port),
                                cdn=dataclasses.replace(spec.cdn, port=cdn_port))
        objs = _by_kind(app.build_app(name, NAMESPACE, s, "a", "n", "h"))
        container = objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert ports["metrics"] not in (app_port, cdn_port)
        assert env["DEMOAPP_METRICS_PORT"] == str(ports["metrics"])
        service_ports = {p["targetPort"] for p in objs["Service"]["spec"]["ports"]}
        assert ports["metrics"] not in service_ports


def test_cdn_config_change_rolls_the_pods() -> None:
    name, spec = VARIANTS["minimal"]
    a = app.deployment(name, NAMESPACE, spec, "a", "n", content_hash("listen 8081;"))
    b = app.deployment(name, NAMESPACE, spec, "a", "n", content_hash("listen 8082;"))
    key = app.CDN_HASH_ANNOTATION
    def annotation(dep: dict[str, Any]) -> str:
        return dep["spec"]["template"]["metadata"]["annotations"][key]

    assert annotation(a) != annotation(b)


def test_autoscaler_owns_replicas_and_pdb_needs_two_pods() -> None:
    _, prod = VARIANTS["production"]
    kinds = _by_kind(app.build_app("shop", NAMESPACE, prod, "a", "n", "h"))
    assert "replicas" not in kinds["Deployment"]["spec"]
    hpa = kinds["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 65
    assert kinds["PodDisruptionBudget"]["spec"]["minAvailable"] == 1

    _, bare = VARIANTS["bare"]
    kinds = _by_kind(app.build_app("bare", NAMESPACE, bare, "a", "n", "h"))
    assert kinds["Deployment"]["spec"]["replicas"] == 1
    assert "PodDisruptionBudget" not in kinds and "HorizontalPodAutoscaler" not in kinds


def test_cache_runs_redis_as_configured() -> None:
    _, prod = VARIANTS["production"]
    dep, svc = cache.build_cache("shop", NAMESPACE, prod, "redis:7")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    args = c["args"]
    assert args[args.index("--maxmemory") + 1] == "256mb"
    assert args[args.index("--maxmemory-policy") + 1] == "allkeys-lfu"
    assert "--requirepass" not in args and "env" not in c  # the password comes from the mounted file
    assert c["command"] == ["sh", "-c", cache.start_script(), "redis-server"]
    assert {"name": "auth", "mountPath": cache.AUTH_DIR, "readOnly": True} in c["volumeMounts"]
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["auth"]["secret"] == {"secretName": "shop-cache", "defaultMode": 0o440,
                                         "items": [{"key": "password", "path": "password"}]}
    assert c["readinessProbe"]["exec"]["command"] == ["sh", "-c", cache.ping_script()]
    assert c["securityContext"]["runAsUser"] == 999
    # TLS only: plain TCP off, the server certificate from Secret shop-cache-tls, no client certificates.
    assert args[args.index("--port") + 1] == "0" and args[args.index("--tls-port") + 1] == "6379"
    assert args[args.index("--tls-auth-clients") + 1] == "no"
    assert args[args.index("--tls-protocols") + 1] == "TLSv1.3"
    for flag, file in (("--tls-cert-file", "tls.crt"), ("--tls-key-file", "tls.key"),
                       ("--tls-ca-cert-file", "ca.crt")):
        assert args[args.index(flag) + 1] == f"{cache.TLS_DIR}/{file}"
    assert {"name": "tls", "mountPath": cache.TLS_DIR, "readOnly": True} in c["volumeMounts"]
    # Root-owned (the kubelet), group fsGroup 999 (the redis user): readable by Redis and nobody else.
    assert volumes["tls"]["secret"] == {"secretName": "shop-cache-tls", "defaultMode": 0o440, "items": [
        {"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"},
        {"key": "ca.crt", "path": "ca.crt"}]}
    assert dep["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 999
    # The probes speak TLS too, verifying the server against the CA; the password stays in the file.
    assert f"redis-cli --tls --cacert {cache.TLS_DIR}/ca.crt -p 6379" in cache.ping_script()
    assert c["livenessProbe"]["exec"]["command"] == ["sh", "-c", cache.ping_script()]
    assert dep["spec"]["replicas"] == 1 and svc["spec"]["ports"][0]["port"] == 6379
    _, bare = VARIANTS["bare"]
    assert cache.build_cache("bare", NAMESPACE, bare, "redis:7") == []


def test_ingress_routes_to_the_app_service() -> None:
    _, prod = VARIANTS["production"]
    (ing,) = ingress.build_ingress("shop", NAMESPACE, prod)
    rule = ing["spec"]["rules"][0]
    assert rule["host"] == "shop.example.com" and ing["spec"]["ingressClassName"] == "traefik"
    path = rule["http"]["paths"][0]
    assert path["pathType"] == "Prefix" and path["backend"]["service"]["name"] == "shop-app"
    assert ing["spec"]["tls"] == [{"hosts": ["shop.example.com"], "secretName": "shop-example-com-tls"}]
    name, catch_all = VARIANTS["catch-all-tls"]
    (ing,) = ingress.build_ingress(name, NAMESPACE, catch_all)
    assert "host" not in ing["spec"]["rules"][0] and "tls" not in ing["spec"]


def test_disabled_tiers_are_pruned_and_enabled_ones_are_not() -> None:
    name, spec = VARIANTS["bare"]
    absent = {ref(m) for m in absent_optional_children(name, NAMESPACE, build_all(
        name, NAMESPACE, spec, SETTINGS, STUB_CDN_CONF))}
    assert absent == {
        ("apps/v1", "Deployment", "bare-cache"), ("v1", "Service", "bare-cache"),
        ("networking.k8s.io/v1", "NetworkPolicy", "bare-cache"), ("v1", "ConfigMap", "bare-cdn"),
        ("policy/v1", "PodDisruptionBudget", "bare-app"),
        ("autoscaling/v2", "HorizontalPodAutoscaler", "bare-app"),
        ("networking.k8s.io/v1", "Ingress", "bare-ingress"),  # the app runs: its Deployment and Service stay
        # A single database instance has no disruption budgets: nobody to hand over to.
        ("policy/v1", "PodDisruptionBudget", "bare-db-leader"),
        ("policy/v1", "PodDisruptionBudget", "bare-db-followers")}
    name, prod = VARIANTS["production"]
    assert absent_optional_children(name, NAMESPACE, build_all(name, NAMESPACE, prod, SETTINGS, "x")) == []


def test_a_drain_never_evicts_the_leader_and_takes_one_follower_at_a_time() -> None:
    name, prod = VARIANTS["production"]
    budgets = {m["metadata"]["name"]: m["spec"] for m in build_all(name, NAMESPACE, prod, SETTINGS, "x")
               if m["kind"] == "PodDisruptionBudget"}
    leader, followers = budgets[names.db_leader_budget(name)], budgets[names.db_followers_budget(name)]
    assert leader == {"minAvailable": 1,
                      "selector": {"matchLabels": names.role_selector(name, names.LEADER)}}
    # One follower may go: minAvailable is the followers less one (maxUnavailable would count the leader's
    # pod as expected too, through the StatefulSet's scale, and allow nothing).
    assert followers["minAvailable"] == prod.database.followers - 1
    assert followers["selector"]["matchLabels"] == names.role_selector(name, names.FOLLOWER)
    # A fenced old leader is in neither: a drain may take it.
    assert all(names.FENCED not in b["selector"]["matchLabels"].values() for b in budgets.values())


def test_build_all_contains_every_conventional_child() -> None:
    name, spec = VARIANTS["minimal"]
    got = {(m["kind"], m["metadata"]["name"]) for m in build_all(name, NAMESPACE, spec, SETTINGS, "x")}
    assert {("StatefulSet", "shop-db"), ("Service", "shop-db-rw"), ("Service", "shop-db-ro"),
            ("Service", "shop-db-r"), ("Service", "shop-db-headless"), ("Deployment", "shop-cache"),
            ("Service", "shop-cache"), ("Deployment", "shop-app"), ("Service", "shop-app"),
            ("PodDisruptionBudget", "shop-app"), ("ConfigMap", "shop-cdn"), ("Ingress", "shop-ingress"),
            ("NetworkPolicy", "shop-db"), ("NetworkPolicy", "shop-cache"),
            ("NetworkPolicy", "shop-app")} <= got


def test_secrets_are_fresh_random_and_complete() -> None:
    first, second = build_secrets("shop", NAMESPACE), build_secrets("shop", NAMESPACE)
    assert [s["metadata"]["name"] for s in first] == [
        "shop-db-superuser", "shop-db-replication", "shop-db-app", "shop-cache"]
    passwords = [s["stringData"]["password"] for s in first + second]
    assert len(set(passwords)) == 8 and all(len(p) == 48 for p in passwords)
    assert [s["stringData"].get("username") for s in first] == ["postgres", "replicator", "app", None]
    # The contract Secrets carry every key of docs/connecting.md; the others only username and password.
    keys = [set(s["stringData"]) for s in first]
    assert keys[0] == keys[1] == {"username", "password"}
    assert keys[2] == {"username", "password", "host", "port", "dbname", "user", "uri", "jdbc-uri", "ro-host",
                       "ro-uri", "pgpass"}
    assert keys[3] == {"password", "host", "port", "url"}


@pytest.mark.parametrize(
    ("size", "limit"), [("100m", "150Mi"), ("1g", "1536Mi"), ("512k", "1Mi"), ("10", "1Mi")])
def test_cdn_cache_volume_has_head_room(size: str, limit: str) -> None:
    assert app.cache_volume_limit(size) == limit


def test_cdn_configmap_carries_the_rendered_conf() -> None:
    name, spec = VARIANTS["minimal"]
    (cm,) = cdn.build_cdn(name, NAMESPACE, spec, STUB_CDN_CONF)
    assert cm["metadata"]["name"] == "shop-cdn" and cm["data"] == {"nginx.conf": STUB_CDN_CONF}
    _, bare = VARIANTS["bare"]
    assert cdn.build_cdn("bare", NAMESPACE, bare, STUB_CDN_CONF) == []
