"""charts/archop/README.md is generated from the chart's values.yaml and must not go stale; every value
carries a `# --` description for it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from scripts import chart_readme

ROOT = Path(__file__).resolve().parents[2]


def test_every_value_has_a_description() -> None:
    missing = chart_readme.undocumented()
    assert not missing, f"values without a `# --` description in charts/archop/values.yaml: {missing}"


def test_chart_readme_matches_the_values() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "chart_readme.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_map_of_described_keys_is_a_section_and_an_undescribed_map_one_value() -> None:
    text = "\n".join([
        "# -- The section.",
        "outer:",
        "  # -- A leaf,",
        "  # over two lines.",
        "  leaf: 1",
        "  whole:",
        "    a: [x]",
        "#  - a commented-out example, not a description",
        "",
        "# -- Separated by a blank line from its key: not its description.",
        "",
        "plain: true",
    ])
    paths = {row.path: row for row in chart_readme.rows_of(text)}
    assert list(paths) == ["outer", "outer.leaf", "outer.whole", "plain"]
    assert paths["outer"].section and paths["outer"].description == "The section."
    assert paths["outer.leaf"].description == "A leaf, over two lines."
    assert (paths["outer.whole"].kind, paths["outer.whole"].default) == ("object", {"a": ["x"]})
    assert paths["outer.whole"].description == paths["plain"].description == ""
