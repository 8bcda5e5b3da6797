"""Test helpers around the CRD's OpenAPI schema: load it, walk it, default like the API server, validate."""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "archop.io_architectures.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def load_crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def openapi_schema() -> dict[str, Any]:
    return load_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its dotted path (array items appear as `path[]`)."""
    yield path, node
    for key, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{key}" if path else key)
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")


def apply_defaults(obj: Any, node: dict[str, Any]) -> Any:
    """Structural defaulting as the API server does it: top-down, a defaulted object gets its own defaults."""
    if isinstance(obj, dict):
        for key, child in (node.get("properties") or {}).items():
            if key not in obj and "default" in child:
                obj[key] = copy.deepcopy(child["default"])
            if key in obj:
                obj[key] = apply_defaults(obj[key], child)
    elif isinstance(obj, list) and "items" in node:
        return [apply_defaults(item, node["items"]) for item in obj]
    return obj


def _to_jsonschema(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
        if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
            # Kubernetes prunes unknown fields; for the tests an unknown field is a mistake in the example.
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_to_jsonschema(v) for v in node]
    return node


def json_schema() -> dict[str, Any]:
    """The OpenAPI schema as plain JSON Schema (no x-kubernetes-*; unknown fields are errors)."""
    schema = _to_jsonschema(openapi_schema())
    schema["properties"]["metadata"]["additionalProperties"] = True
    return schema


def validate(obj: dict[str, Any]) -> None:
    """Validate a whole Architecture (after defaulting) with the OpenAPI part of the schema (not CEL)."""
    jsonschema.validate(obj, json_schema())


def openapi_errors(obj: dict[str, Any]) -> list[str]:
    """Every OpenAPI error of a (defaulted) Architecture, each as `dotted.path: message`, and the duplicates
    in its list-maps (x-kubernetes-list-type: map, which JSON Schema cannot say)."""
    validator = jsonschema.Draft202012Validator(json_schema())
    errors = [".".join(str(p) for p in e.absolute_path) + ": " + e.message
              for e in validator.iter_errors(obj)]
    return errors + list_map_duplicates(obj, openapi_schema())


def list_map_duplicates(obj: Any, node: dict[str, Any], path: str = "") -> list[str]:
    """`path[i]: Duplicate value` for every item of a list-map whose keys an earlier item has, as the API
    server says it."""
    out: list[str] = []
    if isinstance(obj, dict):
        for key, child in (node.get("properties") or {}).items():
            if key in obj:
                out += list_map_duplicates(obj[key], child, f"{path}.{key}" if path else key)
    elif isinstance(obj, list) and "items" in node:
        keys = node.get("x-kubernetes-list-map-keys") if node.get("x-kubernetes-list-type") == "map" else None
        seen = set()
        for i, item in enumerate(obj):
            if keys and isinstance(item, dict):
                ident = tuple(item.get(k) for k in keys)
                if ident in seen:
                    out.append(f"{path}[{i}]: Duplicate value: {dict(zip(keys, ident, strict=True))}")
                seen.add(ident)
            out += list_map_duplicates(item, node["items"], f"{path}[{i}]")
    return out


def cel_rules() -> list[tuple[str, dict[str, str]]]:
    return [(path, rule) for path, node in walk(openapi_schema())
            for rule in node.get("x-kubernetes-validations", [])]


# --- CEL: evaluate the x-kubernetes-validations rules with cel-python plus the Kubernetes extensions used.

_SUFFIX = {"": 1, "m": 0.001, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def _quantity_value(text: str) -> float:
    m = re.fullmatch(r"(-?[0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)", str(text))
    if not m or m.group(2) not in _SUFFIX:
        raise ValueError(f"not a quantity: {text!r}")
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def _cel_functions() -> dict[str, Any]:
    from celpy import celtypes

    def substring(s: Any, start: Any, end: Any = None) -> Any:
        return celtypes.StringType(str(s)[int(start):] if end is None else str(s)[int(start):int(end)])

    def quantity(s: Any) -> Any:
        return celtypes.DoubleType(_quantity_value(str(s)))

    def compare_to(a: Any, b: Any) -> Any:
        return celtypes.IntType((float(a) > float(b)) - (float(a) < float(b)))

    def is_quantity(s: Any) -> Any:
        try:
            _quantity_value(str(s))
        except ValueError:
            return celtypes.BoolType(False)
        return celtypes.BoolType(True)

    def find(s: Any, pattern: Any) -> Any:
        m = re.search(str(pattern), str(s))
        return celtypes.StringType(m.group(0) if m else "")

    def lower_ascii(s: Any) -> Any:
        return celtypes.StringType(str(s).lower())

    def as_approximate_float(q: Any) -> Any:
        return celtypes.DoubleType(float(q))

    return {"substring": substring, "quantity": quantity, "compareTo": compare_to, "isQuantity": is_quantity,
            "find": find, "lowerAscii": lower_ascii, "asApproximateFloat": as_approximate_float}


def _value_at(obj: Any, path: str) -> tuple[bool, Any]:
    """The value at a dotted schema path that goes through no list items (for those: _item_values)."""
    if not path:
        return True, obj
    for key in path.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return False, None
        obj = obj[key]
    return True, obj


def _escape_name(name: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return name
    for char, escaped in (("_", "__underscores__"), ("-", "__dash__"), (".", "__dot__"), ("/", "__slash__")):
        name = name.replace(char, escaped)
    return name


def _escape(value: Any) -> Any:
    """Property names as Kubernetes CEL sees them: a name that is no CEL identifier is escaped
    (ephemeral-storage -> ephemeral__dash__storage)."""
    if isinstance(value, dict):
        return {_escape_name(k): _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value


@functools.cache
def _program(rule: str) -> Any:
    import celpy

    env = celpy.Environment()
    return env.program(env.compile(rule), functions=_cel_functions())


def _as_cel_json(value: Any, node: dict[str, Any]) -> Any:
    """As the API server hands values to CEL: a `type: number` field is a double even when written as 0."""
    if node.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        props = node.get("properties") or {}
        return {k: _as_cel_json(v, props.get(k, {})) for k, v in value.items()}
    return value


@functools.cache
def _schema_index() -> dict[str, dict[str, Any]]:
    """Read-only: every schema node by path, and the CEL rules, parsed once per test session."""
    return dict(walk(openapi_schema()))


def _schema_at(path: str) -> dict[str, Any]:
    return _schema_index()[path]


def _rules() -> list[tuple[str, dict[str, str]]]:
    return [(path, rule) for path, node in _schema_index().items()
            for rule in node.get("x-kubernetes-validations", [])]


def cel_errors(new: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Messages of every CEL rule the (defaulted) object breaks; transition rules only when old is given."""
    import celpy

    errors: list[str] = []
    for path, rule in _rules():
        node = _schema_at(path)
        if "[]" in path:  # a rule on list items runs on each item (none of these is a transition rule)
            assert "oldSelf" not in rule["rule"], path
            for value in _item_values(new, path):
                if not _holds(rule["rule"], {"self": celpy.json_to_cel(_escape(_as_cel_json(value, node)))}):
                    errors.append(rule["message"])
            continue
        present, value = _value_at(new, path)
        if not present:
            continue
        activation: dict[str, Any] = {"self": celpy.json_to_cel(_escape(_as_cel_json(value, node)))}
        if "oldSelf" in rule["rule"]:
            old_present, old_value = _value_at(old, path) if old is not None else (False, None)
            if not old_present:
                continue  # transition rules run on updates only, when the old object had the field
            activation["oldSelf"] = celpy.json_to_cel(_escape(_as_cel_json(old_value, node)))
        if not _holds(rule["rule"], activation):
            errors.append(_message(rule, activation))
    return errors


