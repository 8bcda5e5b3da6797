"""Failover chaos harness for the kind cluster (python -m bench.failover, e2e/tests/test_failover.py).

Traffic never leaves the cluster: a writer pod (the Postgres image, a bash + psql loop) inserts ids through
N-db-rw and prints every acknowledged id with a timestamp; a sampler pod asks every database pod
pg_is_in_recovery() twice a second. The host only runs kubectl and docker (stop/start, network
disconnect/connect, exec) against the kind node containers it owns.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from testsupport.namespaces import namespace_manifest

KIND_NETWORK = os.environ.get("ARCHOP_KIND_NETWORK", "kind")
OPERATOR_NAMESPACE = os.environ.get("ARCHOP_OPERATOR_NAMESPACE", "archop-system")
SCENARIOS = ("pod-delete", "kill-postmaster", "node-stop", "node-partition", "leader-freeze", "operator-kill",
             "node-stop-with-operator", "partial-partition", "leader-and-sync-follower", "lagging-follower",
             "operator-freeze", "node-drain")

# Inserts one id per connection (a fresh connection each time, as an app reconnecting would).
WRITER = r"""
set -u
for d in /usr/lib/postgresql/*/bin; do [ -d "$d" ] && PATH="$d:$PATH"; done
export PGCONNECT_TIMEOUT=1 PGPASSWORD="$APP_PASSWORD"
conn="host=$RW port=5432 user=$APP_USER dbname=app"
until psql "$conn" -XAtqc "create table if not exists bench (run text, id bigint, primary key (run, id))"; do
  sleep 0.5
done
echo "ready $(date +%s.%N)"
i=0
while true; do
  i=$((i + 1))
  # The client-side timeout bounds a connection to a frozen or partitioned server (no TCP reset ever comes);
  # a killed psql is an unknown outcome, logged as err, never as ack.
  if timeout -s KILL 5 psql "$conn" -XAtqc "insert into bench values ('$RUN', $i)" >/dev/null 2>&1
  then echo "ack $i $(date +%s.%N)"
  else echo "err $i $(date +%s.%N)"; sleep 0.05
  fi
done
"""
# Split brain measured directly: one loop per database pod writes to that pod by its own address (never
# through a Service), as the application user, and prints every acknowledged write with the time it was
# sent and the time it was acknowledged. Two pods whose acknowledgements interleave took writes at once.
DIRECT = r"""
set -u
for d in /usr/lib/postgresql/*/bin; do [ -d "$d" ] && PATH="$d:$PATH"; done
export PGCONNECT_TIMEOUT=1 PGPASSWORD="$APP_PASSWORD"
until psql "host=$RW port=5432 user=$APP_USER dbname=app" -XAtqc \
  "create table if not exists bench_direct (run text, pod text, id bigint, primary key (run, pod, id))"; do
  sleep 0.5
done
for i in $(seq 0 $((INSTANCES - 1))); do
  (
    pod="$ARCH-db-$i"
    conn="host=$pod.$ARCH-db-headless port=5432 user=$APP_USER dbname=app"
    n=0
    while true; do
      n=$((n + 1))
      s=$(date +%s.%N)
      if timeout -s KILL 3 psql "$conn" -XAtqc "insert into bench_direct values ('$RUN', '$pod', $n)" \
        >/dev/null 2>&1
      then echo "direct $pod $n $s $(date +%s.%N)"
      else sleep 0.3
      fi
    done
  ) &
