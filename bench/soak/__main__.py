"""python -m bench.soak [--minutes 30] [--kill-every 60] -> bench/results/soak.json

A long run of the whole stack under faults: app traffic through the ingress (E2E_INGRESS_URL, the kind
network), the failover bench's writer through N-db-rw, its direct writer (every pod by its own address) and
its sampler, and a leader fault every --kill-every seconds, alternating a killed postmaster and a
force-deleted pod. It reports, for the whole run:

- acknowledged writes lost (every acknowledged id must be on the final leader) and split brain, through the
  labels and directly;
- each fault's write outage (RTO, the failover bench's definition, bounded by the next fault);
- app requests through the ingress: success rate overall and within 30 s of a fault, p50/p99;
- the operator's resident memory (process_resident_memory_bytes of the Lease holder), sampled every
  minute: the last five minutes against the first five after warm-up (flat within 10 %);
- leaks: client connections on the leader, pods and Jobs in the namespace, at the start and the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.failover.harness import (
    OPERATOR_NAMESPACE,
    Arch,
    Plan,
    Traffic,
    inject,
    kubectl,
    operator_leader,
    rto,
    split_brain,
    split_brain_direct,
)

RESULTS = Path(__file__).resolve().parents[1] / "results"
FAULTS = ("kill-postmaster", "pod-delete")
AFTER_FAULT_S = 30.0  # app requests this soon after a fault count as "during the fault"


@dataclass
class Requests:
    """App requests through the ingress, one at a time, from a thread: (sent, ok, seconds)."""

    url: str
    host: str
    done: list[tuple[float, bool, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            path = "/healthz" if n % 5 == 0 else f"/users/{n % 50 + 1}"
            req = urllib.request.Request(self.url + path, headers={"Host": self.host})
            sent = time.time()
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    ok = resp.status < 500
            except urllib.error.HTTPError as e:
                ok = e.code < 500  # a 404 for a user not created yet is an answer
            except (OSError, TimeoutError):
                ok = False
            self.done.append((sent, ok, time.time() - sent))
            time.sleep(0.05)


def operator_rss() -> float | None:
    """Resident memory of the operator's Lease holder, in MiB, from its own /metrics."""
    try:
        pod = operator_leader()
        path = f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/pods/{pod}:9090/proxy/metrics"
        text = kubectl("get", "--raw", path, timeout=20)
    except (RuntimeError, subprocess.SubprocessError):
        return None
    for line in text.splitlines():
        if line.startswith("process_resident_memory_bytes "):
            return round(float(line.split()[1]) / 2**20, 1)
    return None


def client_connections(arch: Arch) -> int | None:
    try:
        out = kubectl("exec", arch.leader(), "-n", arch.namespace, "-c", "postgres", "--", "bash", "-c",
                      'psql -h /var/run/postgresql -U "$POSTGRES_USER" -d postgres -XAtqc '
                      "\"select count(*) from pg_stat_activity where backend_type = 'client backend'\"",
                      timeout=30)
        return int(out.strip())
    except (RuntimeError, subprocess.SubprocessError, ValueError):
        return None


def objects(arch: Arch, kind: str) -> list[str]:
    out = json.loads(kubectl("get", kind, "-n", arch.namespace, "-o", "json"))
    return sorted(o["metadata"]["name"] for o in out["items"])


