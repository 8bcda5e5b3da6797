"""Unit tests of build/database.py (pure manifests) and of the shipped scripts' syntax."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from archop import names
from archop.build import database as db
from archop.build import tls
from archop.spec import ArchitectureSpec, DatabaseSpec


def build(**dbkw) -> dict[tuple[str, str], dict]:
    spec = ArchitectureSpec(database=DatabaseSpec(**dbkw))
    return {(m["kind"], m["metadata"]["name"]): m for m in db.build_database("demo", "ns", spec, "pg:15")}


def test_children_and_names():
    out = build()
    assert set(out) == {
        ("ConfigMap", "demo-db-config"),
        ("Service", "demo-db-headless"),
        ("Service", "demo-db-rw"),
        ("Service", "demo-db-ro"),
        ("Service", "demo-db-r"),
        ("StatefulSet", "demo-db"),
        ("PodDisruptionBudget", "demo-db-leader"),
        ("PodDisruptionBudget", "demo-db-followers"),
    }
    for m in out.values():
        assert m["metadata"]["namespace"] == "ns"
        assert m["metadata"]["labels"] == names.labels("demo", names.DATABASE)


def test_services_select_by_role():
    out = build()
    assert out["Service", "demo-db-rw"]["spec"]["selector"] == names.role_selector("demo", names.LEADER)
    assert out["Service", "demo-db-ro"]["spec"]["selector"] == names.role_selector("demo", names.FOLLOWER)
    assert out["Service", "demo-db-r"]["spec"]["selector"] == names.selector("demo", names.DATABASE)
    headless = out["Service", "demo-db-headless"]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True


def test_statefulset_shape():
    sts = build(followers=3, storage_size="5Gi", storage_class="fast", reclaim_policy="Retain")[
        "StatefulSet", "demo-db"
    ]
    spec = sts["spec"]
    assert spec["replicas"] == 4
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"] == {"type": "OnDelete"}
    assert spec["serviceName"] == "demo-db-headless"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    pvc = spec["volumeClaimTemplates"][0]["spec"]
    assert pvc["resources"]["requests"]["storage"] == "5Gi" and pvc["storageClassName"] == "fast"
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 999 and pod["securityContext"]["fsGroup"] == 999
    assert pod["terminationGracePeriodSeconds"] <= 10
    spread = pod["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    # Hard: one node loss must not take the leader and a synchronous follower while other nodes are free.
    assert spread["whenUnsatisfiable"] == "DoNotSchedule" and spread["nodeTaintsPolicy"] == "Honor"
    assert pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert containers["postgres"]["command"] == ["bash", "/etc/archop/start.sh"]
    assert containers["fence"]["command"] == ["bash", "/etc/archop/fence.sh"]
    assert "pg_isready" in " ".join(containers["postgres"]["readinessProbe"]["exec"]["command"])
    assert spec["selector"]["matchLabels"] == names.selector("demo", names.DATABASE)
    assert (
        "storageClassName" not in build()["StatefulSet", "demo-db"]["spec"]["volumeClaimTemplates"][0]["spec"]
    )


def test_secrets_only_by_reference():
    text = json.dumps(list(build().values()))
    sts = build()["StatefulSet", "demo-db"]
    pod = sts["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    env = {e["name"]: e for e in containers["postgres"]["env"]}
    # User names by reference; passwords never in the environment, only as files of a read-only volume.
    assert env["POSTGRES_USER"]["valueFrom"]["secretKeyRef"] == {
        "name": "demo-db-superuser", "key": "username"}
    assert env["REPLICATION_USER"]["valueFrom"]["secretKeyRef"]["name"] == "demo-db-replication"
    assert env["APP_USER"]["valueFrom"]["secretKeyRef"]["name"] == "demo-db-app"
    assert not [n for n in env if "PASSWORD" in n]
    assert env["ARCHOP_SECRETS_DIR"]["value"] == db.SECRETS_DIR == "/etc/archop-secrets"
    assert env["ARCHOP_PRIMARY_HOST"]["value"] == "demo-db-rw.ns.svc"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["secrets"]["projected"] == {"defaultMode": 0o440, "sources": [
        {"secret": {"name": "demo-db-superuser",
                    "items": [{"key": "password", "path": "superuser-password"}]}},
        {"secret": {"name": "demo-db-replication",
                    "items": [{"key": "password", "path": "replication-password"}]}},
        {"secret": {"name": "demo-db-app", "items": [{"key": "password", "path": "app-password"}]}},
    ]}
    assert {"name": "secrets", "mountPath": db.SECRETS_DIR, "readOnly": True} in containers["postgres"][
        "volumeMounts"]
    # The lease agent talks to Postgres over the socket (trust): it gets no password at all.
    assert "secrets" not in {m["name"] for m in containers["fence"]["volumeMounts"]}
    assert '"kind": "Secret"' not in text


def test_both_containers_run_as_the_postgres_user():
    """fence.sh kills the postmaster found in the shared process namespace: the same uid, no capability."""
    pod = build()["StatefulSet", "demo-db"]["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["runAsGroup"] == db.UID == 999
    for c in pod["containers"]:
        assert c["securityContext"]["runAsUser"] == db.UID, c["name"]
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}, c["name"]


def test_config_map_carries_scripts_and_bootstrap_leader():
    data = build(followers=1)["ConfigMap", "demo-db-config"]["data"]
    assert data["bootstrap-leader"] == "demo-db-0"
    assert data["peers"].split() == [
        "demo-db-0.demo-db-headless.ns.svc:5432",
        "demo-db-1.demo-db-headless.ns.svc:5432",
    ]
    for f in db.SCRIPT_FILES:
        assert data[f] == db.script(f)
    assert "wal_log_hints = on" in data["postgresql.conf"]


def test_scale_down_never_drops_the_leader_pod():
    spec = ArchitectureSpec(database=DatabaseSpec(followers=0))
    assert db.replicas(spec) == 1
    assert db.replicas(spec, "demo-db-2") == 3
    assert db.replicas(spec, "demo-db-0") == 1
    sts = [
        m
        for m in db.build_database("demo", "ns", spec, "pg", None, "demo-db-1")
        if m["kind"] == "StatefulSet"
    ]
    assert sts[0]["spec"]["replicas"] == 2


@pytest.mark.parametrize("script", ["start.sh", "fence.sh"])
def test_scripts_parse(script: str, tmp_path):
    path = tmp_path / script
    path.write_text(db.script(script))
    subprocess.run(["bash", "-n", str(path)], check=True)


@pytest.mark.parametrize("script", ["start.sh", "fence.sh", "stop.sql"])
def test_scripts_need_no_root(script: str):
    """The pod runs as 999 with no capability and no privilege escalation: nothing may switch users or change
    ownership. chmod stays allowed on what the postgres user owns (start.sh: chmod 700 PGDATA)."""
    text = db.script(script)
    # In command position: at a line's start, after ; & | ` or $(.
    commands = r"(chown|chgrp|su|gosu|su-exec|sudo|runuser|setpriv|setcap|mount)\b"
    assert not re.search(r"(^\s*|[;&|`]\s*|\$\(\s*)" + commands, text, re.MULTILINE)
    assert [line.strip() for line in text.splitlines() if re.search(r"\bchmod\b", line)] == (
        ['chmod 700 "$PGDATA"'] if script == "start.sh" else [])


def test_tls_files_and_passfile_hosts():
    sts = build()["StatefulSet", "demo-db"]
    pod = sts["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    # Root-owned (the kubelet), group fsGroup, no write or other access: what Postgres accepts for a key.
    assert volumes["tls"]["secret"] == {"secretName": "demo-db-tls", "defaultMode": 0o440, "items": [
        {"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"},
        {"key": "ca.crt", "path": "ca.crt"}]}
    assert pod["securityContext"]["fsGroup"] == db.UID
    mounts = containers["postgres"]["volumeMounts"]
    assert {"name": "tls", "mountPath": db.TLS_DIR, "readOnly": True} in mounts
    assert "tls" not in {m["name"] for m in containers["fence"]["volumeMounts"]}
    env = {e["name"]: e for e in containers["postgres"]["env"]}
    assert env["ARCHOP_TLS_DIR"]["value"] == "/etc/archop-tls"
    assert env["ARCHOP_PASSFILE_HOSTS"]["valueFrom"]["configMapKeyRef"] == {
        "name": "demo-db-config", "key": "passfile-hosts"}
    hosts = build()["ConfigMap", "demo-db-config"]["data"]["passfile-hosts"].split()
    assert hosts[0] == "demo-db-rw.ns.svc" and "*" not in " ".join(hosts)
    assert hosts[1:] == [f"demo-db-{i}.demo-db-headless.ns.svc" for i in range(10)]


def test_a_certificate_stamp_changes_only_the_database_pod_template():
    manifests = list(build().values())
    before = json.dumps(manifests, sort_keys=True)
    plan = tls.plan("demo", "ns", {})
    tls.stamp(manifests, plan)
    sts = next(m for m in manifests if m["kind"] == "StatefulSet")
    assert sts["spec"]["template"]["metadata"]["annotations"] == {
        db.CERT_ANNOTATION: plan.revision(names.DATABASE)}
    del sts["spec"]["template"]["metadata"]["annotations"]
    assert json.dumps(manifests, sort_keys=True) == before


def test_postgres_serves_tls_and_refuses_plain_tcp():
    conf = db.script("postgresql.conf")
    assert re.search(r"^ssl = on$", conf, re.MULTILINE)
    rules = [line.split() for line in db.script("pg_hba.conf").splitlines()
             if line.strip() and not line.startswith("#")]
    remote = [r for r in rules if r[0] not in ("local",) and r[3] != "127.0.0.1/32"]
    assert {r[0] for r in remote} == {"hostssl", "hostnossl"}
    assert all(r[4] == "reject" for r in remote if r[0] == "hostnossl")
    assert {(r[1], r[3]) for r in remote if r[0] == "hostnossl"} == {
        (d, a) for d in ("all", "replication") for a in ("0.0.0.0/0", "::/0")}
    assert all(r[4] == "scram-sha-256" for r in remote if r[0] == "hostssl")
    start = db.script("start.sh")
    # Every connection to another instance verifies it; none is left on libpq's default sslmode.
    for client in ("psql", "pg_basebackup", "pg_rewind", "pg_isready -q -d", "primary_conninfo = "):
        assert client in start
    assert start.count("$CLIENT_TLS") == 5  # psql, pg_isready, primary_conninfo, pg_basebackup, pg_rewind
