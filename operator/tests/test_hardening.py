"""Every pod the operator builds is hardened and keeps its passwords out of env, argv and reprs.

Two parts: Pod Security Standard `restricted` (pss.restricted_violations, the official rules) plus archop's
own rules on top (numeric ids matching the images, read-only root filesystems, writable paths only on
volumes); and where secrets may live (files of read-only volumes; never env, argv, or a repr).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from archop.build import build_all, cache
from archop.build import database as db
from archop.build.secrets import build_secrets
from archop.failover.act import follower_conninfo
from archop.handlers.monitor import DbMonitor
from archop.health.probe import Target, Verify
from archop.spec import ArchitectureSpec
from buildfixtures import NAMESPACE, SETTINGS, STUB_CDN_CONF, counting_passwords, example_specs
from pss import restricted_violations

# The images' users (uid = gid). Postgres and Redis: the official images' 999, which the offline images built
# from Debian packages keep (e2e/cluster/build-images.sh); nginx: 101, likewise; the app: 10001 (Dockerfile).
IMAGE_UIDS = {"postgres": 999, "fence": 999, "redis": 999, "cdn": 101, "app": 10001}
# The app reads its two passwords from its environment, inside the connection contract's URLs (DATABASE_URL,
# DATABASE_RO_URL, REDIS_URL; docs/connecting.md): the only password env the operator builds, by secretKeyRef.
APP_PASSWORD_ENV = {("app", "DATABASE_URL"), ("app", "DATABASE_RO_URL"), ("app", "REDIS_URL")}
# The keys of the generated Secrets that hold a password, alone or in a connection string (build/secrets.py).
PASSWORD_KEYS = {"password", "uri", "ro-uri", "jdbc-uri", "pgpass", "url"}


def variants() -> dict[str, tuple[str, ArchitectureSpec]]:
    out = dict(example_specs())
    out["bare"] = ("bare", ArchitectureSpec.parse({
        "cache": {"enabled": False}, "cdn": {"enabled": False}, "ingress": {"enabled": False},
        "app": {"replicas": 1}, "database": {"followers": 0}}))
    out["autoscaled"] = ("auto", ArchitectureSpec.parse({"app": {"autoscaling": {"enabled": True}}}))
    return out


VARIANTS = variants()


def built(variant: str) -> list[dict[str, Any]]:
    name, spec = VARIANTS[variant]
    return build_all(name, NAMESPACE, spec, SETTINGS, STUB_CDN_CONF, current_leader=None)


def pod_templates(manifests: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(kind/name, template metadata, pod spec) of every pod any manifest would create, whatever its kind."""
    out = []
    for m in manifests:
        where = f"{m['kind']}/{m['metadata']['name']}"
        if m["kind"] == "Pod":
            out.append((where, m["metadata"], m["spec"]))
        elif m["kind"] == "CronJob":
            t = m["spec"]["jobTemplate"]["spec"]["template"]
            out.append((where, t.get("metadata") or {}, t["spec"]))
        elif "template" in (m.get("spec") or {}):
            t = m["spec"]["template"]
            out.append((where, t.get("metadata") or {}, t["spec"]))
    return out


def _count_pod_specs(node: Any) -> int:
    """Every dict anywhere with a `containers` list: a pod spec, however deeply nested."""
    if isinstance(node, dict):
        return int(isinstance(node.get("containers"), list)) + sum(_count_pod_specs(v) for v in node.values())
    if isinstance(node, list):
        return sum(_count_pod_specs(v) for v in node)
    return 0


def containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod.get(kind) or []


