"""The Helm chart (charts/archop), checked with the real tools: helm lint, helm template and kubeconform.

- The chart's CRD copy must be byte-identical to crds/ (scripts/sync-crds.sh writes it).
- Rendered manifests are validated strictly by kubeconform against local schemas only (no network):
  built-in kinds against the Kubernetes JSON schemas shipped by the `kubernetes-validate` package (for the
  cluster version pinned in e2e/cluster/versions.env), Architectures against a schema converted from the
  CRD's openAPIV3Schema.
- values.schema.json must reject bad values with a clear message.

Tools: HELM and KUBECONFORM from the environment, defaulting to /var/cache/archop/bin/{helm,kubeconform}, then
PATH. A missing tool fails the tests that need it (`make test` installs both first).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from archop import config, names

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "archop"
CRD_SOURCE = ROOT / "crds" / "archop.io_architectures.yaml"
CRD_COPY = CHART / "files" / "archop.io_architectures.yaml"
EXAMPLES = ROOT / "examples"
DASHBOARD = ROOT / "dashboards" / "grafana-archop.json"
CONFIG_PY = ROOT / "operator" / "archop" / "config.py"
VERSIONS_ENV = ROOT / "e2e" / "cluster" / "versions.env"
NAMESPACE = "archop-system"
RELEASE = "archop"

# Kinds that come from the prometheus-operator CRDs: no schema offline, checked structurally below instead.
MONITORING_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")

ALL_FEATURES: dict[str, Any] = {
    "priorityClassName": "system-cluster-critical",
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "replicationLagThresholdBytes": 1048576},
    },
    "networkPolicy": {
        "enabled": True,
        "metricsFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
        "apiServer": {"cidrs": ["10.96.0.1/32", "172.18.0.2/32"]},
    },
    "operandNetworkPolicies": {
        "ingressController": {"namespace": "ingress-nginx", "cidrs": ["172.18.0.2/32"],
                              "podLabels": {"app.kubernetes.io/name": "ingress-nginx",
                                            "app.kubernetes.io/component": "controller"}},
        "metricsScraperNamespaces": ["monitoring"],
    },
    "images": {
        "postgres": "registry.local/postgres:15.8",
        "redis": "registry.local/redis:7.4",
        "nginx": "registry.local/nginx:1.27.1",
        "app": "registry.local/archop/demoapp:0.1.0",
    },
    "image": {"repository": "registry.local/archop", "tag": "0.1.0-test"},
}


# ---------------------------------------------------------------------------------------------- tools


def _tool(env_name: str, binary: str) -> str:
    candidates = [os.environ.get(env_name), f"/var/cache/archop/bin/{binary}", shutil.which(binary)]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(f"{binary} not found (`make chart-tools` installs it; or set {env_name})")


@pytest.fixture(scope="module")
def helm() -> str:
    return _tool("HELM", "helm")


@pytest.fixture(scope="module")
def kubeconform() -> str:
    return _tool("KUBECONFORM", "kubeconform")


def _kube_version() -> str:
    """The cluster version e2e runs (K8S_VERSION in versions.env), without the leading v."""
    match = re.search(r"^K8S_VERSION=v?([0-9.]+)", VERSIONS_ENV.read_text(), re.M)
    assert match, f"K8S_VERSION missing from {VERSIONS_ENV}"
    return match.group(1)


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kwargs)


def _template(helm: str, tmp_path: Path, values: dict[str, Any] | None = None, *extra: str) -> str:
    cmd = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", _kube_version()]
    if values is not None:
        values_file = tmp_path / f"values-{len(list(tmp_path.glob('values-*.yaml')))}.yaml"
        values_file.write_text(yaml.safe_dump(values))
        cmd += ["--values", str(values_file)]
    result = _run([*cmd, *extra])
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    return result.stdout


def _docs(rendered: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in _by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chart")


@pytest.fixture(scope="module")
def default_render(helm: str, module_tmp: Path) -> str:
    return _template(helm, module_tmp)


@pytest.fixture(scope="module")
def full_render(helm: str, module_tmp: Path) -> str:
    return _template(helm, module_tmp, ALL_FEATURES)


# ------------------------------------------------------------------------------------------ CRD copy


def test_crd_copy_is_byte_identical_to_the_source() -> None:
    assert CRD_SOURCE.is_file(), f"{CRD_SOURCE} is missing"
    assert CRD_COPY.is_file(), f"{CRD_COPY} is missing: run scripts/sync-crds.sh"
    assert CRD_COPY.read_bytes() == CRD_SOURCE.read_bytes(), (
        f"{CRD_COPY.relative_to(ROOT)} drifted from {CRD_SOURCE.relative_to(ROOT)}: run scripts/sync-crds.sh"
    )


def test_sync_script_check_mode_agrees() -> None:
    result = _run(["bash", str(ROOT / "scripts" / "sync-crds.sh"), "--check"])
    assert result.returncode == 0, result.stderr


def test_rendered_crd_is_the_source_plus_keep_policy(default_render: str) -> None:
    crd = _one(_docs(default_render), "CustomResourceDefinition")
    source = next(doc for doc in yaml.safe_load_all(CRD_SOURCE.read_text()) if doc)
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    stripped = copy.deepcopy(crd)
    stripped["metadata"].pop("labels")
    stripped["metadata"]["annotations"].pop("helm.sh/resource-policy")
    if not stripped["metadata"]["annotations"]:
        stripped["metadata"].pop("annotations")
    assert stripped == source, "the rendered CRD differs from crds/ beyond labels and the keep annotation"
    assert crd["spec"]["names"]["shortNames"] == ["arch"]


def test_crd_install_can_be_turned_off(helm: str, tmp_path: Path) -> None:
    docs = _docs(_template(helm, tmp_path, {"crds": {"install": False}}))
    assert not _by_kind(docs, "CustomResourceDefinition")


# ------------------------------------------------------------------------------------------ helm lint


@pytest.mark.parametrize("features", ["defaults", "all-features", "namespaced"])
def test_helm_lint(helm: str, tmp_path: Path, features: str) -> None:
    cmd = [helm, "lint", str(CHART), "--strict", "--namespace", NAMESPACE, "--kube-version", _kube_version()]
    if features != "defaults":
        values_file = tmp_path / "values.yaml"
        values = ALL_FEATURES if features == "all-features" else {"watchNamespaces": ["shop", "team-b"]}
        values_file.write_text(yaml.safe_dump(values))
        cmd += ["--values", str(values_file)]
    result = _run(cmd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


# ------------------------------------------------------------------------------------------ Deployment


def _operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = _one(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_operator_deployment_shape(default_render: str) -> None:
    docs = _docs(default_render)
    deployment = _one(docs, "Deployment", f"{RELEASE}")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] == 2
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    # ... and hard spreading: one node loss never takes both operators.
    (spread,) = pod["topologySpreadConstraints"]
    assert (spread["topologyKey"], spread["maxSkew"], spread["whenUnsatisfiable"]) == (
        "kubernetes.io/hostname", 1, "DoNotSchedule")
    assert spread["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert "priorityClassName" not in pod

    container = _operator_container(docs)
    assert container["args"] == ["run"]
    assert "command" not in container, "the image's entrypoint is archop"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9090, "health": 8080}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]


def test_operator_pods_carry_the_label_the_operand_network_policies_admit(helm: str, tmp_path: Path) -> None:
    try:
        from archop.build.policy import OPERATOR_APP_NAME
    except ImportError:
        OPERATOR_APP_NAME = "archop"
    docs = _docs(_template(helm, tmp_path, {"fullnameOverride": "ops"}))
    deployment = _one(docs, "Deployment", "ops")
    assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == OPERATOR_APP_NAME


def _assert_hardened(pod: dict[str, Any]) -> None:
    pod_sc = pod["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == 10001
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_every_pod_is_hardened(full_render: str) -> None:
    docs = _docs(full_render)
    _assert_hardened(_one(docs, "Deployment")["spec"]["template"]["spec"])
    test_pod = _one(docs, "Pod")
    _assert_hardened(test_pod["spec"])
    assert test_pod["spec"]["automountServiceAccountToken"] is False


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_env_names_are_exactly_those_config_py_reads(default_render: str) -> None:
    env = _env(_operator_container(_docs(default_render)))
    read = set(re.findall(r'"(ARCHOP_[A-Z_]+)"', CONFIG_PY.read_text()))
    written = {name for name in env if name.startswith("ARCHOP_")}
    assert written <= read, f"the chart sets variables config.py never reads: {sorted(written - read)}"
    for required in (
        "ARCHOP_POSTGRES_IMAGE",
        "ARCHOP_REDIS_IMAGE",
        "ARCHOP_NGINX_IMAGE",
        "ARCHOP_APP_IMAGE",
        "ARCHOP_NAMESPACE",
        "ARCHOP_POD_NAME",
        "ARCHOP_METRICS_PORT",
        "ARCHOP_HEALTH_PORT",
        "ARCHOP_LEADER_ELECTION",
        "ARCHOP_LEASE_DURATION_SECONDS",
        "ARCHOP_RENEW_DEADLINE_SECONDS",
        "ARCHOP_RETRY_PERIOD_SECONDS",
    ):
        assert required in env, f"{required} is not set by the chart"
    assert env["ARCHOP_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["ARCHOP_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_default_values_parse_into_the_config_defaults(default_render: str) -> None:
    """The chart's defaults are the operator's: Settings.from_env on the rendered env changes nothing."""
    env = {k: v for k, v in _env(_operator_container(_docs(default_render))).items() if isinstance(v, str)}
    env["ARCHOP_POD_NAME"] = "archop-0"
    env["ARCHOP_NAMESPACE"] = NAMESPACE
    settings = config.Settings.from_env(env)
    defaults = config.Settings()
    for field in (
        "postgres_image",
        "redis_image",
        "nginx_image",
        "app_image",
        "metrics_port",
        "health_port",
        "kopf_liveness_port",
        "leader_election",
        "lease_name",
        "lease_duration_seconds",
        "renew_deadline_seconds",
        "retry_period_seconds",
        "monitor_interval_seconds",
        "ingress_namespace",
        "ingress_pod_labels",
        "ingress_cidrs",
        "dns_namespace",
        "dns_pod_labels",
        "metrics_scraper_namespaces",
    ):
        assert getattr(settings, field) == getattr(defaults, field), field
    # The chart adds its instance label to what the operands admit; the defaults' labels are all there.
    assert set(defaults.operator_pod_labels) < set(settings.operator_pod_labels)
    assert settings.identity == "archop-0"
    assert settings.lease_name == "archop-operator"


def test_image_overrides_reach_the_operator_and_its_env(full_render: str) -> None:
    container = _operator_container(_docs(full_render))
    assert container["image"] == "registry.local/archop:0.1.0-test"
    env = _env(container)
    assert env["ARCHOP_POSTGRES_IMAGE"] == "registry.local/postgres:15.8"
    assert env["ARCHOP_REDIS_IMAGE"] == "registry.local/redis:7.4"
    assert env["ARCHOP_NGINX_IMAGE"] == "registry.local/nginx:1.27.1"
    assert env["ARCHOP_APP_IMAGE"] == "registry.local/archop/demoapp:0.1.0"
    pod = _one(_docs(full_render), "Deployment")["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-cluster-critical"


def test_image_digest_wins_over_tag(helm: str, tmp_path: Path) -> None:
    digest = "sha256:" + "a" * 64
    docs = _docs(_template(helm, tmp_path, {"image": {"digest": digest}}))
    assert _operator_container(docs)["image"] == f"archop/operator@{digest}"


# ------------------------------------------------------------------------------------------ RBAC
# Pinned by hand here; operator/tests/test_permissions.py also checks the rendered rules against
# operator/archop/permissions.py and that table against the API calls in the source.

RBAC_KINDS = ("ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding")

EXPECTED_FRAMEWORK = [
    {"apiGroups": ["archop.io"], "resources": ["architectures"], "verbs": ["list", "watch", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
_SSA_PRUNE = ["create", "patch", "delete"]  # server-side apply (patch; create when new), pruning
EXPECTED_APPLICATION = [
    {"apiGroups": ["archop.io"], "resources": ["architectures"], "verbs": ["get", "patch"]},
    {"apiGroups": ["archop.io"], "resources": ["architectures/status"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "patch"]},
    # patch: volume growth (apply.grow_volumes) asks for the bigger size on each PVC.
    {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["list", "patch", "delete"]},
    # get: every child is read by name first, the ownership check (archop.ownership).
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", *_SSA_PRUNE]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", *_SSA_PRUNE]},
    {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get", "create", "patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", *_SSA_PRUNE]},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["get", *_SSA_PRUNE]},
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": ["get", *_SSA_PRUNE]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": ["get", *_SSA_PRUNE]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", *_SSA_PRUNE]},
    # One name, read only: whether the release that claimed an Architecture is alive.
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["archop-operator"],
     "verbs": ["get"]},
]
EXPECTED_NODES = [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]
EXPECTED_LEASE = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": ["archop-operator"],
        "verbs": ["get", "update"],
    },
]
WATCHED = ["shop", "team-b"]


@pytest.fixture(scope="module")
def namespaced_render(helm: str, module_tmp: Path) -> str:
    return _template(helm, module_tmp, {"watchNamespaces": WATCHED})


def _render(which: str, default_render: str, full_render: str, namespaced_render: str) -> str:
    return {"default": default_render, "full": full_render, "namespaced": namespaced_render}[which]


def _walk_strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _walk_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_strings(item)
    elif isinstance(node, str):
        yield node


@pytest.mark.parametrize(("which", "count"), [("default", 8), ("full", 8), ("namespaced", 12)])
def test_rbac_has_no_wildcard_anywhere(default_render: str, full_render: str, namespaced_render: str,
                                       which: str, count: int) -> None:
    docs = _docs(_render(which, default_render, full_render, namespaced_render))
    rbac = [d for d in docs if d["kind"] in RBAC_KINDS]
    assert len(rbac) == count
    for doc in rbac:
        offending = [s for s in _walk_strings(doc) if "*" in s]
        assert not offending, f"{doc['kind']} {doc['metadata']['name']} has a wildcard: {offending}"


def _bindings_bind_the_service_account(docs: list[dict[str, Any]]) -> None:
    sa = _one(docs, "ServiceAccount")["metadata"]["name"]
    for binding in _by_kind(docs, "ClusterRoleBinding") + _by_kind(docs, "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]


def test_rbac_rules_are_exactly_least_privilege(default_render: str) -> None:
    docs = _docs(default_render)
    framework = _one(docs, "ClusterRole", f"{RELEASE}-framework")
    application = _one(docs, "ClusterRole", f"{RELEASE}-application")
    nodes = _one(docs, "ClusterRole", f"{RELEASE}-nodes")
    lease = _one(docs, "Role", f"{RELEASE}-leader-election")
    assert framework["rules"] == EXPECTED_FRAMEWORK
    assert application["rules"] == EXPECTED_APPLICATION
    assert nodes["rules"] == EXPECTED_NODES
    assert lease["rules"] == EXPECTED_LEASE
    assert lease["metadata"]["namespace"] == NAMESPACE
    every_resource = {
        r for doc in (framework, application, nodes) for rule in doc["rules"] for r in rule["resources"]
    }
    assert "customresourcedefinitions" not in every_resource, "kopf runs with scanning disabled"
    assert "namespaces" not in every_resource, "kopf runs with scanning disabled"
    assert "pods/exec" not in every_resource, "failover uses SQL, not exec"
    secrets = next(rule for rule in application["rules"] if rule["resources"] == ["secrets"])
    assert secrets["verbs"] == ["get", "create", "patch"], "Secrets are read by name only, never listed"

    _bindings_bind_the_service_account(docs)
    role_refs = {(b["roleRef"]["kind"], b["roleRef"]["name"]) for b in docs if b["kind"].endswith("Binding")}
    assert role_refs == {
        ("ClusterRole", f"{RELEASE}-framework"),
        ("ClusterRole", f"{RELEASE}-application"),
        ("ClusterRole", f"{RELEASE}-nodes"),
        ("Role", f"{RELEASE}-leader-election"),
    }


def test_volume_growth_is_granted(default_render: str, namespaced_render: str) -> None:
    """The reconcile patches each database PVC to grow it (apply.grow_volumes): without patch the API
    server refused every growth (VolumeGrowthRefused: forbidden)."""
    for render in (default_render, namespaced_render):
        for role in _docs(render):
            if role["kind"] in ("ClusterRole", "Role") and role["metadata"]["name"].endswith("-application"):
                pvc = [r for r in role["rules"] if r["resources"] == ["persistentvolumeclaims"]]
                assert pvc and "patch" in pvc[0]["verbs"]


def test_namespaced_mode_grants_roles_per_watched_namespace(namespaced_render: str) -> None:
    docs = _docs(namespaced_render)
    # Cluster-wide: Nodes (list) only. No Secret, Pod or workload right outside the watched namespaces.
    (cluster_role,) = _by_kind(docs, "ClusterRole")
    assert cluster_role["metadata"]["name"] == f"{RELEASE}-nodes" and cluster_role["rules"] == EXPECTED_NODES
    (cluster_binding,) = _by_kind(docs, "ClusterRoleBinding")
    assert cluster_binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                          "name": f"{RELEASE}-nodes"}
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r["rules"] for r in _by_kind(docs, "Role")}
    expected = {(NAMESPACE, f"{RELEASE}-leader-election"): EXPECTED_LEASE}
    for namespace in WATCHED:
        expected[(namespace, f"{RELEASE}-framework")] = EXPECTED_FRAMEWORK
        expected[(namespace, f"{RELEASE}-application")] = EXPECTED_APPLICATION
    assert roles == expected
    bindings = {(b["metadata"]["namespace"], b["metadata"]["name"]): b["roleRef"]
                for b in _by_kind(docs, "RoleBinding")}
    assert bindings == {key: {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": key[1]}
                        for key in expected}
    _bindings_bind_the_service_account(docs)
    env = _env(_operator_container(docs))
    assert env["ARCHOP_WATCH_NAMESPACES"] == ",".join(WATCHED)


def test_cluster_wide_mode_sets_no_watched_namespaces(default_render: str) -> None:
    assert "ARCHOP_WATCH_NAMESPACES" not in _env(_operator_container(_docs(default_render)))


def test_watched_namespaces_parse_into_the_settings(namespaced_render: str) -> None:
    env = {k: v for k, v in _env(_operator_container(_docs(namespaced_render))).items() if isinstance(v, str)}
    assert config.Settings.from_env(env).watch_namespaces == tuple(WATCHED)


def test_lease_name_matches_names_py() -> None:
    assert EXPECTED_LEASE[1]["resourceNames"][0] == names.LEASE_NAME
    assert EXPECTED_APPLICATION[-1]["resourceNames"] == [names.LEASE_NAME]


def test_other_releases_leases_are_read_only_and_by_name(default_render: str) -> None:
    """The claim check reads the Lease of the release that claimed an Architecture, in any namespace:
    get only, and only Leases named archop-operator."""
    application = _one(_docs(default_render), "ClusterRole", f"{RELEASE}-application")
    leases = [rule for rule in application["rules"] if "leases" in rule["resources"]]
    assert leases == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                       "resourceNames": ["archop-operator"], "verbs": ["get"]}]


# ------------------------------------------------------------------------------------------ one release

# The install-time check (templates/_single_release.tpl) reads Helm's `lookup`, which answers nothing without
# a cluster and cannot be stubbed in `helm template`. So its logic lives in two pure templates,
# archop.otherRelease (which Deployment belongs to another release) and archop.failOnOtherRelease (the
# message); PROBE renders them in a throwaway chart fed with DeploymentLists as values, the way `lookup`
# would answer. Only the one-line `lookup` call itself is left to e2e (e2e/tests/test_two_releases.py).
PROBE = """\
{{- $deployments := .Values.deployments | default dict }}
{{- $me := dict "release" .Release.Name "namespace" .Release.Namespace }}
{{- $args := merge (dict "deployments" $deployments "name" (include "archop.name" .)) $me }}
{{- $other := include "archop.otherRelease" $args }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: probe
data:
  other: {{ $other | quote }}
{{- include "archop.failOnOtherRelease" (merge (dict "other" $other) $me) }}
"""


def _operator_deployment(namespace: str, release: str, name: str | None = None) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "archop", "app.kubernetes.io/instance": release,
              "app.kubernetes.io/component": "operator"}
    return {"metadata": {"name": name or f"{release}-archop", "namespace": namespace, "labels": labels}}


def _probe(helm: str, tmp_path: Path, deployments: dict[str, Any] | None, release: str = RELEASE,
           namespace: str = NAMESPACE) -> subprocess.CompletedProcess[str]:
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: archop\nversion: 0.1.0\n")
    for helper in ("_helpers.tpl", "_single_release.tpl"):
        shutil.copy(CHART / "templates" / helper, chart / "templates" / helper)
    (chart / "templates" / "probe.yaml").write_text(PROBE)
    values = tmp_path / "probe-values.yaml"
    values.write_text(yaml.safe_dump({"deployments": deployments}))
    return _run([helm, "template", release, str(chart), "--namespace", namespace, "--values", str(values)])


def test_the_deployment_template_runs_the_single_release_check() -> None:
    first = (CHART / "templates" / "deployment.yaml").read_text().splitlines()[0]
    assert first == '{{- include "archop.singleRelease" . }}'
    helper = (CHART / "templates" / "_single_release.tpl").read_text()
    assert 'lookup "apps/v1" "Deployment" "" ""' in helper


def test_without_a_cluster_the_chart_still_renders(helm: str, tmp_path: Path) -> None:
    """`helm template` and a client-side dry run: lookup answers nothing, nothing to refuse."""
    docs = _docs(_template(helm, tmp_path))
    assert _one(docs, "Deployment")["metadata"]["name"] == RELEASE
    result = _run([helm, "install", "second", str(CHART), "--namespace", "elsewhere", "--dry-run=client"])
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("deployments", "release", "namespace"),
    [
        ({}, RELEASE, NAMESPACE),  # lookup without a cluster
        ({"items": []}, RELEASE, NAMESPACE),  # a cluster without archop
        ({"items": [_operator_deployment(NAMESPACE, RELEASE)]}, RELEASE, NAMESPACE),  # upgrading itself
        # The operands' Deployments and other apps are no releases.
        ({"items": [{"metadata": {"name": "shop-app", "namespace": "shop",
                                  "labels": {"app.kubernetes.io/name": "demoapp"}}},
                    {"metadata": {"name": "bare", "namespace": "x"}},
                    {"metadata": {"name": "web", "namespace": "other", "labels": {
                        "app.kubernetes.io/name": "archop", "app.kubernetes.io/component": "web"}}}]},
         RELEASE, NAMESPACE),
    ],
    ids=["no-cluster", "empty-cluster", "same-release", "unrelated-deployments"],
)
def test_single_release_check_lets_these_through(helm: str, tmp_path: Path, deployments: dict[str, Any],
                                                 release: str, namespace: str) -> None:
    result = _probe(helm, tmp_path, deployments, release, namespace)
    assert result.returncode == 0, result.stderr
    assert _one(_docs(result.stdout), "ConfigMap")["data"]["other"] == ""


@pytest.mark.parametrize(
    ("existing", "release", "namespace"),
    [
        (_operator_deployment("archop-system", "archop", "archop"), "second", "team-b"),
        (_operator_deployment("team-a", "ops"), "archop", "archop-system"),
        # Two releases in one namespace would share the Lease, yet run with different settings by turns.
        (_operator_deployment("archop-system", "archop", "archop"), "again", "archop-system"),
    ],
    ids=["other-namespace", "other-release-name", "same-namespace-other-release"],
)
def test_single_release_check_refuses_a_second_release(helm: str, tmp_path: Path, existing: dict[str, Any],
                                                       release: str, namespace: str) -> None:
    mine = _operator_deployment(namespace, release)
    result = _probe(helm, tmp_path, {"items": [mine, existing]}, release, namespace)
    assert result.returncode != 0, f"{release} in {namespace} rendered next to {existing}"
    other_ns = existing["metadata"]["namespace"]
    other = existing["metadata"]["labels"]["app.kubernetes.io/instance"]
    assert f"another archop release already runs an operator in namespace {other_ns}" in result.stderr
    assert f"release {other}, Deployment {existing['metadata']['name']}" in result.stderr
    assert f"helm uninstall {other} -n {other_ns}" in result.stderr
    assert f"helm upgrade {other} charts/archop -n {other_ns}" in result.stderr


# ------------------------------------------------------------------------------------------ optional parts


def test_defaults_render_no_optional_monitoring_but_the_networkpolicy(default_render: str) -> None:
    kinds = {d["kind"] for d in _docs(default_render)}
    assert kinds == {
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "Pod",
        "NetworkPolicy",
    }
    service = _one(_docs(default_render), "Service", f"{RELEASE}-metrics")
    assert {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"} in service["spec"][
        "ports"
    ]


TEST_POD = {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": RELEASE,
                                            "app.kubernetes.io/component": "test"}}}


def _egress_by_port(policy: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {p["port"]: rule for rule in policy["spec"]["egress"] for p in rule["ports"]}


def test_default_networkpolicy_denies_all_but_what_the_operator_needs(default_render: str) -> None:
    docs = _docs(default_render)
    policy = _one(docs, "NetworkPolicy", RELEASE)
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == _one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    # Ingress: the health and metrics ports, from the helm test pod only (no scraper configured).
    ingress = {rule["ports"][0]["port"]: rule for rule in spec["ingress"]}
    assert set(ingress) == {"health", "metrics"}
    assert all(len(rule["ports"]) == 1 for rule in spec["ingress"])
    assert ingress["health"]["from"] == [TEST_POD] and ingress["metrics"]["from"] == [TEST_POD]
    # Egress: DNS to the cluster DNS pods only, UDP and TCP.
    egress = _egress_by_port(policy)
    assert set(egress) == {53, 443, 6443, 5432, 6379}
    assert egress[53]["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    kube_system = {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}
    assert egress[53]["to"] == [{"namespaceSelector": kube_system,
                                 "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    # The API server: no cidrs set, so any address but only on its ports.
    assert "to" not in egress[443] and egress[443] is egress[6443]
    # Postgres and Redis: only pods the operator built, in any namespace (nothing is watched selectively).
    for port, component in ((5432, "database"), (6379, "cache")):
        assert egress[port]["ports"] == [{"port": port, "protocol": "TCP"}]
        assert egress[port]["to"] == [{"namespaceSelector": {}, "podSelector": {"matchLabels": {
            "app.kubernetes.io/managed-by": "archop", "app.kubernetes.io/component": component}}}]
    # Nothing open to any destination on any port, and no app port: the operator never calls the app.
    assert all(rule.get("ports") for rule in spec["egress"])
    assert 8080 not in egress


def test_networkpolicy_follows_the_watched_namespaces(namespaced_render: str) -> None:
    egress = _egress_by_port(_one(_docs(namespaced_render), "NetworkPolicy"))
    for port in (5432, 6379):
        (peer,) = egress[port]["to"]
        assert peer["namespaceSelector"] == {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": WATCHED}]}


def test_cluster_dns_labels_replace_the_default_in_the_policy_and_the_env(helm: str, tmp_path: Path) -> None:
    dns = {"namespace": "dns", "podLabels": {"app": "unbound"}}
    docs = _docs(_template(helm, tmp_path, {"clusterDNS": dns}))
    (peer,) = _egress_by_port(_one(docs, "NetworkPolicy"))[53]["to"]
    assert peer == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dns"}},
                    "podSelector": {"matchLabels": {"app": "unbound"}}}
    env = _env(_operator_container(docs))
    assert (env["ARCHOP_DNS_NAMESPACE"], env["ARCHOP_DNS_POD_LABELS"]) == ("dns", "app=unbound")


def test_networkpolicy_can_be_turned_off(helm: str, tmp_path: Path) -> None:
    docs = _docs(_template(helm, tmp_path, {"networkPolicy": {"enabled": False}}))
    assert not _by_kind(docs, "NetworkPolicy")


def test_operand_network_policy_peers_reach_the_operator_env(default_render: str, full_render: str) -> None:
    env = _env(_operator_container(_docs(default_render)))
    assert env["ARCHOP_OPERATOR_POD_LABELS"] == (
        f"app.kubernetes.io/component=operator,app.kubernetes.io/instance={RELEASE},app.kubernetes.io/name=archop")
    assert (env["ARCHOP_INGRESS_NAMESPACE"], env["ARCHOP_INGRESS_POD_LABELS"]) == ("traefik", "app=traefik")
    assert (env["ARCHOP_DNS_NAMESPACE"], env["ARCHOP_DNS_POD_LABELS"]) == ("kube-system", "k8s-app=kube-dns")
    assert "ARCHOP_INGRESS_CIDRS" not in env and "ARCHOP_METRICS_SCRAPER_NAMESPACES" not in env
    env = _env(_operator_container(_docs(full_render)))
    assert env["ARCHOP_INGRESS_NAMESPACE"] == "ingress-nginx"
    assert env["ARCHOP_INGRESS_POD_LABELS"] == (
        "app.kubernetes.io/component=controller,app.kubernetes.io/name=ingress-nginx")
    assert env["ARCHOP_INGRESS_CIDRS"] == "172.18.0.2/32"
    assert env["ARCHOP_METRICS_SCRAPER_NAMESPACES"] == "monitoring"
    settings = config.Settings.from_env({k: v for k, v in env.items() if isinstance(v, str)})
    assert settings.ingress_cidrs == ("172.18.0.2/32",)
    assert dict(settings.operator_pod_labels)["app.kubernetes.io/instance"] == RELEASE


def test_the_operator_pod_labels_env_is_the_deployments_selector(helm: str, tmp_path: Path) -> None:
    """What the operands admit is exactly what the operator pods carry, whatever the release is called."""
    docs = _docs(_template(helm, tmp_path, {"fullnameOverride": "ops"}))
    deployment = _one(docs, "Deployment", "ops")
    env = _env(_operator_container(docs))
    pairs = dict(item.split("=", 1) for item in env["ARCHOP_OPERATOR_POD_LABELS"].split(","))
    assert pairs == deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pairs.items() <= pod_labels.items()
    test_pod = _one(docs, "Pod")
    assert not pairs.items() <= test_pod["metadata"]["labels"].items(), "the helm test pod must not match"


def test_all_optional_features_render(full_render: str) -> None:
    docs = _docs(full_render)
    selector = _one(docs, "Deployment")["spec"]["selector"]["matchLabels"]

    service_monitor = _one(docs, "ServiceMonitor")
    assert service_monitor["metadata"]["labels"]["release"] == "prometheus"
    assert service_monitor["spec"]["selector"]["matchLabels"] == selector
    assert service_monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert service_monitor["spec"]["endpoints"][0]["honorLabels"] is True
    pod_monitor = _one(docs, "PodMonitor")
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"

    rules = {r["alert"]: r for g in _one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]}
    assert rules["LeaderDown"]["expr"] == "archop_leader_up == 0" and rules["LeaderDown"]["for"] == "30s"
    assert rules["FailoverOccurred"]["expr"] == "increase(archop_failovers_total[10m]) > 0"
    assert rules["ReplicationLagHigh"]["expr"] == "archop_replication_lag_bytes > 1048576"
    assert rules["ReplicationLagHigh"]["for"] == "2m"
    assert rules["ArchitectureNotReady"]["expr"] == "archop_architecture_ready == 0"
    assert rules["ArchitectureNotReady"]["for"] == "5m"
    for rule in rules.values():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert "{{ $labels" in rule["annotations"]["summary"] or rule["alert"] == "OperatorNoLeader"

    policy = _one(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"] == selector
    ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports == {"metrics", "health"}
    metrics_rule = next(rule for rule in policy["spec"]["ingress"] if rule["ports"][0]["port"] == "metrics")
    assert metrics_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}, TEST_POD]
    egress_ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert {53, 443, 6443, 5432, 6379} == egress_ports
    api_rule = next(
        rule for rule in policy["spec"]["egress"] if {"port": 443, "protocol": "TCP"} in rule["ports"]
    )
    assert api_rule["to"] == [{"ipBlock": {"cidr": "10.96.0.1/32"}}, {"ipBlock": {"cidr": "172.18.0.2/32"}}]


def test_helm_test_hook_pod(default_render: str) -> None:
    pod = _one(_docs(default_render), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["command"][0] == "/opt/venv/bin/python"
    script = container["args"][0]
    compile(script, "helm-test", "exec")
    assert f"http://{RELEASE}-metrics.{NAMESPACE}.svc" in script
    assert "/healthz" in script and "/metrics" in script


def test_notes_render_next_steps(helm: str) -> None:
    result = _run([helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client"])
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kubectl get arch" in notes
    assert "kubectl get events --field-selector involvedObject.kind=Architecture -w" in notes
    assert "examples/minimal.yaml" in notes
    assert f"helm test {RELEASE}" in notes


# ------------------------------------------------------------------------------------------ values schema


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicaCount=-1"], "/replicaCount"),
        (["--set", "replicaCount=two"], "/replicaCount"),
        (["--set", "unknownKey=1"], "additional properties 'unknownKey' not allowed"),
        (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (["--set", "metrics.port=70000"], "/metrics/port"),
        (["--set", "podAntiAffinity=always"], "/podAntiAffinity"),
        (["--set", "securityContext.runAsNonRoot=false"], "/securityContext/runAsNonRoot"),
        (
            ["--set", "securityContext.readOnlyRootFilesystem=false"],
            "/securityContext/readOnlyRootFilesystem",
        ),
        (["--set", "podSecurityContext.runAsUser=0"], "/podSecurityContext/runAsUser"),
        (["--set", "monitoring.serviceMonitor.interval=often"], "/monitoring/serviceMonitor/interval"),
        (["--set", "monitoring.serviceMonitor.extra=1"], "additional properties 'extra' not allowed"),
        (["--set", "leaderElection.enabled=maybe"], "/leaderElection/enabled"),
        (["--set", "watchNamespaces=shop"], "/watchNamespaces"),
        (["--set", "watchNamespaces={Shop}"], "/watchNamespaces/0"),
        (["--set", "watchNamespaces={shop,shop}"], "/watchNamespaces"),
        (["--set", "networkPolicy.apiServer.cidrs={172.18.0.2}"], "/networkPolicy/apiServer/cidrs/0"),
        (["--set", "operandNetworkPolicies.ingressController.cidrs={traefik}"],
         "/operandNetworkPolicies/ingressController/cidrs/0"),
        (["--set", "operandNetworkPolicies.ingressController.namespace=Traefik"],
         "/operandNetworkPolicies/ingressController/namespace"),
        (["--set", "operandNetworkPolicies.ingressController.podLabels=null"],
         "/operandNetworkPolicies/ingressController"),
        (["--set", "clusterDNS.podLabels.k8s-app=kube dns"], "/clusterDNS/podLabels/k8s-app"),
        (["--set", "operandNetworkPolicies.metricsScraperNamespaces={Monitoring}"],
         "/operandNetworkPolicies/metricsScraperNamespaces/0"),
        (["--set", "networkPolicy.operandPorts.app=8080"], "additional properties 'app' not allowed"),
    ],
)
def test_values_schema_rejects_bad_values(helm: str, args: list[str], message: str) -> None:
    result = _run([helm, "template", RELEASE, str(CHART), "--kube-version", _kube_version(), *args])
    assert result.returncode != 0, f"{args} rendered although the schema should reject it"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "leaderElection.renewDeadlineSeconds=20"], "must be greater than"),
        (["--set", "leaderElection.retryPeriodSeconds=9"], "must exceed 1.2 x"),
        (["--set", "leaderElection.enabled=false"], "needs leaderElection.enabled=true"),
        (
            ["--set", "monitoring.serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"],
            "needs metrics.service.enabled=true",
        ),
    ],
)
def test_inconsistent_values_fail_with_a_clear_message(helm: str, args: list[str], message: str) -> None:
    result = _run([helm, "template", RELEASE, str(CHART), "--kube-version", _kube_version(), *args])
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_single_replica_without_leader_election_renders(helm: str, tmp_path: Path) -> None:
    docs = _docs(_template(helm, tmp_path, {"replicaCount": 1, "leaderElection": {"enabled": False}}))
    assert _one(docs, "Deployment")["spec"]["replicas"] == 1
    assert not _by_kind(docs, "PodDisruptionBudget")
    assert _env(_operator_container(docs))["ARCHOP_LEADER_ELECTION"] == "false"


# ------------------------------------------------------------------------------------------ kubeconform

_K8S_FORMATS = {"date-time", "date", "time", "email", "hostname", "ipv4", "ipv6", "uri", "uuid", "duration"}


def crd_to_json_schema(node: Any) -> Any:
    """Turn a structural openAPIV3Schema into plain JSON schema with Kubernetes' semantics made explicit:
    unknown fields are errors (unless x-kubernetes-preserve-unknown-fields), int-or-string, nullable."""
    if isinstance(node, list):
        return [crd_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key == "format" and value not in _K8S_FORMATS:
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {name: crd_to_json_schema(sub) for name, sub in value.items()}
        else:
            out[key] = crd_to_json_schema(value)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _architecture_schemas() -> dict[str, dict[str, Any]]:
    """kubeconform file name -> JSON schema, one per served version of the CRD."""
    crd = next(doc for doc in yaml.safe_load_all(CRD_SOURCE.read_text()) if doc)
    group = crd["spec"]["group"]
    kind = crd["spec"]["names"]["kind"]
    out = {}
    for version in crd["spec"]["versions"]:
        schema = crd_to_json_schema(version["schema"]["openAPIV3Schema"])
        schema["$schema"] = "http://json-schema.org/draft-07/schema#"
        schema.setdefault("properties", {})
        schema["properties"]["apiVersion"] = {"type": "string", "enum": [f"{group}/{version['name']}"]}
        schema["properties"]["kind"] = {"type": "string", "enum": [kind]}
        schema["properties"]["metadata"] = {"type": "object"}
        schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
        # kubeconform: {{ .ResourceKind }}{{ .KindSuffix }} = kind-<first label of the group>-<version>
        out[f"{kind.lower()}-{group.split('.')[0]}-{version['name']}.json"] = schema
    return out


def _builtin_schema_dir() -> Path | None:
    """Strict JSON schemas of the pinned Kubernetes minor version, from the kubernetes-validate package."""
    try:
        import kubernetes_validate  # type: ignore[import-untyped]
    except ImportError:
        return None
    major_minor = ".".join(_kube_version().split(".")[:2])
    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    for candidate in (
        base / f"v{major_minor}.0-local-strict",
        *sorted(base.glob(f"v{major_minor}.*-local-strict")),
    ):
        if candidate.is_dir():
            return candidate
    return None


def _standalone_builtin_schema(
    source_dir: Path, file_name: str, definitions: dict[str, Any]
) -> dict[str, Any]:
    """kubernetes-validate's files point into one shared _definitions.json by an absolute URL; inline the
    reachable definitions so kubeconform resolves everything from the one local file."""
    text = (source_dir / file_name).read_text().replace('"/api/_definitions.json#/$defs/', '"#/$defs/')
    schema = json.loads(text)
    schema.pop("$id", None)
    needed: dict[str, Any] = {}
    pending = set(re.findall(r'"#/\$defs/([^"]+)"', text))
    while pending:
        name = pending.pop()
        if name in needed:
            continue
        needed[name] = definitions[name]
        pending |= set(re.findall(r'"#/\$defs/([^"]+)"', json.dumps(definitions[name]))) - needed.keys()
    schema["$defs"] = needed
    return schema


def _kubeconform_file_name(api_version: str, kind: str) -> str:
    group, _, version = api_version.rpartition("/")
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix}.json"


@pytest.fixture(scope="module")
def schema_dir(module_tmp: Path, default_render: str, full_render: str, namespaced_render: str) -> Path:
    """Local kubeconform schemas: our CRD, plus every built-in kind the chart renders."""
    out = module_tmp / "schemas"
    out.mkdir()
    for file_name, schema in _architecture_schemas().items():
        (out / file_name).write_text(json.dumps(schema))
    source = _builtin_schema_dir()
    if source is not None:
        definitions = json.loads((source / "_definitions.json").read_text())["$defs"]
        wanted = {
            _kubeconform_file_name(d["apiVersion"], d["kind"])
            for d in _docs(default_render) + _docs(full_render) + _docs(namespaced_render)
            if d["kind"] not in MONITORING_KINDS
        }
        for file_name in wanted:
            assert (source / file_name).is_file(), f"no schema {file_name} in {source}"
            (out / file_name).write_text(
                json.dumps(_standalone_builtin_schema(source, file_name, definitions))
            )
    return out


def _kubeconform_run(kubeconform: str, schema_dir: Path, files: list[Path], *extra: str) -> dict[str, Any]:
    cmd = [
        kubeconform,
        "-strict",
        "-summary",
        "-verbose",
        "-output",
        "json",
        "-schema-location",
        str(schema_dir) + "/{{ .ResourceKind }}{{ .KindSuffix }}.json",
        *extra,
        *map(str, files),
    ]
    result = _run(cmd)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"kubeconform printed no JSON report:\n{result.stdout}\n{result.stderr}")
    report["returncode"] = result.returncode
    return report


def _invalid(report: dict[str, Any]) -> list[str]:
    return [
        f"{r.get('filename')} {r.get('kind')} {r.get('name')}: {r.get('msg')}"
        for r in report.get("resources", [])
        if r.get("status") in ("statusInvalid", "statusError")
    ]


@pytest.mark.parametrize("which", ["default", "full", "namespaced"])
def test_kubeconform_rendered_chart_strict(
    kubeconform: str, schema_dir: Path, module_tmp: Path, default_render: str, full_render: str,
    namespaced_render: str, which: str
) -> None:
    if _builtin_schema_dir() is None:
        pytest.fail("kubernetes-validate (offline Kubernetes schemas, a dev dependency) is missing")
    rendered = _render(which, default_render, full_render, namespaced_render)
    manifest = module_tmp / f"rendered-{which}.yaml"
    manifest.write_text(rendered)
    report = _kubeconform_run(kubeconform, schema_dir, [manifest], "-skip", ",".join(MONITORING_KINDS))
    assert report["returncode"] == 0 and not _invalid(report), "\n".join(_invalid(report)) or report
    summary = report["summary"]
    documents = _docs(rendered)
    monitoring = sum(1 for d in documents if d["kind"] in MONITORING_KINDS)
    assert summary["valid"] == len(documents) - monitoring, summary
    assert summary["skipped"] == monitoring, summary
    assert summary["invalid"] == 0 and summary["errors"] == 0


def test_kubeconform_catches_a_broken_manifest(
    kubeconform: str, schema_dir: Path, tmp_path: Path, default_render: str
) -> None:
    """The strict validation is real: an unknown field in the Deployment is reported."""
    if _builtin_schema_dir() is None:
        pytest.fail("kubernetes-validate (offline Kubernetes schemas, a dev dependency) is missing")
    deployment = _one(_docs(default_render), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {"path": "/"}
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(deployment))
    report = _kubeconform_run(kubeconform, schema_dir, [broken])
    assert report["returncode"] != 0
    assert any("httpGett" in line for line in _invalid(report)), _invalid(report)


MINIMAL_ARCHITECTURE = {
    "apiVersion": "archop.io/v1alpha1",
    "kind": "Architecture",
    "metadata": {"name": "shop"},
    "spec": {},
}


def _architecture_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "Architecture"]


def test_kubeconform_examples_against_the_crd_schema(
    kubeconform: str, schema_dir: Path, tmp_path: Path
) -> None:
    files = sorted(EXAMPLES.glob("*.yaml")) if EXAMPLES.is_dir() else []
    own = tmp_path / "minimal-inline.yaml"
    own.write_text(yaml.safe_dump(MINIMAL_ARCHITECTURE))
    files.append(own)
    architectures = sum(len(_architecture_docs(f)) for f in files)
    # Built-in kinds in the examples (a Namespace, say) need the built-in schemas; without them, they are the
    # only thing let through unchecked.
    extra = [] if _builtin_schema_dir() is not None else ["-ignore-missing-schemas"]
    report = _kubeconform_run(kubeconform, schema_dir, files, *extra)
    assert report["returncode"] == 0 and not _invalid(report), "\n".join(_invalid(report))
    valid_architectures = [
        r for r in report["resources"] if r.get("kind") == "Architecture" and r.get("status") == "statusValid"
    ]
    assert len(valid_architectures) == architectures, report["resources"]


@pytest.mark.parametrize(
    "spec",
    [
        {"unknownField": True},
        {"database": {"followers": "two"}},
        {"database": {"followrs": 2}},
    ],
)
def test_kubeconform_rejects_bad_architectures(
    kubeconform: str, schema_dir: Path, tmp_path: Path, spec: dict[str, Any]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**MINIMAL_ARCHITECTURE, "spec": spec}))
    report = _kubeconform_run(kubeconform, schema_dir, [bad])
    assert report["returncode"] != 0
    assert _invalid(report), report


def test_crd_schema_conversion_keeps_kubernetes_semantics() -> None:
    converted = crd_to_json_schema(
        {
            "type": "object",
            "properties": {
                "size": {"x-kubernetes-int-or-string": True, "pattern": "^[0-9]+$"},
                "free": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                    "properties": {"a": {}},
                },
                "maybe": {"type": "string", "nullable": True},
                "port": {"type": "integer", "format": "int32"},
            },
        }
    )
    assert converted["additionalProperties"] is False
    assert converted["properties"]["size"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert "additionalProperties" not in converted["properties"]["free"]
    assert converted["properties"]["maybe"]["type"] == ["string", "null"]
    assert "format" not in converted["properties"]["port"]


# ------------------------------------------------------------------------------------------ dashboard

OPERATOR_METRICS = (
    "archop_reconcile_",
    "archop_failovers_total",
    "archop_failover_duration_seconds",
    "archop_replication_lag_bytes",
    "archop_leader_up",
    "archop_database_instances",
    "archop_operator_leader",
)


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs.append(target["expr"])
    return exprs


def test_dashboard_is_valid_and_covers_operator_and_app_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    text = "\n".join(_dashboard_exprs())
    for metric in OPERATOR_METRICS:
        assert metric in text, f"the dashboard shows no {metric}"
    assert "demoapp_" in text
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "architecture"} <= variables
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def _exported_metric_names(package: Path, prefix: str) -> set[str] | None:
    """Metric names a package registers with prometheus_client: Counter("name", ...) and the like."""
    if not package.is_dir():
        return None
    names: set[str] = set()
    pattern = re.compile(
        r'\b(Counter|Gauge|Histogram|Summary|Info|Enum)\(\s*["\'](' + prefix + r'[a-z0-9_]+)["\']'
    )
    for path in package.rglob("*.py"):
        for kind, name in pattern.findall(path.read_text()):
            names.add(name)
            if kind == "Histogram" or kind == "Summary":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            if kind == "Counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
    return names or None


@pytest.mark.parametrize(("package", "prefix"), [("operator/archop", "archop_"), ("app/demoapp", "demoapp_")])
def test_dashboard_metric_names_exist_in_the_code(package: str, prefix: str) -> None:
    exported = _exported_metric_names(ROOT / package, prefix)
    if exported is None:
        pytest.fail(f"{package} registers no {prefix}* metrics")
    used = set(re.findall(r"\b(" + prefix + r"[a-z0-9_]+)", "\n".join(_dashboard_exprs())))
    missing = sorted(used - exported)
    assert not missing, f"the dashboard queries metrics {package} does not export: {missing}"