done
wait
"""
# Every database pod's answer to pg_is_in_recovery(), twice a second.
SAMPLER = r"""
set -u
for d in /usr/lib/postgresql/*/bin; do [ -d "$d" ] && PATH="$d:$PATH"; done
export PGCONNECT_TIMEOUT=1 PGPASSWORD="$SU_PASSWORD"
while true; do
  now=$(date +%s.%N)
  for i in $(seq 0 $((INSTANCES - 1))); do
    host="$ARCH-db-$i.$ARCH-db-headless"
    r=$(timeout 2 psql "host=$host port=5432 user=$SU_USER dbname=postgres" \
      -XAtqc "select pg_is_in_recovery()" 2>/dev/null)
    echo "sample $now $ARCH-db-$i ${r:-x}"
  done
  sleep 0.5
done
"""


def kubectl(*args: str, stdin: str | None = None, timeout: float = 60, check: bool = True) -> str:
    proc = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def pause(node: str, attempts: int = 5) -> None:
    """docker pause, retried: the cgroup freezer gives up ("unable to freeze") when a task of the node does
    not reach a freezable point in time (seen once in e2e while the machine was busy)."""
    for attempt in range(attempts):
        try:
            docker("pause", node)
            return
        except RuntimeError:
            if attempt == attempts - 1:
                raise
            time.sleep(1)


def docker(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def get(kind: str, name: str, namespace: str) -> dict[str, Any]:
    return json.loads(kubectl("get", kind, name, "-n", namespace, "-o", "json"))


def secret(namespace: str, name: str, key: str) -> str:
    return base64.b64decode(get("secret", name, namespace)["data"][key]).decode()


@dataclass
class Arch:
    name: str
    namespace: str
    followers: int = 2
    synchronous: bool = False
    durability: str = "required"  # spec.database.replication.dataDurability in sync mode
    # The whole request path (cache, CDN, ingress at host <name>.archop.test, 2 app pods), not the database
    # alone: the soak drives app traffic through it.
    full_stack: bool = False

    @property
    def host(self) -> str:
        return f"{self.name}.archop.test"

    @property
    def data_durability(self) -> str | None:
        return self.durability if self.synchronous else None

    @property
    def instances(self) -> int:
        return 1 + self.followers

    def status(self) -> dict[str, Any]:
        return get("architectures.archop.io", self.name, self.namespace).get("status") or {}

    def manifest(self) -> dict[str, Any]:
        return {
            "apiVersion": "archop.io/v1alpha1",
            "kind": "Architecture",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "database": {
                    "followers": self.followers,
                    "replication": {"mode": "sync" if self.synchronous else "async", "syncReplicas": 1,
                                    **({"dataDurability": self.durability} if self.synchronous else {})},
                    "storage": {"size": "256Mi"},
                    "failover": {"leaderTimeoutSeconds": 3},
                },
                **({"ingress": {"host": self.host}, "app": {"replicas": 2}} if self.full_stack else {
                    "cache": {"enabled": False},
                    "cdn": {"enabled": False},
                    "ingress": {"enabled": False},
                    "app": {"replicas": 1},
                }),
            },
        }

    def create(self) -> None:
        kubectl("apply", "-f", "-", stdin=json.dumps(namespace_manifest(self.namespace)))
        kubectl("apply", "-f", "-", stdin=json.dumps(self.manifest()))

    def healthy(self) -> bool:
        """Leader writable and every follower streaming."""
        st = self.status()
        rows = st.get("instances") or []
        streaming = [r for r in rows if r.get("streaming")]
        conditions = st.get("conditions") or []
        ready: dict[str, Any] = next((c for c in conditions if c["type"] == "DatabaseReady"), {})
        return (
            bool(st.get("currentLeader"))
            and not st.get("failover")
            and ready.get("status") == "True"
            and len(streaming) >= self.followers
        )

    def wait_healthy(self, timeout: float = 300) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            try:
                if self.healthy():
                    return time.monotonic() - start
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            time.sleep(1)
        raise TimeoutError(f"{self.name}: database not healthy after {timeout}s: {self.status()}")

    def leader(self) -> str:
        return str(self.status()["currentLeader"])

    def pod(self, name: str) -> dict[str, Any]:
        return get("pod", name, self.namespace)

    def labels(self) -> dict[str, str]:
        out = json.loads(
            kubectl(
                "get",
                "pods",
                "-n",
                self.namespace,
                "-l",
                f"archop.io/architecture={self.name},app.kubernetes.io/component=database",
                "-o",
                "json",
            )
        )
        return {
            p["metadata"]["name"]: (p["metadata"].get("labels") or {}).get("archop.io/role", "")
            for p in out["items"]
        }


def _client_pod(
    arch: Arch, name: str, script: str, env: dict[str, Any], avoid_nodes: tuple[str, ...] = ()
) -> None:
    sts = get("statefulset", f"{arch.name}-db", arch.namespace)
    image = sts["spec"]["template"]["spec"]["containers"][0]["image"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": arch.namespace,
            # The app's selector labels: the N-db NetworkPolicy admits the app tier (and the operator) only,
            # and N-app then limits this pod's egress to the database, the cache and DNS, all it needs.
            "labels": {
                "app.kubernetes.io/name": "archop-bench",
                "archop.io/architecture": arch.name,
                "app.kubernetes.io/component": "app",
            },
        },
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            # Never on a node the fault touches: it must not take the measuring client down with it.
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "kubernetes.io/hostname",
                                        "operator": "NotIn",
                                        "values": list(avoid_nodes) or ["none"],
                                    }
                                ]
                            }
                        ]
                    }
                }
            },
            # Pod Security `restricted`, like every pod of the stack: the e2e namespaces enforce it.
            "securityContext": {"runAsNonRoot": True, "runAsUser": 999, "runAsGroup": 999,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "client",
                    "image": image,
                    "command": ["bash", "-c", script],
                    "env": _env(env),
                    "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    kubectl(
        "wait", "--for=condition=Ready", f"pod/{name}", "-n", arch.namespace, "--timeout=120s", timeout=130
    )


def _env(env: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for k, v in env.items():
        out.append({"name": k, "valueFrom": v} if isinstance(v, dict) else {"name": k, "value": str(v)})
    return out


def _secret_ref(secret_name: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": secret_name, "key": key}}


@dataclass
class DirectAck:
    pod: str
    sent: float
    acked: float


@dataclass
class Traffic:
    """The writer, direct writer and sampler pods of one run, kept off the nodes the fault touches."""

    arch: Arch
    avoid_nodes: tuple[str, ...] = ()
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def writer(self) -> str:
        return f"bench-writer-{self.run}"

    @property
    def direct(self) -> str:
        return f"bench-direct-{self.run}"

    @property
    def sampler(self) -> str:
        return f"bench-sampler-{self.run}"

    def start(self) -> None:
        a = self.arch
        avoid = tuple(sorted({node_of(a, a.leader()), *self.avoid_nodes}))
        app = {
            "RW": f"{a.name}-db-rw",
            "RUN": self.run,
            "ARCH": a.name,
            "INSTANCES": a.instances,
            "APP_USER": _secret_ref(f"{a.name}-db-app", "username"),
            "APP_PASSWORD": _secret_ref(f"{a.name}-db-app", "password"),
        }
        _client_pod(a, self.writer, WRITER, app, avoid)
        _client_pod(a, self.direct, DIRECT, app, avoid)
        _client_pod(
            a,
            self.sampler,
            SAMPLER,
            {
                "ARCH": a.name,
                "INSTANCES": a.instances,
                "SU_USER": _secret_ref(f"{a.name}-db-superuser", "username"),
                "SU_PASSWORD": _secret_ref(f"{a.name}-db-superuser", "password"),
            },
            avoid,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (self.acks() and self.direct_acks()):
            time.sleep(1)

    def log(self, pod: str) -> list[list[str]]:
        out = kubectl("logs", pod, "-n", self.arch.namespace, timeout=60, check=False)
        return [line.split() for line in out.splitlines() if line.strip()]

    def acks(self) -> list[tuple[int, float]]:
        return [(int(p[1]), float(p[2])) for p in self.log(self.writer) if len(p) == 3 and p[0] == "ack"]

    def errors(self) -> list[tuple[int, float]]:
        return [(int(p[1]), float(p[2])) for p in self.log(self.writer) if len(p) == 3 and p[0] == "err"]

    def direct_acks(self) -> list[DirectAck]:
        return [DirectAck(p[1], float(p[3]), float(p[4])) for p in self.log(self.direct)
                if len(p) == 5 and p[0] == "direct"]

    def stop(self) -> None:
        for pod in (self.writer, self.direct, self.sampler):
            kubectl("delete", "pod", pod, "-n", self.arch.namespace, "--wait=false", check=False)

    def stored_ids(self) -> set[int]:
        a = self.arch
        leader = a.leader()
        out = kubectl(
            "exec",
            leader,
            "-n",
            a.namespace,
            "-c",
            "postgres",
            "--",
            "bash",
            "-c",
            f'psql -h /var/run/postgresql -U "$POSTGRES_USER" -d app -XAtqc '
            f"\"select id from bench where run = '{self.run}'\"",
            timeout=60,
        )
        return {int(x) for x in out.split()}


OUTAGE_GAP_S = 1.0  # the writer acknowledges every ~0.1 s; a longer silence than this is an outage


def rto(acks: list[tuple[int, float]], errors: list[tuple[int, float]], fault_at: float) -> float:
    """Fault -> the first acknowledged write after the write outage the fault caused.

    The outage is the longest stretch without an acknowledgement that starts at or after the last ack before
    the fault: failed writes and writes that hang (a frozen or partitioned leader never answers) both count,
    so the RTO is 0 only when the writer was never held up for more than OUTAGE_GAP_S."""
    times = sorted(t for _, t in acks)
    before = [t for t in times if t <= fault_at]
    prev = before[-1] if before else fault_at
    best_gap, best_end = 0.0, None
    for t in (t for t in times if t > fault_at):
        if t - prev > best_gap:
            best_gap, best_end = t - prev, t
        prev = t
    failed_after = any(t >= fault_at for _, t in errors)
    if best_end is None:
        return float("inf") if failed_after or not times else 0.0
    if best_gap <= OUTAGE_GAP_S and not failed_after:
        return 0.0
    if best_gap <= OUTAGE_GAP_S:
        # Only short blips: the first ack after the first failure.
        first_err = min(t for _, t in errors if t >= fault_at)
        return max(0.0, min((t for t in times if t > first_err), default=float("inf")) - fault_at)
    return max(0.0, best_end - fault_at)


def split_brain(samples: list[list[str]], label_history: list[tuple[float, dict[str, str]]]) -> bool:
    """Two pods answering pg_is_in_recovery() = false while both carry role=leader (labels sampled by the
    host at about the same moment)."""
    by_time: dict[str, list[str]] = {}
    for s in samples:
        if len(s) == 4 and s[0] == "sample" and s[3] == "f":
            by_time.setdefault(s[1], []).append(s[2])
    for ts, pods in by_time.items():
        if len(pods) < 2:
            continue
        t = float(ts)
        near = [labels for at, labels in label_history if abs(at - t) <= 1.0]
        for labels in near:
            if sum(1 for p in pods if labels.get(p) == "leader") >= 2:
                return True
    return False


def split_brain_direct(acks: list[DirectAck]) -> list[tuple[str, str]]:
    """Pairs of pods that acknowledged writes in overlapping windows. A pod's window runs from the sending
    of its first acknowledged write to the acknowledgement of its last one (every ack of a run, so a leader
    that took writes, stopped, and took writes again spans the gap). A clean handover leaves the old
    leader's window closed before the new leader's first write was even sent."""
    windows: dict[str, tuple[float, float]] = {}
    for a in acks:
        lo, hi = windows.get(a.pod, (a.sent, a.acked))
        windows[a.pod] = (min(lo, a.sent), max(hi, a.acked))
    pods = sorted(windows)
    return [(p, q) for i, p in enumerate(pods) for q in pods[i + 1:]
            if windows[p][0] < windows[q][1] and windows[q][0] < windows[p][1]]


# ------------------------------------------------------------------------------------------ faults


def node_of(arch: Arch, pod: str) -> str:
    return str(arch.pod(pod)["spec"]["nodeName"])


def operator_leader() -> str:
    lease = get("lease", "archop-operator", OPERATOR_NAMESPACE)
    return str(lease["spec"]["holderIdentity"])


def operator_with_leader(arch: Arch, leader: str) -> bool | None:
    """Whether the operator's Lease holder runs on the leader's node (a node fault then takes both, and the
    standby's takeover adds to the RTO). None when it cannot be told."""
    try:
        holder = get("pod", operator_leader(), OPERATOR_NAMESPACE)
        return bool(holder["spec"]["nodeName"] == node_of(arch, leader))
    except (RuntimeError, KeyError, ValueError, subprocess.SubprocessError):
        return None


_SIGNAL_POSTGRES = (
    'for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = postgres ] && '
    "kill -{sig} ${{p#/proc/}}; done; true"
)


def _failovers_started(ns: str) -> int:
    """How many FailoverStarted events the namespace has seen (repeats are folded into `count`)."""
    out = kubectl("get", "events", "-n", ns, "--field-selector", "reason=FailoverStarted", "-o", "json",
                  check=False)
    try:
        items = json.loads(out)["items"]
    except (ValueError, KeyError):
        return 0
    return sum(int(e.get("count") or (e.get("series") or {}).get("count") or 1) for e in items)


def colocate_leader_with_operator(arch: Arch, timeout: float = 180) -> str:
    """The worst node loss: the database leader and the operator's Lease holder on the same node. Moves the
    leader there by a switchover (the archop.io/switchover-to annotation) when it is elsewhere."""
    holder = operator_leader()
    node = str(get("pod", holder, OPERATOR_NAMESPACE)["spec"]["nodeName"])
    pods = json.loads(kubectl("get", "pods", "-n", OPERATOR_NAMESPACE, "-l", "app.kubernetes.io/name=archop",
                              "-o", "json"))["items"]
    standbys = [p for p in pods if p["metadata"]["name"] != holder and p["spec"].get("nodeName") == node]
    if standbys:
        # The chart spreads the replicas over nodes; with both on one node this would measure an operator
        # outage, not a takeover.
        names = [p["metadata"]["name"] for p in standbys]
        raise RuntimeError(f"operator replicas share node {node}: {holder} and {names}")
    there = [n for n in arch.labels() if node_of(arch, n) == node]
    if not there:
        raise RuntimeError(f"no database pod on {node}, the node of the operator's Lease holder {holder}")
    target = sorted(there)[0]
    switchover(arch, target, timeout)
    return target


def node_ip_and_pod_cidr(node: str) -> tuple[str, str]:
    n = get("node", node, "")
    ip = next(a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
    return ip, str(n["spec"]["podCIDR"])


def pod_ip(arch: Arch, pod: str) -> str:
    return str(arch.pod(pod)["status"]["podIP"])


def switchover(arch: Arch, target: str, timeout: float = 180) -> None:
    """Move the leader to `target` (the archop.io/switchover-to annotation) and wait until all is healthy."""
    if arch.leader() == target:
        return
    kubectl("annotate", "architectures.archop.io", arch.name, "-n", arch.namespace, "--overwrite",
            f"archop.io/switchover-to={target}")
    deadline = time.monotonic() + timeout
    while not (arch.leader() == target and arch.healthy()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"switchover to {target} did not finish: {arch.status()}")
        time.sleep(1)


def operator_node() -> str:
    return str(get("pod", operator_leader(), OPERATOR_NAMESPACE)["spec"]["nodeName"])


def lead_away_from_operator(arch: Arch) -> tuple[str, str]:
    """The leader on a node the operator's Lease holder does not run on (a switchover when it does);
    returns (leader, operator node)."""
    op = operator_node()
    pods = arch.labels()
    if node_of(arch, arch.leader()) == op:
        switchover(arch, sorted(p for p in pods if node_of(arch, p) != op)[0])
    return arch.leader(), op


def most_advanced_follower(arch: Arch, leader: str) -> str:
    """The follower whose flushed position on the leader is highest right now (a synchronous one in sync
    mode: every follower is in the quorum)."""
    out = _psql_local(arch, leader, "select application_name from pg_stat_replication "
                      "where state = 'streaming' order by flush_lsn desc, application_name limit 1")
    return out.strip()


def _psql_local(arch: Arch, pod: str, sql: str, db: str = "postgres", timeout: float = 60) -> str:
    return kubectl("exec", pod, "-n", arch.namespace, "-c", "postgres", "--", "bash", "-c",
                   f'psql -h /var/run/postgresql -U "$POSTGRES_USER" -d {db} -XAtqc "{sql}"', timeout=timeout)


# The iptables chain the partial partition adds to the leader's node (pod traffic crosses its FORWARD chain).
CUT_CHAIN = "ARCHOP-BENCH-CUT"


def cut(node: str, ip: str | list[str], peers: list[str]) -> None:
    """Drop every packet between `ip` (one address or several on the node) and each of `peers` (addresses
    or CIDRs), in both directions, in the node's network namespace; established connections stop too (no
    conntrack exemption)."""
    rules = [f"iptables -N {CUT_CHAIN} 2>/dev/null || iptables -F {CUT_CHAIN}",
             f"iptables -C FORWARD -j {CUT_CHAIN} 2>/dev/null || iptables -I FORWARD 1 -j {CUT_CHAIN}"]
    for here in [ip] if isinstance(ip, str) else ip:
        for p in peers:
            rules += [f"iptables -A {CUT_CHAIN} -s {here} -d {p} -j DROP",
                      f"iptables -A {CUT_CHAIN} -s {p} -d {here} -j DROP"]
    docker("exec", node, "bash", "-c", " && ".join(rules))


def uncut(node: str) -> None:
    docker("exec", node, "bash", "-c",
           f"iptables -D FORWARD -j {CUT_CHAIN} 2>/dev/null; iptables -F {CUT_CHAIN} 2>/dev/null; "
           f"iptables -X {CUT_CHAIN} 2>/dev/null; true", check=False)


_SIGNAL_WALRECEIVER = (
    'for p in /proc/[0-9]*; do case "$(tr "\\0" " " < $p/cmdline 2>/dev/null)" in '
    '"postgres: "*walreceiver*) kill -{sig} ${{p#/proc/}};; esac; done; true'
)
LAG_BYTES = 32 * 1024 * 1024  # how far behind the lagging follower is at the fault, at least


def lease_agent_log(arch: Arch, pod: str) -> str:
    """What the pod's leader-lease agent (scripts/fence.sh, container fence) logged."""
    return kubectl("logs", pod, "-n", arch.namespace, "-c", "fence", timeout=60)


def in_fence(arch: Arch, pod: str, script: str, check: bool = True) -> None:
    """Run `script` in the pod's fence container, which sees the pod's processes (one namespace)."""
    kubectl("exec", pod, "-n", arch.namespace, "-c", "fence", "--", "bash", "-c", script, check=check)


def make_lag(arch: Arch, leader: str, follower: str) -> None:
    """Stop `follower`'s WAL receiver and write LAG_BYTES of WAL on the leader (in required mode the other
    follower acknowledges it), so that at the fault this follower is far behind."""
    in_fence(arch, follower, _SIGNAL_WALRECEIVER.format(sig="STOP"))
    rows = LAG_BYTES // 1100
    _psql_local(arch, leader, "create table if not exists bench_bulk (x text); truncate bench_bulk; "
                f"insert into bench_bulk select repeat('x', 1000) from generate_series(1, {rows})", db="app",
                timeout=300)


@dataclass
class Plan:
    """What a scenario set up before the traffic started."""

    avoid_nodes: tuple[str, ...] = ()  # the clients run elsewhere
    op_node: str = ""  # the operator's Lease holder's node
    peer: str = ""  # the follower the fault touches as well


def prepare(scenario: str, arch: Arch) -> Plan:
    if scenario == "node-stop-with-operator":
        colocate_leader_with_operator(arch)
        return Plan()
    if scenario in ("node-stop", "node-partition"):
        # The leader's node alone: the operator's Lease holder elsewhere, so that every run measures the
        # same fault (node-stop-with-operator is the run where both go).
        _, op = lead_away_from_operator(arch)
        return Plan(op_node=op)
    if scenario in ("partial-partition", "operator-freeze"):
        leader, op = lead_away_from_operator(arch)
        followers = sorted(p for p in arch.labels() if p != leader)
        return Plan(avoid_nodes=(op,), op_node=op, peer=followers[0])
    if scenario == "leader-and-sync-follower":
        leader = arch.leader()
        peer = sorted(p for p in arch.labels() if p != leader)[0]
        return Plan(avoid_nodes=(node_of(arch, peer),), peer=peer)
    if scenario == "lagging-follower":
        leader = arch.leader()
        return Plan(peer=sorted(p for p in arch.labels() if p != leader)[0])
    if scenario == "node-drain":
        # The operator's Lease holder elsewhere (its eviction would add a takeover); the clients elsewhere
        # (bare pods: a drain refuses them).
        leader, op = lead_away_from_operator(arch)
        return Plan(avoid_nodes=(node_of(arch, leader),), op_node=op)
    return Plan()


def inject(scenario: str, arch: Arch, leader: str, plan: Plan) -> tuple[float, Any]:
    """Start the fault; returns (time, undo-state)."""
    ns = arch.namespace
    if scenario == "pod-delete":
        at = time.time()
        kubectl("delete", "pod", leader, "-n", ns, "--grace-period=0", "--force", "--wait=false")
        return at, None
    if scenario in ("leader-freeze", "operator-kill"):
        started_before = _failovers_started(ns)
        at = time.time()
        kubectl(
            "exec", leader, "-n", ns, "-c", "fence", "--", "bash", "-c", _SIGNAL_POSTGRES.format(sig="STOP")
        )
        if scenario == "operator-kill":
            # A frozen leader does not come back by itself (a deleted pod often restarts before the leader
            # timeout, and then no failover starts at all). Kill the operator's Lease holder right after THIS
            # run's FailoverStarted (earlier runs left theirs in the namespace).
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _failovers_started(ns) <= started_before:
                time.sleep(0.2)
            kubectl(
                "delete",
                "pod",
                operator_leader(),
                "-n",
                OPERATOR_NAMESPACE,
                "--grace-period=0",
                "--force",
                "--wait=false",
                check=False,
            )
        return at, leader
    if scenario == "kill-postmaster":
        at = time.time()
        kubectl(
            "exec",
            leader,
            "-n",
            ns,
            "-c",
            "postgres",
            "--",
            "bash",
            "-c",
            'kill -9 "$(head -1 "$PGDATA/postmaster.pid")"',
            check=False,
        )
        return at, None
    if scenario == "lagging-follower":
        lagging = plan.peer
        make_lag(arch, leader, lagging)
        at = time.time()
        kubectl("exec", leader, "-n", ns, "-c", "postgres", "--", "bash", "-c",
                'kill -9 "$(head -1 "$PGDATA/postmaster.pid")"', check=False)
        return at, lagging
    if scenario == "operator-freeze":
        started_before = _failovers_started(ns)
        at = time.time()
        in_fence(arch, leader, _SIGNAL_POSTGRES.format(sig="STOP"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _failovers_started(ns) <= started_before:
            time.sleep(0.2)
        # Mid-failover: the Lease holder's whole node stops (kubelet, the operator, a database pod).
        pause(plan.op_node)
        return at, (leader, plan.op_node)
    node = node_of(arch, leader)
    if scenario == "partial-partition":
        ip = pod_ip(arch, leader)
        op_ip, op_cidr = node_ip_and_pod_cidr(plan.op_node)
        peers = [op_ip, op_cidr]
        if not any(node_of(arch, p) == plan.op_node for p in arch.labels() if p != leader):
            peers.append(pod_ip(arch, plan.peer))  # no follower on the operator's node: cut one by address
        at = time.time()
        cut(node, ip, peers)
        return at, node
    if scenario == "leader-and-sync-follower":
        # The other follower's receiver is stopped for 3 s while writes are acknowledged (by the peer alone
        # in sync mode) and resumed only once the two nodes are stopped: the remaining follower surely lacks
        # acknowledged writes, which the lost follower had.
        other = next(p for p in arch.labels() if p not in (leader, plan.peer))
        in_fence(arch, other, _SIGNAL_WALRECEIVER.format(sig="STOP"))
        time.sleep(3)
        nodes = [node, node_of(arch, plan.peer)]
        at = time.time()
        procs = [subprocess.Popen(["docker", "stop", "-t", "0", n], stdout=subprocess.DEVNULL) for n in nodes]
        for proc in procs:
            proc.wait(timeout=120)
        in_fence(arch, other, _SIGNAL_WALRECEIVER.format(sig="CONT"))
        return at, nodes
    if scenario in ("node-stop", "node-stop-with-operator"):
        at = time.time()
        docker("stop", "-t", "0", node)
        return at, node
    if scenario == "node-drain":
        # kubectl drain: cordon, then evict every pod, retrying while a disruption budget refuses (the
        # leader's, until the operator has switched over). --force only lets it delete bare pods other
        # runs may have left there; every managed pod still goes through the Eviction API and its budgets.
        at = time.time()
        drain = subprocess.Popen(["kubectl", "drain", node, "--ignore-daemonsets", "--delete-emptydir-data",
                                  "--force", f"--timeout={DRAIN_TIMEOUT_S}s"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        return at, Drain(node, drain)
    if scenario == "node-partition":
        at = time.time()
        docker("network", "disconnect", KIND_NETWORK, node)
        return at, node
    raise ValueError(f"unknown scenario {scenario}")


def undo(scenario: str, arch: Arch, state: Any) -> None:
    if scenario in ("leader-freeze", "operator-kill") and state:
        kubectl(
            "exec",
            state,
            "-n",
            arch.namespace,
            "-c",
            "fence",
            "--",
            "bash",
            "-c",
            _SIGNAL_POSTGRES.format(sig="CONT"),
            check=False,
        )
    elif scenario in ("node-stop", "node-stop-with-operator") and state:
        docker("start", state)
    elif scenario == "node-partition" and state:
        docker("network", "connect", KIND_NETWORK, state)
    elif scenario == "partial-partition" and state:
        uncut(state)
    elif scenario == "leader-and-sync-follower" and state:
        for node in state:
            docker("start", node, check=False)
    elif scenario == "lagging-follower" and state:
        in_fence(arch, state, _SIGNAL_WALRECEIVER.format(sig="CONT"), check=False)
    elif scenario == "operator-freeze" and state:
        leader, op_node = state
        docker("unpause", op_node, check=False)
        in_fence(arch, leader, _SIGNAL_POSTGRES.format(sig="CONT"), check=False)
    elif scenario == "node-drain" and state:
        state.finish()
        kubectl("uncordon", state.node, check=False)
        if state.returncode != 0:
            raise RuntimeError(f"kubectl drain {state.node} failed ({state.returncode}): "
                               f"{state.output[-800:]}")


DRAIN_TIMEOUT_S = 120


@dataclass
class Drain:
    """A `kubectl drain` in flight, and what it said once it ended."""

    node: str
    proc: subprocess.Popen[str]
    output: str = ""
    returncode: int | None = None

    def finish(self) -> None:
        """Wait for the drain (it ends by itself within DRAIN_TIMEOUT_S): the old leader's evicted pod can
        only come back on its volume's node, so the drain has to be over before the node is uncordoned."""
        try:
            self.output, _ = self.proc.communicate(timeout=DRAIN_TIMEOUT_S + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.output, _ = self.proc.communicate()
        self.returncode = self.proc.returncode


@dataclass
class RunResult:
    scenario: str
    rto_s: float
    lost: int
    rejoin_s: float
    split_brain: bool
    old_leader: str
    new_leader: str
    split_brain_direct: list[tuple[str, str]] = field(default_factory=list)
    direct_acks: dict[str, int] = field(default_factory=dict)
    # Where the RTO went, from status.lastFailover when this run's fault caused one (None otherwise):
    # fault -> the operator starts the failover, and the operator's failover itself (fence, lease wait,
    # promotion, rewiring). The rest of the RTO is the Service change reaching the client and its next try.
    detect_s: float | None = None
    failover_s: float | None = None
    operator_with_leader: bool | None = None  # the Lease holder ran on the leader's node at the fault


def failover_breakdown(arch: Arch, fault_at: float) -> tuple[float | None, float | None]:
    """(detection, the operator's failover duration) of the failover this fault caused, if it caused one."""
    last = arch.status().get("lastFailover") or {}
    started = last.get("startedAt")
    if not started:
        return None, None
    at = datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
    if at < fault_at:
        return None, None
    return round(at - fault_at, 3), last.get("durationSeconds")


UNDOABLE = ("node-stop", "node-partition", "leader-freeze", "operator-kill", "node-stop-with-operator",
            "partial-partition", "leader-and-sync-follower", "lagging-follower", "operator-freeze",
            "node-drain")
# Scenarios whose fault is held for a fixed time whatever --hold says: the lagging follower resumes soon
# after the fault; the frozen operator node stays paused past its Lease so the standby takes over.
HOLD_S = {"lagging-follower": 3.0, "operator-freeze": 15.0}


def old_leader_back(arch: Arch, old: str) -> bool:
    """The old leader streams as a follower again (or, after a quick restart, leads again), all healthy."""
    st = arch.status()
    row: dict[str, Any] = next((r for r in st.get("instances") or [] if r.get("name") == old), {})
    return arch.healthy() and (bool(row.get("streaming")) or st.get("currentLeader") == old)


def _disrupted(acks: list[tuple[int, float]], errors: list[tuple[int, float]], fault_at: float,
               now: float) -> bool:
    """The writer has felt the fault: a failed write, or no ack for longer than OUTAGE_GAP_S."""
    if any(t >= fault_at for _, t in errors):
        return True
    last = max((t for _, t in acks), default=fault_at)
    times = sorted(t for _, t in acks if t >= fault_at - OUTAGE_GAP_S)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return now - max(last, fault_at) > OUTAGE_GAP_S + 1.0 or any(g > OUTAGE_GAP_S for g in gaps)


def _writes_flow(acks: list[tuple[int, float]], errors: list[tuple[int, float]], clean_s: float = 2.0
                 ) -> bool:
    """The writer acknowledges again, with no failure for the last `clean_s` seconds of acks."""
    last_err = max((t for _, t in errors), default=0.0)
    after = [t for _, t in acks if t > last_err]
    return bool(after) and max(after) - min(after) >= clean_s


# The direct writer opens one connection per insert and backs off after a failure, so it can trail the
# Service writer by a few seconds; this bounds how long we wait for it to reach the new leader.
DIRECT_WAIT_S = 30.0


def _direct_acks_from(traffic: Traffic, leader: str, fault_at: float) -> list[DirectAck]:
    """The direct writer's acks, once it has one from `leader` sent after the fault (or the bound passed)."""
    deadline = time.monotonic() + DIRECT_WAIT_S
    while True:
        direct = traffic.direct_acks()
        if any(d.sent > fault_at and d.pod == leader for d in direct) or time.monotonic() > deadline:
            return direct
        time.sleep(1)


def run_once(arch: Arch, scenario: str, hold_s: float = 20.0, timeout: float = 300.0) -> RunResult:
    """One fault with traffic running. Faults that can be undone are held `hold_s` seconds. Rejoin time is
    measured from the moment the old leader could come back (the undo, or the fault itself) until it streams
    again (or leads again after a restart quick enough that nobody failed over).

    Nothing counts as recovered before the fault has been felt (a failed or stalled write, another leader,
    or an unhealthy status): right after the fault the status still says "healthy"."""
    arch.wait_healthy()
    hold_s = HOLD_S.get(scenario, hold_s)
    plan = prepare(scenario, arch)
    traffic = Traffic(arch, plan.avoid_nodes)
    traffic.start()
    labels: list[tuple[float, dict[str, str]]] = []
    leader = arch.leader()
    time.sleep(2)
    together = operator_with_leader(arch, leader)
    fault_at, state = inject(scenario, arch, leader, plan)
    back_from = fault_at
    undone = scenario not in UNDOABLE
    disrupted = status_moved = False
    rejoined_at = None
    try:
        deadline = time.monotonic() + hold_s + timeout
        while time.monotonic() < deadline:
            now = time.time()
            try:
                labels.append((now, arch.labels()))
                if not status_moved:
                    # The status lags the fault by up to a tick: "healthy" right after it means nothing yet.
                    status_moved = arch.leader() != leader or not arch.healthy() or now - fault_at > 10
                if not disrupted:
                    acks, errors = traffic.acks(), traffic.errors()
                    disrupted = _disrupted(acks, errors, fault_at, now) or status_moved or now - fault_at > 20
                elif undone and status_moved and rejoined_at is None and old_leader_back(arch, leader):
                    rejoined_at = now
                if rejoined_at is not None and _writes_flow(traffic.acks(), traffic.errors()):
                    break
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            if not undone and now - fault_at >= hold_s:
                undo(scenario, arch, state)
                undone, back_from = True, time.time()
            time.sleep(0.5)
        if rejoined_at is None:
            raise TimeoutError(f"{scenario}: {leader} did not rejoin: {arch.status()}")
        acks, errors = traffic.acks(), traffic.errors()
        if not _writes_flow(acks, errors):
            raise TimeoutError(f"{scenario}: writes did not resume: {len(acks)} acks, {len(errors)} errors")
        lost = len({i for i, _ in acks} - traffic.stored_ids())
        samples = traffic.log(traffic.sampler)
        new_leader = arch.leader()
        direct = _direct_acks_from(traffic, new_leader, fault_at)
        # The direct measurement must have seen both sides of the fault, or it proves nothing.
        if not any(d.acked < fault_at for d in direct):
            raise RuntimeError(f"{scenario}: the direct writer saw no acknowledged write before the fault")
        if not any(d.sent > fault_at and d.pod == new_leader for d in direct):
            after = sorted({d.pod for d in direct if d.sent > fault_at})
            raise RuntimeError(f"{scenario}: the direct writer saw no write acknowledged by {new_leader} "
                               f"within {DIRECT_WAIT_S:.0f} s of writes flowing again (pods that acked since "
                               f"the fault: {after or 'none'})")
        counts: dict[str, int] = {}
        for d in direct:
            counts[d.pod] = counts.get(d.pod, 0) + 1
        detect_s, failover_s = failover_breakdown(arch, fault_at)
        return RunResult(
            scenario,
            rto(acks, errors, fault_at),
            lost,
            rejoined_at - back_from,
            split_brain(samples, labels),
            leader,
            new_leader,
            split_brain_direct(direct),
            counts,
            detect_s,
            failover_s,
            together,
        )
    finally:
        if not undone:
            undo(scenario, arch, state)
        traffic.stop()
