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


def _s(v: object) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    return f"{v:g}" if isinstance(v, float) else str(v)


def table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for r in sorted(rows, key=lambda r: (not r["sync_mode"], r["scenario"])):
        cells = (r["scenario"], "sync" if r["sync_mode"] else "async", r["runs"], _s(r["rto_p50_s"]),
                 _s(r["rto_p95_s"]), r["lost_acknowledged_writes"], _s(r["rejoin_p50_s"]),
                 "yes" if r["split_brain_seen"] else "no")
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