def field_errors(path: str, value: Any, old: Any = None) -> list[str]:
    """Messages of the CEL rules on one field (a dotted schema path outside lists) for `value`, and for the
    update from `old` (transition rules only then): cel_errors for one field, without the whole object's."""
    import celpy

    node = _schema_at(path)
    activation: dict[str, Any] = {"self": celpy.json_to_cel(_escape(_as_cel_json(value, node)))}
    if old is not None:
        activation["oldSelf"] = celpy.json_to_cel(_escape(_as_cel_json(old, node)))
    return [_message(rule, activation) for rule in node.get("x-kubernetes-validations", [])
            if ("oldSelf" not in rule["rule"] or old is not None) and not _holds(rule["rule"], activation)]


def _message(rule: dict[str, str], activation: dict[str, Any]) -> str:
    """What the API server says for a broken rule: its messageExpression's value when that evaluates to a
    non-empty string, its message otherwise."""
    if "messageExpression" not in rule:
        return rule["message"]
    import celpy

    try:
        result = _program(rule["messageExpression"]).evaluate(activation)
    except celpy.CELEvalError:
        return rule["message"]
    return str(result) if isinstance(result, str) and result else rule["message"]


def _holds(rule: str, activation: dict[str, Any]) -> bool:
    """Whether a rule evaluates to true. An evaluation error (a field the OpenAPI part refuses as missing,
    say) is a refusal too, as on the API server."""
    import celpy

    try:
        result = _program(rule).evaluate(activation)
    except celpy.CELEvalError:
        return False
    return not isinstance(result, Exception) and bool(result)


def _item_values(obj: Any, path: str) -> list[Any]:
    """Every value at a schema path that goes through list items (`spec.app.env[].valueFrom`)."""
    values = [obj]
    for segment in path.split("."):
        key, is_list = (segment[:-2], True) if segment.endswith("[]") else (segment, False)
        values = [v[key] for v in values if isinstance(v, dict) and key in v]
        if is_list:
            values = [item for v in values if isinstance(v, list) for item in v]
    return values


def defaults_breaking_rules() -> list[str]:
    """The API server validates every `default` against its node's CEL rules *as written* (no nested
    defaults applied): rules must guard absent fields with has(). Messages of the rules a default breaks."""
    import celpy

    broken = []
    for path, node in walk(openapi_schema()):
        if "default" not in node:
            continue
        for rule in node.get("x-kubernetes-validations", []):
            if "oldSelf" in rule["rule"]:
                continue
            default = _escape(_as_cel_json(node["default"], node))
            result = _program(rule["rule"]).evaluate({"self": celpy.json_to_cel(default)})
            if isinstance(result, Exception) or not bool(result):
                broken.append(f"{path}: {rule['message']}")
    return broken
