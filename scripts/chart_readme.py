"""Render charts/archop/README.md from the chart: Chart.yaml, the install commands of README.md and every
value of values.yaml with its helm-docs style `# --` description.

    python scripts/chart_readme.py          # rewrite charts/archop/README.md (make chart-readme)
    python scripts/chart_readme.py --check  # exit 1 if a value has no description or the README is stale

A value is a leaf (scalar, list or empty map), or a map none of whose keys carries a description of its own
(resources, securityContext, ...): such a map is one setting, passed on whole, and is shown whole. A map whose
keys are described is a section: its keys get rows, and it gets one only if it is described itself.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "archop"
VALUES = CHART / "values.yaml"
OUT = CHART / "README.md"
PROJECT_README = ROOT / "README.md"
# The README.md section whose first code block installs the chart.
INSTALL_HEADING = "### The operator itself"
MARKER = "# --"


@dataclass(frozen=True)
class Row:
    path: str
    kind: str
    default: Any
    description: str
    section: bool = False


def description_above(lines: list[str], line: int) -> str:
    """The `# --` comment right above a key (no blank line between), its `#` continuation lines joined."""
    block: list[str] = []
    for text in reversed(lines[:line]):
        stripped = text.strip()
        if not stripped.startswith("#"):
            break
        block.insert(0, stripped)
    starts = [i for i, text in enumerate(block) if text.startswith(MARKER)]
    if not starts:
        return ""
    first, *rest = block[starts[-1]:]
    words = [first[len(MARKER):].strip(), *(text.lstrip("#").strip() for text in rest)]
    return " ".join(word for word in words if word)


def kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def has_described_key(node: yaml.MappingNode, lines: list[str]) -> bool:
    for key, value in node.value:
        if description_above(lines, key.start_mark.line):
            return True
        if isinstance(value, yaml.MappingNode) and has_described_key(value, lines):
            return True
    return False


def rows(node: yaml.MappingNode, data: dict[str, Any], lines: list[str], prefix: str = "") -> list[Row]:
    out: list[Row] = []
    for key, value in node.value:
        path = f"{prefix}{key.value}"
        text = description_above(lines, key.start_mark.line)
        default = data[key.value]
        if isinstance(value, yaml.MappingNode) and has_described_key(value, lines):
            if text:
                out.append(Row(path, "object", default, text, section=True))
            out += rows(value, default, lines, f"{path}.")
        else:
            out.append(Row(path, kind_of(default), default, text))
    return out


def rows_of(text: str) -> list[Row]:
    root = yaml.compose(text)
    if not isinstance(root, yaml.MappingNode):
        raise ValueError("values are not a map")
    return rows(root, yaml.safe_load(text), text.splitlines())


def values_rows() -> list[Row]:
    return rows_of(VALUES.read_text())


def undocumented() -> list[str]:
    return [row.path for row in values_rows() if not row.description]


def install_commands() -> list[str]:
    lines = PROJECT_README.read_text().splitlines()
    if INSTALL_HEADING not in lines:
        raise ValueError(f"README.md has no {INSTALL_HEADING!r} section: update INSTALL_HEADING")
    start = lines.index(INSTALL_HEADING)
    opening = next(i for i in range(start, len(lines)) if lines[i].startswith("```"))
    closing = lines.index("```", opening + 1)
    return lines[opening:closing + 1]


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def table_row(row: Row) -> str:
    # A section's keys have rows of their own: repeating its whole default here would only duplicate them.
    default = "" if row.section else f"`{cell(json.dumps(row.default))}`"
    return f"| `{row.path}` | {row.kind} | {default} | {cell(row.description)} |"


def render() -> str:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    lines = [
        f"# {chart['name']}",
        "",
        f"Version {chart['version']}, appVersion {chart['appVersion']}, Kubernetes {chart['kubeVersion']}.",
        "",
        chart["description"],
        "",
        "Generated from `values.yaml` and `Chart.yaml` by `make chart-readme` (`scripts/chart_readme.py`); "
        "do not edit by hand.",
        "",
        "## Install",
        "",
        # The chart's home, not a relative link: this README also ships in the chart (helm show readme).
        f"From the root of a checkout of [the repository]({chart['home']}):",
        "",
        *install_commands(),
        "",
        "## Values",
        "",
        "Each value is checked by `values.schema.json`: an unknown key or a wrong type fails the install.",
        "",
        "| key | type | default | description |",
        "| --- | --- | --- | --- |",
        *(table_row(row) for row in values_rows()),
        "",
    ]
    return "\n".join(lines)


def check() -> list[str]:
    problems = [f"{path}: no `# --` description in {VALUES.relative_to(ROOT)}" for path in undocumented()]
    if not OUT.exists() or OUT.read_text() != render():
        problems.append(f"{OUT.relative_to(ROOT)} is stale: run make chart-readme")
    return problems


def main(argv: list[str]) -> int:
    if "--check" not in argv:
        OUT.write_text(render())
        return 0
    problems = check()
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
