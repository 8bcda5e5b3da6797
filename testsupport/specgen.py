"""Hypothesis strategies for Architecture specs, drawn from the CRD's own schema (crds/), shared by the
offline fuzz test (operator/tests/test_spec_fuzz.py) and the one against the real API server
(e2e/tests/test_spec_fuzz.py).

Every property is optional unless the schema requires it; integers, numbers and strings stay within the
schema's bounds and patterns where it has them, lists hold a few items (unique by their keys where the schema
says so), and quantities come as integers or strings, so that both sides of every rule are drawn.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

CRD_PATH = Path(__file__).resolve().parents[1] / "crds" / "archop.io_architectures.yaml"
# Drawn by the callers from the pod names of the Architecture they build.
SKIPPED = frozenset({"spec.database.switchoverTo"})


@functools.cache
def spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD_PATH.read_text())
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"])


def _string(node: dict[str, Any]) -> st.SearchStrategy[str]:
    if "enum" in node:
        return st.sampled_from(node["enum"])
    strategy = st.from_regex(node["pattern"], fullmatch=True) if "pattern" in node else st.text(max_size=20)
    # Python's `$` also matches before a final newline; the API server's (Go) does not.
    strategy = strategy.filter(lambda s: "\n" not in s)
    if "maxLength" in node:
        strategy = strategy.filter(lambda s: len(s) <= node["maxLength"])
    return strategy


def _integer(node: dict[str, Any]) -> st.SearchStrategy[int]:
    # Unbounded integers (quantities) reach past every range the rules allow, both ways.
    return st.integers(node.get("minimum", -(2**20)), node.get("maximum", 2**62))


def strategy_for(node: dict[str, Any], path: str = "spec") -> st.SearchStrategy[Any]:
    """Values of one schema node; objects get any subset of their properties."""
    if node.get("x-kubernetes-int-or-string"):
        return st.one_of(_integer(node), _string(node))
    kind = node.get("type")
    if kind == "object":
        required = set(node.get("required") or [])
        props = {k: strategy_for(v, f"{path}.{k}") for k, v in (node.get("properties") or {}).items()
                 if f"{path}.{k}" not in SKIPPED}
        return st.fixed_dictionaries({k: v for k, v in props.items() if k in required},
                                     optional={k: v for k, v in props.items() if k not in required})
    if kind == "array":
        # A few items (the limits are for the API server's cost estimate, not what the builders care about);
        # a list-map's items are unique by its keys, as the API server insists.
        keys = node.get("x-kubernetes-list-map-keys") or []
        return st.lists(strategy_for(node["items"], f"{path}[]"), max_size=min(3, node.get("maxItems", 3)),
                        unique_by=(lambda item: tuple(item.get(k) for k in keys)) if keys else None)
    if kind == "integer":
        return _integer(node)
    if kind == "number":
        return st.floats(node.get("minimum", -1e6), node.get("maximum", 1e6), allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        return _string(node)
    raise AssertionError(f"{path}: no strategy for {node}")


def specs() -> st.SearchStrategy[dict[str, Any]]:
    """Whole specs: valid and invalid ones (the schema's bounds hold, the cross-field rules may not)."""
    return strategy_for(spec_schema())