def archop_violations(pod: dict[str, Any]) -> list[str]:
    """archop's rules beyond `restricted`: explicit numeric ids that match the image (no image USER is
    trusted), a read-only root filesystem, /tmp on an emptyDir, config and secrets mounted read-only."""
    out: list[str] = []
    psc = pod.get("securityContext") or {}
    for f in ("runAsUser", "runAsGroup", "fsGroup"):
        if not (isinstance(psc.get(f), int) and psc[f] > 0):
            out.append(f"pod securityContext.{f} must be a non-zero number, not {psc.get(f)!r}")
    if psc.get("runAsNonRoot") is not True:
        out.append("pod securityContext.runAsNonRoot must be true")
    if psc.get("seccompProfile") != {"type": "RuntimeDefault"}:
        out.append("pod securityContext.seccompProfile must be RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        out.append("automountServiceAccountToken must be false")
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for c in containers(pod):
        sc = c.get("securityContext") or {}
        name = c["name"]
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        gid = sc.get("runAsGroup", psc.get("runAsGroup"))
        if name not in IMAGE_UIDS:
            out.append(f"{name}: an unknown container (add its image's user to IMAGE_UIDS)")
        elif (uid, gid) != (IMAGE_UIDS[name], IMAGE_UIDS[name]):
            out.append(f"{name}: runs as {uid}:{gid}, its image's user is {IMAGE_UIDS[name]}")
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{name}: readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False or sc.get("capabilities") != {"drop": ["ALL"]}:
            out.append(f"{name}: allowPrivilegeEscalation false and capabilities drop ALL, explicitly")
        mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
        tmp = mounts.get("/tmp")
        if tmp is None or "emptyDir" not in volumes.get(tmp["name"], {}):
            out.append(f"{name}: /tmp must be an emptyDir (the root filesystem is read-only)")
        for path, m in mounts.items():
            v = volumes.get(m["name"], {})
            if {"secret", "projected", "configMap"} & set(v) and m.get("readOnly") is not True:
                out.append(f"{name}: {path} ({m['name']}) holds config or secrets: mount it read-only")
    return out


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_pod_template_is_found(variant: str) -> None:
    """No pod escapes the checks below: every pod spec in the output is one of pod_templates()."""
    manifests = built(variant)
    templates = pod_templates(manifests)
    assert len(templates) == _count_pod_specs(manifests)
    kinds = {where.split("/")[0] for where, _, _ in templates}
    assert "StatefulSet" in kinds and "Deployment" in kinds  # the database and the app at least


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_pod_meets_pod_security_restricted(variant: str) -> None:
    for where, meta, pod in pod_templates(built(variant)):
        assert restricted_violations(pod, meta.get("annotations")) == [], where


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_pod_meets_archops_own_rules(variant: str) -> None:
    for where, _, pod in pod_templates(built(variant)):
        assert archop_violations(pod) == [], where


def test_the_database_pod_is_checked_too() -> None:
    """The database pod was once skipped: it is one of the templates, with both its containers."""
    names = {where: [c["name"] for c in containers(pod)] for where, _, pod in pod_templates(built("minimal"))}
    assert names["StatefulSet/shop-db"] == ["postgres", "fence"]
    assert names["Deployment/shop-cache"] == ["redis"] and names["Deployment/shop-app"] == ["app", "cdn"]


def _good_pod() -> dict[str, Any]:
    return copy.deepcopy(next(pod for where, _, pod in pod_templates(built("minimal"))
                              if where == "StatefulSet/shop-db"))


def _first(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["containers"][0].setdefault("securityContext", {})


BREAKAGES = {
    "privileged": lambda p: _first(p).update(privileged=True),
    "escalation": lambda p: _first(p).update(allowPrivilegeEscalation=True),
    "escalation unset": lambda p: _first(p).pop("allowPrivilegeEscalation"),
    "capabilities kept": lambda p: _first(p).pop("capabilities"),
    "capability added": lambda p: _first(p).update(capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
    "root": lambda p: _first(p).update(runAsUser=0),
    "root pod": lambda p: p["securityContext"].update(runAsUser=0),
    "runAsNonRoot false": lambda p: _first(p).update(runAsNonRoot=False),
    "runAsNonRoot nowhere": lambda p: [p["securityContext"].pop("runAsNonRoot"),
                                       *(c["securityContext"].pop("runAsNonRoot") for c in p["containers"])],
    "unconfined": lambda p: _first(p).update(seccompProfile={"type": "Unconfined"}),
    "seccomp nowhere": lambda p: [p["securityContext"].pop("seccompProfile"),
                                  *(c["securityContext"].pop("seccompProfile") for c in p["containers"])],
    "hostPath": lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}),
    "hostNetwork": lambda p: p.update(hostNetwork=True),
    "hostPID": lambda p: p.update(hostPID=True),
    "hostPort": lambda p: p["containers"][0]["ports"][0].update(hostPort=5432),
    "procMount": lambda p: _first(p).update(procMount="Unmasked"),
    "selinux user": lambda p: _first(p).update(seLinuxOptions={"user": "root"}),
    "sysctl": lambda p: p["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
    "apparmor": lambda p: _first(p).update(appArmorProfile={"type": "Unconfined"}),
    "init container": lambda p: p.update(initContainers=[{"name": "init", "image": "x"}]),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_the_restricted_check_catches_each_rule(breakage: str) -> None:
    pod = _good_pod()
    assert restricted_violations(pod) == []
    BREAKAGES[breakage](pod)
    assert restricted_violations(pod) != []


def test_the_old_database_pod_would_fail() -> None:
    """The pod as it was before hardening (pod-level ids only) is refused by both checks."""
    pod = _good_pod()
    pod["securityContext"] = {"runAsUser": 999, "runAsGroup": 999, "fsGroup": 999, "runAsNonRoot": True}
    for c in pod["containers"]:
        del c["securityContext"]
    assert restricted_violations(pod) and archop_violations(pod)


def test_archops_rules_catch_a_writable_root_and_a_wrong_uid() -> None:
    pod = _good_pod()
    _first(pod)["readOnlyRootFilesystem"] = False
    pod["containers"][1]["securityContext"]["runAsUser"] = 1000
    got = archop_violations(pod)
    assert any("readOnlyRootFilesystem" in v for v in got) and any("runs as 1000" in v for v in got)


# ------------------------------------------------------------------------------------------ secrets

# A kubelet reference $(VAR) in command/args is expanded from the container's env: the value would be in argv.
KUBELET_REF = re.compile(r"\$\([A-Za-z_][A-Za-z0-9_]*\)")
PASSWORD_VAR = re.compile(r"\$\{?\(?[A-Za-z_]*(PASSWORD|PASSWD|REDISCLI_AUTH)", re.IGNORECASE)


def _commands(c: dict[str, Any]) -> list[str]:
    words = [*(c.get("command") or []), *(c.get("args") or [])]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        words += ((c.get(probe) or {}).get("exec") or {}).get("command") or []
    for hook in ("postStart", "preStop"):
        words += (((c.get("lifecycle") or {}).get(hook) or {}).get("exec") or {}).get("command") or []
    return words


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_password_in_any_container_env(variant: str) -> None:
    """The operator's own variables, that is: spec.app.env and spec.app.envFrom are the user's choice, passed
    through as written (test_build_properties.py), and stay out of this check."""
    _, spec = VARIANTS[variant]
    users = {e.name for e in spec.app.env}
    for where, _, pod in pod_templates(built(variant)):
        for c in containers(pod):
            # A whole Secret would include its password key: only the user's own envFrom, on the app.
            assert c.get("envFrom", []) == ([e.manifest() for e in spec.app.env_from] if c["name"] == "app"
                                            else []), (where, c["name"])
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef") or {}
                if (c["name"], e["name"]) in APP_PASSWORD_ENV or (c["name"] == "app" and e["name"] in users):
                    continue
                assert ref.get("key") not in PASSWORD_KEYS, (where, c["name"], e["name"])
                assert not re.search("PASSWORD|PASSWD|AUTH", e["name"]), (where, c["name"], e["name"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_password_reference_in_any_command(variant: str) -> None:
    """Commands, args, exec probes and hooks: no $(VAR) the kubelet would expand, no password variable."""
    for where, _, pod in pod_templates(built(variant)):
        for c in containers(pod):
            for word in _commands(c):
                assert not KUBELET_REF.search(word), (where, c["name"], word)
                assert not PASSWORD_VAR.search(word), (where, c["name"], word)
                assert "$$" not in word, (where, c["name"])  # the kubelet would turn it into $


@pytest.mark.parametrize("variant", VARIANTS)
def test_password_files_are_read_only_and_private(variant: str) -> None:
    """Every volume carrying a Secret: mounted read-only, no bits for others (owner root, group fsGroup)."""
    for where, _, pod in pod_templates(built(variant)):
        secret_volumes = {}
        for v in pod.get("volumes") or []:
            if "secret" in v:
                secret_volumes[v["name"]] = v["secret"].get("defaultMode", 0o644)
            elif any("secret" in s for s in (v.get("projected") or {}).get("sources", [])):
                secret_volumes[v["name"]] = v["projected"].get("defaultMode", 0o644)
        for name, mode in secret_volumes.items():
            assert mode & 0o7 == 0 and mode & 0o222 == 0, (where, name, oct(mode))
        for c in containers(pod):
            for m in c.get("volumeMounts") or []:
                if m["name"] in secret_volumes:
                    assert m.get("readOnly") is True, (where, c["name"], m["name"])


def test_no_built_manifest_holds_a_password_value() -> None:
    """The Secrets are the only manifests with the password values in them (connection strings included)."""
    for variant, (name, spec) in VARIANTS.items():
        secrets = build_secrets(name, NAMESPACE, password=counting_passwords())
        values = {s["stringData"]["password"] for s in secrets}
        assert all(v in s["stringData"][k] for s in secrets for k in PASSWORD_KEYS & set(s["stringData"])
                   for v in [s["stringData"]["password"]])
        text = json.dumps(build_all(name, NAMESPACE, spec, SETTINGS, STUB_CDN_CONF))
        assert not [v for v in values if v in text], variant


def test_the_database_passwords_are_files_the_start_script_reads() -> None:
    """build/database.py mounts exactly the files start.sh reads ($SECRETS_DIR/<user>-password)."""
    start = db.script("start.sh")
    assert 'secret_file() { echo "$SECRETS_DIR/$1-password"; }' in start
    assert "SECRETS_DIR=${ARCHOP_SECRETS_DIR:-" + db.SECRETS_DIR + "}" in start
    assert set(db.PASSWORD_FILES.values()) == {f"{u}-password" for u in ("superuser", "replication", "app")}
    for script in ("start.sh", "fence.sh"):
        assert not PASSWORD_VAR.search(db.script(script)), script


def test_the_redis_scripts_read_the_mounted_file() -> None:
    for text in (cache.start_script(), cache.ping_script()):
        assert f"$(cat {cache.PASSWORD_FILE})" in text
    assert cache.PASSWORD_FILE.startswith(cache.AUTH_DIR + "/")


def test_probe_target_repr_never_shows_the_password() -> None:
    t = Target(host="10.0.0.7", port=5432, user="postgres", password="s3cret-pw")
    for text in (repr(t), str(t), f"{t}", repr([t]), repr({"pod": t})):
        assert "s3cret-pw" not in text
        assert "10.0.0.7" in text  # still useful in a log line
    assert t.kwargs(1.0, None)["password"] == "s3cret-pw"  # and still used to connect


def test_a_verified_target_dials_the_address_and_checks_the_name() -> None:
    t = Target(host="10.0.0.7", password="s3cret-pw", verify=Verify("shop-db-0.shop-db-headless.demo.svc",
                                                                   "/tmp/ca.crt"))
    kw = t.kwargs(1.0, None)
    assert (kw["host"], kw["hostaddr"], kw["sslmode"], kw["sslrootcert"]) == (
        "shop-db-0.shop-db-headless.demo.svc", "10.0.0.7", "verify-full", "/tmp/ca.crt")
    assert "s3cret-pw" not in repr(t)
    conninfo = follower_conninfo("shop-db-0.shop-db-headless.demo.svc", 5432, "replicator", "shop-db-1",
                                 "/p/archop.pgpass", hostaddr="10.0.0.7",
                                 sslrootcert="/etc/archop-tls/ca.crt")
    assert "sslmode=verify-full sslrootcert=/etc/archop-tls/ca.crt" in conninfo
    assert "host=shop-db-0.shop-db-headless.demo.svc hostaddr=10.0.0.7" in conninfo


def test_the_monitor_makes_no_target_without_the_ca() -> None:
    mon = DbMonitor("shop", "demo", "uid", api=None, logger=logging.getLogger("t"))
    mon.secret = ("postgres", "pw")
    assert mon._target_at("shop-db-0", "10.0.0.7") is None  # fail closed: never probed unverified
    mon._write_ca("-----BEGIN CERTIFICATE-----\n")
    try:
        assert mon.ca_file is not None and (os.stat(mon.ca_file).st_mode & 0o777) == 0o600
        t = mon._target_at("shop-db-0", "10.0.0.7")
        assert t is not None and t.verify == Verify("shop-db-0.shop-db-headless.demo.svc", mon.ca_file)
    finally:
        mon.forget_ca()
    assert mon.ca_file is None
