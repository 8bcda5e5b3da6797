"""The Pod Security Standards' `restricted` profile (baseline included) as one pure check of a pod spec.

Written from https://kubernetes.io/docs/concepts/security/pod-security-standards/ (policy version "latest",
Kubernetes 1.34): every control, field by field, as the admission controller reads it. Kept apart from the
builders on purpose: it states the rules, the builders must meet them.
"""

from __future__ import annotations

from typing import Any

# Baseline: the capabilities a container may add (restricted narrows this to NET_BIND_SERVICE).
BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes"})
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
SECCOMP_TYPES = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_TYPES = frozenset({"RuntimeDefault", "Localhost"})
# Restricted: the only volume types; anything else (hostPath first of all) is refused.
VOLUME_TYPES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
    "secret"})
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def _containers(pod: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{kind}[{c.get('name', i)}]", c) for kind in CONTAINER_LISTS
            for i, c in enumerate(pod.get(kind) or [])]


def restricted_violations(pod: dict[str, Any], annotations: dict[str, str] | None = None) -> list[str]:
    """Every way `pod` (a PodSpec) breaks the restricted profile; [] when it passes. `annotations` are the pod
    (template) metadata's, for the AppArmor annotations."""
    out: list[str] = []
    psc = pod.get("securityContext") or {}
    containers = _containers(pod)

    # --- baseline
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("securityContext.windowsOptions.hostProcess")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            out.append(field)
    for name, value in (annotations or {}).items():
        if name.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
                value == "runtime/default" or value.startswith("localhost/")):
            out.append(f"annotation {name}={value}")
    out += _apparmor("securityContext", psc)
    out += _selinux("securityContext", psc)
    if (psc.get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append("securityContext.seccompProfile Unconfined")
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"securityContext.sysctls {sysctl.get('name')}")
    for where, c in containers:
        sc = c.get("securityContext") or {}
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{where}.securityContext.windowsOptions.hostProcess")
        if sc.get("privileged"):
            out.append(f"{where}.securityContext.privileged")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{where}.ports hostPort {port['hostPort']}")
        out += _apparmor(f"{where}.securityContext", sc)
        out += _selinux(f"{where}.securityContext", sc)
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{where}.securityContext.procMount {sc['procMount']}")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"{where}.securityContext.seccompProfile Unconfined")
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            out.append(f"{where}.securityContext.capabilities.add {sorted(added - BASELINE_CAPABILITIES)}")

    # --- restricted
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= VOLUME_TYPES:
            out.append(f"volume {volume.get('name')}: {sorted(kinds - VOLUME_TYPES)}")
    if psc.get("runAsUser") == 0:
        out.append("securityContext.runAsUser 0")
    pod_non_root = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in SECCOMP_TYPES:
        out.append(f"securityContext.seccompProfile {pod_seccomp}")
    for where, c in containers:
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}.securityContext.allowPrivilegeEscalation must be false")
        if sc.get("runAsNonRoot") is False or not (pod_non_root or sc.get("runAsNonRoot") is True):
            out.append(f"{where}: runAsNonRoot must be true (pod or container)")
        if sc.get("runAsUser") == 0:
            out.append(f"{where}.securityContext.runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp is not None and seccomp not in SECCOMP_TYPES:
            out.append(f"{where}.securityContext.seccompProfile {seccomp}")
        if seccomp is None and pod_seccomp is None:
            out.append(f"{where}: seccompProfile RuntimeDefault or Localhost (pod or container)")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{where}.securityContext.capabilities.drop must include ALL")
        added = set(caps.get("add") or [])
        if added - RESTRICTED_CAPABILITIES:
            out.append(f"{where}.securityContext.capabilities.add {sorted(added - RESTRICTED_CAPABILITIES)}")
    return out


def _apparmor(where: str, sc: dict[str, Any]) -> list[str]:
    kind = (sc.get("appArmorProfile") or {}).get("type")
    return [] if kind is None or kind in APPARMOR_TYPES else [f"{where}.appArmorProfile {kind}"]


def _selinux(where: str, sc: dict[str, Any]) -> list[str]:
    opts = sc.get("seLinuxOptions") or {}
    out = [f"{where}.seLinuxOptions.{f}" for f in ("user", "role") if opts.get(f)]
    if opts.get("type", "") not in SELINUX_TYPES:
        out.append(f"{where}.seLinuxOptions.type {opts['type']}")
    return out
