"""python -m bench.failover.table [--merge-into results/failover.json] [file.json ...]

Prints the Markdown table of docs/failover.md from the benchmark's result lists (default:
results/failover.json). With --merge-into, the given lists are first concatenated into that file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[1] / "results" / "failover.json"
COLUMNS = ("scenario", "sync mode", "runs", "RTO p50 (s)", "RTO p95 (s)", "lost acknowledged writes",
           "rejoin p50 (s)", "split brain")
# Rows that carry them (the direct writer, the per-run breakdown) get these columns as well.
BREAKDOWN = ("detection p50 (s)", "operator failover p50 (s)")


def _s(v: object) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _median(values: list[float | None]) -> float | None:
    known = sorted(v for v in values if v is not None)
    return round(known[len(known) // 2], 2) if known else None


def _mode(r: dict) -> str:
    if not r["sync_mode"]:
        return "async"
    return r.get("data_durability") or "sync"


def _split_brain(r: dict) -> str:
    labels = "yes" if r["split_brain_seen"] else "no"
    if "split_brain_direct" not in r:
        return labels
    return f"{labels} / {'yes' if r['split_brain_direct'] else 'no'}"


def table(rows: list[dict]) -> str:
    detailed = any("detect_runs_s" in r for r in rows)
    direct = any("split_brain_direct" in r for r in rows)
    columns = [*COLUMNS[:-1], "split brain (labels / direct)" if direct else COLUMNS[-1],
               *(BREAKDOWN if detailed else ())]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for r in sorted(rows, key=lambda r: (not r["sync_mode"], r["scenario"])):
        cells = [r["scenario"], _mode(r), r["runs"], _s(r["rto_p50_s"]), _s(r["rto_p95_s"]),
                 r["lost_acknowledged_writes"], _s(r["rejoin_p50_s"]), _split_brain(r)]
        if detailed:
            cells += [_s(_median(r.get("detect_runs_s") or [])), _s(_median(r.get("failover_runs_s") or []))]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    out = None
    if argv[:1] == ["--merge-into"]:
        out, argv = Path(argv[1]), argv[2:]
    rows = [row for f in (argv or [str(DEFAULT)]) for row in json.loads(Path(f).read_text())]
    if out is not None:
        out.write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
