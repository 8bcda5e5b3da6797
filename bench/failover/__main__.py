"""python -m bench.failover [--runs 5] [--scenarios a,b] [--sync both|on|off] -> results/failover.json"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.failover.harness import SCENARIOS, Arch, RunResult, kubectl, run_once


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return round(ordered[k], 3)


def summarise(scenario: str, sync: bool, results: list[RunResult], durability: str = "required") -> dict:
    return {
        "scenario": scenario,
        "runs": len(results),
        "rto_p50_s": percentile([r.rto_s for r in results], 50),
        "rto_p95_s": percentile([r.rto_s for r in results], 95),
        "lost_acknowledged_writes": sum(r.lost for r in results),
        "rejoin_p50_s": round(statistics.median([r.rejoin_s for r in results]), 3) if results else None,
        "split_brain_seen": any(r.split_brain for r in results),
        # Measured by the direct writer: two pods whose acknowledged writes overlap in time, per run.
        "split_brain_direct": any(r.split_brain_direct for r in results),
        "split_brain_direct_runs": [[list(p) for p in r.split_brain_direct] for r in results],
        "direct_acks_runs": [r.direct_acks for r in results],
        "sync_mode": sync,
        "data_durability": durability if sync else None,
        "leader_changes": sum(1 for r in results if r.old_leader != r.new_leader),
        # Every run, in order, so a p95 over 5 runs (= the worst run) can be read next to the others.
        "rto_runs_s": [round(r.rto_s, 3) for r in results],
        "rejoin_runs_s": [round(r.rejoin_s, 3) for r in results],
        "lost_runs": [r.lost for r in results],
        # Per run: fault -> failover started, and the operator's failover itself (None: no failover).
        "detect_runs_s": [r.detect_s for r in results],
        "failover_runs_s": [r.failover_s for r in results],
        "operator_with_leader_runs": [r.operator_with_leader for r in results],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--sync", choices=("both", "on", "off"), default="both")
    ap.add_argument("--durability", choices=("required", "preferred"), default="required",
                    help="spec.database.replication.dataDurability in sync mode")
    ap.add_argument("--namespace", default="archop-bench")
    ap.add_argument("--hold", type=float, default=12.0, help="seconds an undoable fault is held")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "results" / "failover.json"))
    args = ap.parse_args(argv)
    # A stopped bench must still undo its fault (restart the node, reconnect it, thaw the leader): SIGTERM
    # becomes SystemExit, so run_once's `finally` runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.sync]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent, check=False).stdout.strip() or None
    out: list[dict] = []
    for sync in modes:
        arch = Arch(name="bench-sync" if sync else "bench-async", namespace=args.namespace, synchronous=sync,
                    durability=args.durability)
        arch.create()
        arch.wait_healthy(timeout=600)
        for scenario in args.scenarios.split(","):
            results = []
            failures: list[str] = []
            for i in range(args.runs):
                try:
                    r = run_once(arch, scenario, hold_s=args.hold)
                except (RuntimeError, TimeoutError, subprocess.SubprocessError) as e:
                    # A run that did not recover (or measured nothing) is a result too, not a crash.
                    failures.append(f"run {i + 1}: {type(e).__name__}: {e}"[:2000])
                    print(f"{scenario} sync={sync} run {i + 1}: FAILED {failures[-1]}", flush=True)
                    continue
                print(
                    f"{scenario} sync={sync} run {i + 1}: rto={r.rto_s:.2f}s lost={r.lost} "
                    f"rejoin={r.rejoin_s:.1f}s split_brain={r.split_brain} direct={r.split_brain_direct} "
                    f"{r.old_leader}->{r.new_leader} acks={r.direct_acks} detect={r.detect_s}s "
                    f"failover={r.failover_s}s operator_with_leader={r.operator_with_leader}",
                    flush=True,
                )
                results.append(r)
            out.append({**summarise(scenario, sync, results, args.durability), "failed_runs": failures,
                        "commit": commit})
            Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        kubectl(
            "delete", "architectures.archop.io", arch.name, "-n", args.namespace, "--wait=false", check=False
        )
        time.sleep(5)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
