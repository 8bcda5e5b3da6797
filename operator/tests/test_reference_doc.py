"""docs/reference.md is generated from the CRD and must not go stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_reference_doc_matches_the_crd() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "crd_reference.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
