"""Render docs/reference.md (the configuration reference) from the CRD, the one source of truth.

    python scripts/crd_reference.py          # rewrite docs/reference.md
    python scripts/crd_reference.py --check  # exit 1 if it is stale (operator/tests/test_reference_doc.py)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CRD = ROOT / "crds" / "archop.io_architectures.yaml"
OUT = ROOT / "docs" / "reference.md"


def rows(schema: dict[str, Any], path: str) -> list[str]:
    out: list[str] = []
    for name, prop in (schema.get("properties") or {}).items():
        here = f"{path}.{name}"
        kind = "int-or-string" if prop.get("x-kubernetes-int-or-string") else prop.get("type", "object")
        if kind == "array":
            kind = f"[]{(prop.get('items') or {}).get('type', 'object')}"
        limits = []
        if "enum" in prop:
            limits.append("one of " + ", ".join(f"`{v}`" for v in prop["enum"]))
        if "minimum" in prop or "maximum" in prop:
            limits.append(f"{prop.get('minimum', '')}..{prop.get('maximum', '')}")
        if "pattern" in prop:
            limits.append(f"pattern `{prop['pattern']}`")
        default = f"`{json.dumps(prop['default'])}`" if "default" in prop else ""
        text = " ".join((prop.get("description") or "").split()).replace("|", "\\|")
        if limits:
            text += " (" + "; ".join(limits) + ")"
        out.append(f"| `{here}` | {kind} | {default} | {text} |")
        if prop.get("properties"):
            out += rows(prop, here)
        elif (prop.get("items") or {}).get("properties"):
            out += rows(prop["items"], here + "[]")
    return out


def rules(schema: dict[str, Any], path: str) -> list[str]:
    out = [f"- `{path}`: {' '.join(r.get('message', r['rule']).split())}"
           for r in schema.get("x-kubernetes-validations") or []]
    for name, prop in (schema.get("properties") or {}).items():
        out += rules(prop, f"{path}.{name}")
    if "items" in schema:  # rules on each item of a list (spec.app.env[])
        out += rules(schema["items"], f"{path}[]")
    return out


def render() -> str:
    crd = yaml.safe_load(CRD.read_text())
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    lines = [
        "# Architecture configuration reference",
        "",
        f"Generated from `crds/{CRD.name}` by `python scripts/crd_reference.py`; do not edit by hand.",
        "`kubectl explain architecture.spec --recursive` shows the same descriptions on a cluster.",
        "",
        f"API: `{crd['spec']['group']}/{version['name']}`, kind `{crd['spec']['names']['kind']}`, "
        f"short name `{crd['spec']['names']['shortNames'][0]}`.",
        "",
        "## Spec",
        "",
        "| field | type | default | description |",
        "| --- | --- | --- | --- |",
        *rows(schema["properties"]["spec"], "spec"),
        "",
        "## Rules the API server enforces",
        "",
        *rules(schema, "Architecture"),
        "",
        "## Status",
        "",
        "| field | type | default | description |",
        "| --- | --- | --- | --- |",
        *rows(schema["properties"]["status"], "status"),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is stale: run python scripts/crd_reference.py", file=sys.stderr)
            sys.exit(1)
    else:
        OUT.write_text(text)
