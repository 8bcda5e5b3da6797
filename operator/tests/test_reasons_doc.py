"""docs/architecture.md's catalogue and archop/reasons.py list exactly the same names."""

from __future__ import annotations

import re
from pathlib import Path

from archop import reasons

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def catalogue_names() -> set[str]:
    text = DOC.read_text()
    section = text.split("## Catalogue of conditions and reasons", 1)[1]
    return set(re.findall(r"^\| `([A-Za-z]+)` \|", section, flags=re.MULTILINE))


def defined_names() -> set[str]:
    return {v for k, v in vars(reasons).items() if k.isupper() and isinstance(v, str)}


def test_every_reason_is_documented() -> None:
    assert defined_names() - catalogue_names() == set()


def test_the_catalogue_names_nothing_undefined() -> None:
    assert catalogue_names() - defined_names() == set()


def test_reasons_are_camel_case_and_unique() -> None:
    names = [v for k, v in vars(reasons).items() if k.isupper() and isinstance(v, str)]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[A-Z][a-zA-Z]+", n) for n in names)