def settle(arch: Arch, timeout: float = 240) -> None:
    arch.wait_healthy(timeout=timeout)


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))], 3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--kill-every", type=float, default=60)
    ap.add_argument("--namespace", default="archop-soak")
    ap.add_argument("--url", default=os.environ.get("E2E_INGRESS_URL", ""))
    ap.add_argument("--out", default=str(RESULTS / "soak.json"))
    args = ap.parse_args(argv)
    if not args.url:
        ap.error("set E2E_INGRESS_URL (http://$(e2e/cluster/cluster.sh ingress-ip)) or --url")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent, check=False).stdout.strip() or None

    arch = Arch(name="soak", namespace=args.namespace, synchronous=True, full_stack=True)
    arch.create()
    settle(arch, timeout=900)
    traffic = Traffic(arch)
    traffic.start()
    requests = Requests(args.url.rstrip("/"), arch.host)
    thread = threading.Thread(target=requests.run, daemon=True)
    thread.start()
    time.sleep(30)  # warm-up: pools open, caches fill
    start_pods, start_jobs = objects(arch, "pods"), objects(arch, "jobs")
    start_connections = client_connections(arch)
    rss: list[tuple[float, float]] = []
    connections: list[tuple[float, int]] = []
    faults: list[dict[str, Any]] = []
    labels: list[tuple[float, dict[str, str]]] = []
    began = time.time()
    next_fault = began + args.kill_every
    next_sample = began
    try:
        while time.time() - began < args.minutes * 60:
            now = time.time()
            if now >= next_sample:
                if (m := operator_rss()) is not None:
                    rss.append((now, m))
                if (c := client_connections(arch)) is not None:
                    connections.append((now, c))
                next_sample = now + 60
            if now >= next_fault:
                scenario = FAULTS[len(faults) % len(FAULTS)]
                leader = arch.leader()
                at, _ = inject(scenario, arch, leader, Plan())
                faults.append({"scenario": scenario, "at": at, "leader": leader})
                print(f"[{now - began:6.0f}s] {scenario} of {leader}", flush=True)
                try:
                    settle(arch)
                except TimeoutError as e:
                    faults[-1]["unsettled"] = str(e)[:500]
                    print(f"  not healthy again: {e}", flush=True)
                next_fault = max(time.time() + 5, at + args.kill_every)
            with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
                labels.append((time.time(), arch.labels()))
            time.sleep(1)
    finally:
        requests.stop.set()
        thread.join(timeout=10)
    settle(arch)
    time.sleep(5)
    acks, errors = traffic.acks(), traffic.errors()
    lost = sorted({i for i, _ in acks} - traffic.stored_ids())
    direct = traffic.direct_acks()
    samples = traffic.log(traffic.sampler)
    traffic.stop()
    for i, f in enumerate(faults):
        end = faults[i + 1]["at"] if i + 1 < len(faults) else float("inf")
        window_acks, window_errors = [a for a in acks if a[1] < end], [e for e in errors if e[1] < end]
        f["rto_s"] = round(rto(window_acks, window_errors, f["at"]), 3)
    time.sleep(10)
    end_pods, end_jobs = objects(arch, "pods"), objects(arch, "jobs")
    end_connections = client_connections(arch)
    clients = {traffic.writer, traffic.direct, traffic.sampler}
    fault_times = [f["at"] for f in faults]
    near = [r for r in requests.done if any(0 <= r[0] - t <= AFTER_FAULT_S for t in fault_times)]
    steady = [r for r in requests.done if r not in near]

    def rate(rows: list[tuple[float, bool, float]]) -> float | None:
        return round(100 * sum(ok for _, ok, _ in rows) / len(rows), 3) if rows else None

    warm = [m for t, m in rss if t - began <= 5 * 60]
    late = [m for t, m in rss if t - began >= args.minutes * 60 - 5 * 60]
    drift = (round(100 * (statistics.mean(late) - statistics.mean(warm)) / statistics.mean(warm), 1)
             if warm and late else None)
    rtos = [f["rto_s"] for f in faults]
    result = {
        "commit": commit,
        "minutes": args.minutes,
        "kill_every_s": args.kill_every,
        "sync_mode": True,
        "data_durability": arch.durability,
        "faults": len(faults),
        "faults_unsettled": sum(1 for f in faults if "unsettled" in f),
        "rto_p50_s": percentile(rtos, 50),
        "rto_p95_s": percentile(rtos, 95),
        "rto_max_s": max(rtos) if rtos else None,
        "acknowledged_writes": len(acks),
        "lost_acknowledged_writes": len(lost),
        "lost_ids": lost[:50],
        "split_brain_labels": split_brain(samples, labels),
        "split_brain_direct": [list(p) for p in split_brain_direct(direct)],
        "app_requests": len(requests.done),
        "app_success_pct": rate(requests.done),
        "app_success_pct_within_30s_of_a_fault": rate(near),
        "app_success_pct_otherwise": rate(steady),
        "app_p50_s": percentile([s for _, _, s in requests.done], 50),
        "app_p99_s": percentile([s for _, _, s in requests.done], 99),
        "operator_rss_mib": [m for _, m in rss],
        "operator_rss_drift_pct": drift,
        "client_connections": [c for _, c in connections],
        "client_connections_start_end": [start_connections, end_connections],
        "pods_start": start_pods,
        "pods_end": end_pods,
        "leaked_pods": sorted(set(end_pods) - set(start_pods) - clients),
        "jobs_start_end": [start_jobs, end_jobs],
        "fault_runs": faults,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("fault_runs", "pods_start", "pods_end")},
                     indent=2))
    kubectl("delete", "architectures.archop.io", arch.name, "-n", arch.namespace, "--wait=false", check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
