"""Shared inputs of the builder tests: the examples, fixed settings and a stub CDN config."""

from __future__ import annotations

import itertools
from typing import Any

import yaml
from archop.config import Settings
from archop.spec import ArchitectureSpec
from crdschema import EXAMPLES

NAMESPACE = "demo"
SETTINGS = Settings(namespace="archop-system", identity="test")
# The real nginx.conf comes from build/nginx_conf.py (the app side); these tests check the shapes only.
STUB_CDN_CONF = "# stub nginx.conf for builder tests\n"


def example_specs() -> dict[str, tuple[str, ArchitectureSpec]]:
    """example file stem -> (Architecture name, typed spec)."""
    out = {}
    for path in EXAMPLES:
        obj = yaml.safe_load(path.read_text())
        out[path.stem] = (obj["metadata"]["name"], ArchitectureSpec.parse(obj.get("spec")))
    return out


def counting_passwords() -> Any:
    """Deterministic 'passwords' so snapshots are stable."""
    counter = itertools.count(1)
    return lambda: f"password-{next(counter)}"
