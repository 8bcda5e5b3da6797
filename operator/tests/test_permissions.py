"""The operator's RBAC: three inventories of (resource, verb) must agree exactly.

1. The table, operator/archop/permissions.py (NEEDS): authoritative.
2. The source: every Kubernetes API call found in operator/archop, statically:
   - archop.apply is the only way to the API for the operator's own calls. Each of its functions sends
     requests through apply._request(client, <verb>, <apiVersion>, <kind>, ...); the walk summarises every
     function in those terms (following calls inside apply), then resolves every call site elsewhere
     (`apply.get(client, "v1", "Secret", ...)`, also through asyncio.to_thread) to constant kinds. Call sites
     whose kinds come from the builders (the reconcile's apply/create/prune of children) are resolved by
     running the builders over every example and an everything-enabled spec.
   - kopf: the resources of the kopf handlers (list, watch, and patch for finalizer and annotations), its
     event calls (create), and what its settings would add (scanning, peering, status progress storage).
   - archop.election: the calls kubernetes.leaderelection's LeaseLock makes, read from that library.
   - and guards: no other module imports an API client, and nothing outside apply._request sends a
     request; an unknown kopf call or handler kind fails too.
3. The chart: `helm template` in the cluster-wide mode and in the namespaced mode (watchNamespaces).

So a new API call without RBAC fails here, as does a grant the code no longer needs.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
import pytest
import requests
import test_chart as chart
import yaml
from archop import apply, main, names, permissions
from archop.build import build_all, optional_children, secrets, tls
from archop.config import Settings
from archop.permissions import APPLICATION, FRAMEWORK, LEADER_ELECTION, NEEDS, NODES, Scope
from archop.spec import ArchitectureSpec

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "archop"

Grant = tuple[str, Scope, str, str, str]  # (role, scope, group, resource, verb)

# ---------------------------------------------------------------------------------------------- the source


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    parents: dict[ast.AST, ast.AST] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node

    def where(self, node: ast.AST) -> str:
        return f"{self.path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"

    def enclosing(self, node: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
        """The functions around `node`, innermost first."""
        out = []
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                out.append(node)
        return out


MODULES = {m.name: m for m in (Module(_module_name(p), p, ast.parse(p.read_text()))
                               for p in sorted(PACKAGE.rglob("*.py")))}


# Values the walk can tell apart: a constant, an argument of the function being summarised (with a path
# into it: keys, None for "an element of"), a dict literal, or unknown.
@dataclass(frozen=True)
class Const:
    value: Any


@dataclass(frozen=True)
class Arg:
    param: str
    path: tuple[str | None, ...] = ()


@dataclass(frozen=True)
class DictVal:
    items: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Unknown:
    why: str


Value = Const | Arg | DictVal | Unknown


def _index(value: Value, key: str | None) -> Value:
    if isinstance(value, Arg):
        return Arg(value.param, (*value.path, key))
    if isinstance(value, DictVal) and key is not None:
        return dict(value.items).get(key, Unknown(f"no key {key}"))
    if isinstance(value, Const) and isinstance(value.value, dict) and key is not None:
        return Const(value.value.get(key))
    if isinstance(value, Unknown):
        return value  # keeps where it came from (a builder's result, say)
    return Unknown(f"[{key}] of {value}")


class Env:
    """What a name means inside one function (and the functions around it) of one module."""

    def __init__(self, module: Module, functions: list[ast.FunctionDef | ast.AsyncFunctionDef]) -> None:
        self.module = module
        self.params: set[str] = set()
        self.locals: dict[str, ast.expr] = {}
        self.loops: dict[str, ast.expr] = {}
        for fn in reversed(functions):  # inner definitions win
            a = fn.args
            self.params |= {p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)}
            for node in ast.walk(fn):
                if isinstance(node, ast.Assign) and [type(t) for t in node.targets] == [ast.Name]:
                    self.locals[node.targets[0].id] = node.value  # type: ignore[attr-defined]
                elif isinstance(node, ast.For | ast.comprehension) and isinstance(node.target, ast.Name):
                    self.loops[node.target.id] = node.iter

    def eval(self, node: ast.expr) -> Value:
        match node:
            case ast.Constant(value=value):
                return Const(value)
            case ast.Attribute(value=ast.Name(id=alias), attr=attr) if alias in _archop_aliases(self.module):
                return _runtime_constant(_archop_aliases(self.module)[alias], attr)
            case ast.Name(id=name):
                if name in self.params:
                    return Arg(name)
                if name in self.locals:
                    return self.eval(self.locals[name])
                if name in self.loops:
                    return _index(self.eval(self.loops[name]), None)
                return _runtime_constant(self.module.name, name)
            case ast.Dict(keys=keys, values=values):
                items = []
                for k, v in zip(keys, values, strict=True):
                    if isinstance(k, ast.Constant) and isinstance(k.value, str):
                        items.append((k.value, self.eval(v)))
                return DictVal(tuple(items))
            case ast.Subscript(value=value, slice=ast.Constant(value=key)) if isinstance(key, str):
                return _index(self.eval(value), key)
            case ast.Call(func=func):
                return Unknown(ast.unparse(func))  # what it returns, and of what kinds, only running tells
        return Unknown(ast.unparse(node))


def _archop_aliases(module: Module) -> dict[str, str]:
    """Local names of imported archop modules: {'names': 'archop.names', 'd': 'archop.failover.decide'}."""
    out = {}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "archop":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in MODULES:
                    out[alias.asname or alias.name] = full
    return out


def _runtime_constant(module: str, name: str) -> Value:
    value = getattr(importlib.import_module(module), name, None)
    if isinstance(value, str) or (isinstance(value, tuple) and all(isinstance(v, str) for v in value)):
        return Const(value)
    return Unknown(f"{module}.{name}")


# --- archop.apply: each function's requests, in terms of its own parameters

@dataclass(frozen=True)
class Request:
    verb: str
    api_version: Value
    kind: Value
    subresource: Value


APPLY = MODULES["archop.apply"]
APPLY_FUNCTIONS = {n.name: n for n in APPLY.tree.body if isinstance(n, ast.FunctionDef)}
REQUEST_FUNCTION = "_request"


def _bind(fn: ast.FunctionDef, call_args: list[ast.expr], keywords: list[ast.keyword],
          scope: Env) -> dict[str, Value]:
    """The parameters of `fn` as the call passes them, evaluated in the caller's scope (defaults too)."""
    a = fn.args
    positional = [p.arg for p in (*a.posonlyargs, *a.args)]
    bound: dict[str, Value] = {}
    defaults = dict(zip(positional[len(positional) - len(a.defaults):], a.defaults, strict=True))
    defaults |= {p.arg: d for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is not None}
    for param, default in defaults.items():
        bound[param] = scope.eval(default)
    for param, arg in zip(positional, call_args, strict=False):
        bound[param] = scope.eval(arg)
    for kw in keywords:
        if kw.arg is not None:
            bound[kw.arg] = scope.eval(kw.value)
    return bound


def _substitute(value: Value, bound: dict[str, Value]) -> Value:
    if not isinstance(value, Arg):
        return value
    out = bound.get(value.param, Unknown(f"{value.param} not passed"))
    for key in value.path:
        out = _index(out, key)
    return out


_summaries: dict[str, list[Request]] = {}


def summary(name: str) -> list[Request]:
    """Every request apply.<name> can send, its kind and version in terms of its parameters."""
    if name in _summaries:
        return _summaries[name]
    fn = APPLY_FUNCTIONS[name]
    scope = Env(APPLY, [fn])
    out: list[Request] = []
    for node in ast.walk(fn):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        callee = node.func.id
        if callee == REQUEST_FUNCTION:
            bound = _bind(APPLY_FUNCTIONS[callee], node.args, node.keywords, scope)
            verb = bound["verb"]
            assert isinstance(verb, Const) and verb.value in permissions.REQUEST_VERBS, (
                f"{APPLY.where(node)}: the verb of a request must be a literal of permissions.REQUEST_VERBS")
            out.append(Request(verb.value, bound["api_version"], bound["kind"], bound["subresource"]))
        elif callee in APPLY_FUNCTIONS and callee != name:
            bound = _bind(APPLY_FUNCTIONS[callee], node.args, node.keywords, scope)
            out += [Request(r.verb, _substitute(r.api_version, bound), _substitute(r.kind, bound),
                            _substitute(r.subresource, bound)) for r in summary(callee)]
    _summaries[name] = out
    return out


# --- call sites of archop.apply elsewhere

@dataclass(frozen=True)
class CallSite:
    module: str
    function: str  # the enclosing function, dotted for nested ones
    callee: str  # apply.<callee>
    where: str
    requests: tuple[Request, ...]  # resolved as far as the call site's own arguments allow


def _apply_aliases(module: Module) -> set[str]:
    out = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.ImportFrom) and node.module == "archop":
            out |= {a.asname or a.name for a in node.names if a.name == "apply"}
        if isinstance(node, ast.ImportFrom) and node.module == "archop.apply":
            pytest.fail(f"{module.where(node)}: import archop.apply as a module "
                        "(`from archop import apply`), so its calls can be found")
    return out


def call_sites() -> list[CallSite]:
    out = []
    for module in MODULES.values():
        if module is APPLY:
            continue
        aliases = _apply_aliases(module)
        for node in ast.walk(module.tree):
            if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr in APPLY_FUNCTIONS):
                continue
            if not summary(node.attr):
                continue  # sends nothing (apply.api, ...)
            parent = module.parents[node]
            if isinstance(parent, ast.Call) and parent.func is node:
                args, keywords = parent.args, parent.keywords
            elif (isinstance(parent, ast.Call) and parent.args and parent.args[0] is node
                  and ast.unparse(parent.func) in ("asyncio.to_thread", "to_thread")):
                args, keywords = parent.args[1:], parent.keywords
            else:
                pytest.fail(f"{module.where(node)}: apply.{node.attr} is used without being called directly "
                            "(or through asyncio.to_thread): its API calls cannot be inventoried")
            functions = module.enclosing(node)
            scope = Env(module, functions)
            bound = _bind(APPLY_FUNCTIONS[node.attr], args, keywords, scope)
            sent = tuple(Request(r.verb, _substitute(r.api_version, bound), _substitute(r.kind, bound),
                                 _substitute(r.subresource, bound)) for r in summary(node.attr))
            qualname = ".".join(f.name for f in reversed(functions)) or "<module>"
            out.append(CallSite(module.name, qualname, node.attr, module.where(node), sent))
    return out


def _specs() -> list[ArchitectureSpec]:
    out = [ArchitectureSpec()]
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == names.KIND:
                out.append(ArchitectureSpec.parse(doc.get("spec")))
    out.append(ArchitectureSpec.parse({  # every optional child at once
        "database": {"followers": 2}, "cache": {"enabled": True}, "cdn": {"enabled": True},
        "ingress": {"enabled": True}, "app": {"replicas": 3, "autoscaling": {"enabled": True}}}))
    out.append(ArchitectureSpec.parse({  # and none
        "cache": {"enabled": False}, "cdn": {"enabled": False}, "ingress": {"enabled": False},
        "app": {"replicas": 1}}))
    return out


def _children() -> set[tuple[str, str]]:
    settings = Settings(namespace="archop-system", identity="test")
    return {(m["apiVersion"], m["kind"]) for spec in _specs()
            for m in build_all("shop", "demo", spec, settings, "# nginx.conf\n")}


def _secrets() -> set[tuple[str, str]]:
    return {(m["apiVersion"], m["kind"]) for m in secrets.build_secrets("shop", "demo")}


def _tls() -> set[tuple[str, str]]:
    return {(m["apiVersion"], m["kind"]) for m in tls.stubs("shop", "demo")}


def _tls_secrets() -> set[tuple[str, str]]:
    return {(m["apiVersion"], m["kind"]) for m in tls.plan("shop", "demo", {}).create}


def _optional() -> set[tuple[str, str]]:
    return {(m["apiVersion"], m["kind"]) for m in optional_children("shop", "demo")}


# Call sites whose kinds come from a builder: (the builder whose result is passed, apply.<function>) -> the
# kinds that builder makes. Everything else must resolve to constant kinds in the source itself.
BUILT: dict[tuple[str, str], Any] = {
    # The reconcile: every child is read first (the ownership check) ...
    ("build_all", "read_children"): _children,
    ("secrets.build_secrets", "read_children"): _secrets,
    ("absent_optional_children", "read_children"): _optional,
    ("tls.stubs", "read_children"): _tls,
    # ... then every child is server-side applied ...
    ("build_all", "apply_all"): _children,
    # ... the Secrets are created once ...
    ("secrets.build_secrets", "create_if_absent"): _secrets,
    ("plan.create", "create_if_absent"): _tls_secrets,  # reconcile._tls: tls.plan(...).create
    # ... and the optional children the spec leaves out are pruned.
    ("absent_optional_children", "delete"): _optional,
}


def _grant_of(api_version: str, kind: str, verb: str, subresource: str, where: str) -> list[Grant]:
    found = permissions.KINDS.get(kind)
    group = api_version.rpartition("/")[0]
    assert found is not None and found.group == group, (
        f"{where}: {kind} ({api_version}) is called but not declared in archop/permissions.py KINDS")
    resource = f"{found.plural}/{subresource}" if subresource else found.plural
    role, scope = (APPLICATION, Scope.WATCHED) if found.namespaced else (NODES, Scope.CLUSTER)
    return [(role, scope, group, resource, v) for v in permissions.REQUEST_VERBS[verb]]


def operator_grants() -> set[Grant]:
    """What archop's own calls (through archop.apply) need."""
    out: set[Grant] = set()
    for site in call_sites():
        for request in site.requests:
            sub = request.subresource.value if isinstance(request.subresource, Const) else None
            assert sub is not None, f"{site.where}: the subresource of apply.{site.callee} is not a constant"
            if isinstance(request.kind, Const) and isinstance(request.api_version, Const):
                out.update(_grant_of(request.api_version.value, request.kind.value, request.verb, sub,
                                     site.where))
                continue
            origin = request.kind.why if isinstance(request.kind, Unknown) else None
            built = BUILT.get((origin or "", site.callee))
            assert built is not None, (
                f"{site.where}: apply.{site.callee} is called with a kind the walk cannot resolve "
                f"({request.kind}); pass constants, or add the builders of that call site to BUILT here")
            for api_version, kind in built():
                out.update(_grant_of(api_version, kind, request.verb, sub, site.where))
    return out


# --- kopf

# Handlers bound to a resource: kopf lists and watches it; for all but on.event and index it also patches
# it (finalizer, progress and diff-base annotations). An index shares kopf's one watch of the resource.
KOPF_RESOURCE_HANDLERS = {"on.create", "on.update", "on.resume", "on.delete", "on.field", "on.event",
                          "daemon", "timer", "index"}
KOPF_READ_ONLY_HANDLERS = {"on.event", "index"}
KOPF_OPERATOR_HANDLERS = {"on.startup", "on.cleanup", "on.login", "on.probe"}
KOPF_EVENT_CALLS = {"info", "warn", "exception", "event"}  # POST an Event
KOPF_API_FREE = {"adopt", "configure", "run", "OperatorSettings", "AnnotationsProgressStorage",
                 "AnnotationsDiffBaseStorage", "TemporaryError", "PermanentError"}


def _kopf_name(node: ast.expr) -> str | None:
    """'on.create' for kopf.on.create, 'info' for kopf.info; None when not rooted at kopf."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id == "kopf" and parts:
        return ".".join(reversed(parts))
    return None


def _handler_resource(module: Module, call: ast.Call) -> tuple[str, str]:
    scope = Env(module, [])
    values: list[Any] = []
    for arg in call.args:
        value = scope.eval(arg.value if isinstance(arg, ast.Starred) else arg)
        assert isinstance(value, Const), f"{module.where(call)}: the handler's resource is not a constant"
        values += list(value.value) if isinstance(arg, ast.Starred) else [value.value]
    assert len(values) == 3, f"{module.where(call)}: expected (group, version, plural), got {values}"
    return values[0], values[2]


def kopf_grants() -> set[Grant]:
    out: set[Grant] = set()
    decorators = {id(d) for m in MODULES.values() for n in ast.walk(m.tree)
                  if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) for d in n.decorator_list}
    runs = []
    for module in MODULES.values():
        for node in ast.walk(module.tree):
            if not isinstance(node, ast.Call):
                continue
            name = _kopf_name(node.func)
            if name is None:
                continue
            if id(node) in decorators:
                if name in KOPF_OPERATOR_HANDLERS:
                    continue
                assert name in KOPF_RESOURCE_HANDLERS, (
                    f"{module.where(node)}: kopf.{name} is not in this inventory (admission webhooks need "
                    "webhook configurations): add what it needs")
                group, plural = _handler_resource(module, node)
                verbs = ("list", "watch") if name in KOPF_READ_ONLY_HANDLERS else ("list", "watch", "patch")
                out |= {(FRAMEWORK, Scope.WATCHED, group, plural, v) for v in verbs}
            elif name in KOPF_EVENT_CALLS:
                out.add((FRAMEWORK, Scope.WATCHED, "", "events", "create"))
            elif name == "run":
                runs.append(node)
            else:
                assert name.split(".")[0] in KOPF_API_FREE, (
                    f"{module.where(node)}: kopf.{name} is not in this inventory: add what it calls")
    # kopf's own machinery, as main.configure and kopf.run set it up.
    assert runs, "kopf.run not found"
    peering = {(FRAMEWORK, Scope.WATCHED, "kopf.dev", "kopfpeerings", v) for v in ("list", "watch", "patch")}
    for call in runs:
        standalone = {k.arg: k.value for k in call.keywords}.get("standalone")
        if not (isinstance(standalone, ast.Constant) and standalone.value is True):
            out |= peering
    settings = kopf.OperatorSettings()
    main.configure(settings=settings)
    if not settings.scanning.disabled:
        out |= {(FRAMEWORK, Scope.CLUSTER, "apiextensions.k8s.io", "customresourcedefinitions", v)
                for v in ("list", "watch")}
        out |= {(FRAMEWORK, Scope.CLUSTER, "", "namespaces", v) for v in ("list", "watch")}
    if not settings.peering.standalone:
        out |= peering
    annotations = (kopf.AnnotationsProgressStorage, kopf.AnnotationsDiffBaseStorage)
    if not (isinstance(settings.persistence.progress_storage, annotations[0])
            and isinstance(settings.persistence.diffbase_storage, annotations[1])):
        out.add((FRAMEWORK, Scope.WATCHED, names.GROUP, f"{names.PLURAL}/status", "patch"))
    return out


# --- archop.election: kubernetes.leaderelection's LeaseLock

LEASE_METHODS = {"read": "get", "create": "create", "replace": "update", "patch": "patch", "delete": "delete",
                 "list": "list"}


def election_grants() -> set[Grant]:
    election = MODULES["archop.election"]
    calls = [n for n in ast.walk(election.tree) if isinstance(n, ast.Call)]
    locks = [n for n in calls if ast.unparse(n.func) == "LeaseLock"]
    assert len(locks) == 1, "archop.election creates one LeaseLock"
    namespace = ast.unparse(locks[0].args[1])
    assert namespace == "settings.namespace", "the operator Lease is in the release namespace"
    apis = {ast.unparse(n.func) for n in calls if re.fullmatch(r"client\.\w+Api", ast.unparse(n.func))}
    assert apis == {"client.CoordinationV1Api"}, f"archop.election uses other Kubernetes APIs: {apis}"
    from kubernetes.leaderelection.resourcelock import leaselock

    source = inspect.getsource(leaselock)
    methods = set(re.findall(r"self\.api_instance\.(\w+)\(", source))
    assert methods, "LeaseLock calls nothing through api_instance any more: read the library again"
    out: set[Grant] = set()
    for method in methods:
        action, _, rest = method.partition("_")
        assert rest == "namespaced_lease" and action in LEASE_METHODS, f"LeaseLock calls {method}"
        out.add((LEADER_ELECTION, Scope.RELEASE, "coordination.k8s.io", "leases", LEASE_METHODS[action]))
    return out


# --- guards: every way to the API is one of the above

API_CLIENTS = {"pykube", "kubernetes", "kubernetes_asyncio", "requests", "aiohttp", "httpx", "urllib3"}
ALLOWED_IMPORTS = {"archop.apply": {"pykube", "requests"}, "archop.election": {"kubernetes"}}


def test_only_apply_and_election_import_an_api_client() -> None:
    offending = []
    for module in MODULES.values():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                tops = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = {node.module.split(".")[0]}
            else:
                continue
            for top in tops & API_CLIENTS - ALLOWED_IMPORTS.get(module.name, set()):
                offending.append(f"{module.where(node)} imports {top}")
    assert not offending, ("route Kubernetes calls through archop.apply (declared in archop.permissions): "
                           + "; ".join(offending))


def test_requests_are_sent_only_by_apply_request() -> None:
    offending = []
    for module in MODULES.values():
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                    "request", "resource_list", "get_by_name", "get_or_none", "objects", "object_factory"):
                functions = module.enclosing(node)
                if module is APPLY and functions and functions[0].name == REQUEST_FUNCTION:
                    continue
                offending.append(f"{module.where(node)}: {ast.unparse(node.func)}")
    assert not offending, "API requests outside apply._request: " + "; ".join(offending)


# ---------------------------------------------------------------------------------------------- the table


def declared() -> set[Grant]:
    return {(n.role, n.scope, n.group, n.resource, v) for n in NEEDS for v in n.verbs}


def source_grants() -> set[Grant]:
    return operator_grants() | kopf_grants() | election_grants()


def _show(grants: set[Grant]) -> str:
    return "\n  ".join(f"{role} ({scope.value}): {verb} {group or 'core'}/{resource}"
                       for role, scope, group, resource, verb in sorted(grants, key=str))


def test_the_source_calls_exactly_what_the_table_declares() -> None:
    called, table = source_grants(), declared()
    missing, unused = called - table, table - called
    assert not missing, f"called but not in archop/permissions.py (nor in the chart):\n  {_show(missing)}"
    assert not unused, f"declared in archop/permissions.py but never called:\n  {_show(unused)}"


def test_the_inventory_found_every_kind_of_call() -> None:
    """The walk sees the calls it is meant to see (so an empty walk cannot pass the test above)."""
    called = source_grants()
    for grant in [
        (APPLICATION, Scope.WATCHED, "", "persistentvolumeclaims", "patch"),  # volume growth
        (APPLICATION, Scope.WATCHED, "", "secrets", "get"),  # the monitor's credentials
        (APPLICATION, Scope.WATCHED, "apps", "statefulsets", "create"),  # server-side apply of a new child
        (APPLICATION, Scope.WATCHED, "policy", "poddisruptionbudgets", "delete"),  # pruning
        (APPLICATION, Scope.WATCHED, "", "services", "get"),  # the ownership check
        (APPLICATION, Scope.WATCHED, "networking.k8s.io", "networkpolicies", "get"),
        (APPLICATION, Scope.WATCHED, names.GROUP, f"{names.PLURAL}/status", "patch"),
        (APPLICATION, Scope.WATCHED, "coordination.k8s.io", "leases", "get"),  # the claim
        (NODES, Scope.CLUSTER, "", "nodes", "list"),
        (FRAMEWORK, Scope.WATCHED, names.GROUP, names.PLURAL, "watch"),
        (FRAMEWORK, Scope.WATCHED, "", "events", "create"),
        (LEADER_ELECTION, Scope.RELEASE, "coordination.k8s.io", "leases", "update"),
    ]:
        assert grant in called, grant
    for absent in [
        ("", "secrets", "list"), ("", "secrets", "watch"), ("", "secrets", "delete"), ("", "pods", "get"),
        ("", "pods", "watch"), ("", "nodes", "get"), ("apps", "statefulsets", "delete"),
    ]:
        assert not any(g[2:] == absent for g in called), absent


def test_the_table_is_well_formed() -> None:
    assert permissions.REQUEST_VERBS["apply"] == ("patch", "create"), (
        "a server-side apply that creates the object is authorised as create too")
    rules = [(n.role, n.group, n.resource, n.resource_names) for n in NEEDS]
    assert len(rules) == len(set(rules)), "one rule per role, resource and resource names"
    for need in NEEDS:
        assert need.role in permissions.ROLES and need.verbs and need.why
        assert len(set(need.verbs)) == len(need.verbs) and "*" not in need.verbs
        assert "*" not in (need.group, need.resource)
    plurals = {k.plural for k in permissions.KINDS.values()}
    for need in NEEDS:
        assert need.resource.split("/")[0] in plurals | {"events"}, need
    for k in permissions.KINDS.values():
        lower = k.kind.lower()
        expected = (lower[:-1] + "ies" if lower.endswith("y")
                    else lower + ("es" if lower.endswith("s") else "s"))
        assert k.plural == expected, k
    crd = yaml.safe_load((ROOT / "crds" / "archop.io_architectures.yaml").read_text())
    assert permissions.KINDS[names.KIND].plural == crd["spec"]["names"]["plural"]
    assert permissions.KINDS[names.KIND].group == crd["spec"]["group"]


# ---------------------------------------------------------------------------------------------- runtime


class FakeClient:
    def __init__(self, status: int = 200, body: dict[str, Any] | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.status, self.body = status, body or {}

    def request(self, method: str, **kwargs: Any) -> requests.Response:
        self.sent.append({"method": method, **kwargs})
        response = requests.Response()
        response.status_code, response.reason = self.status, "x"
        response._content = json.dumps(self.body).encode()
        return response


@pytest.mark.parametrize(
    "call",
    [
        lambda c: apply.list_objects(c, "v1", "Secret", "shop", {}),  # Secrets are never listed
        lambda c: apply.delete(c, {"apiVersion": "v1", "kind": "Secret",
                                   "metadata": {"name": "x", "namespace": "s"}}),  # garbage-collected
        lambda c: apply.get(c, "batch/v1", "Job", "shop", "x"),  # not a kind the operator touches
        lambda c: apply.get(c, "v1", "Node", "", "x"),  # Nodes are listed, never read one by one
        lambda c: apply.server_side_apply(c, {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "metadata": {"name": "x", "namespace": "s"}}),
    ],
)
def test_apply_refuses_a_call_the_table_does_not_declare(call: Any) -> None:
    client = FakeClient()
    with pytest.raises(kopf.PermanentError, match="permissions.py"):
        call(client)
    assert client.sent == []


def test_apply_sends_what_the_table_declares() -> None:
    client = FakeClient(body={"items": []})
    apply.grow_volumes(client, "shop", "demo", "2Gi", lambda a, b: True)
    apply.list_objects(client, "v1", "Node", None, {})
    apply.delete_pod(client, "demo", "shop-db-1")
    apply.patch_status(client, "shop", "demo", {"x": 1})
    sent = [(s["method"], s["url"], s["namespace"]) for s in client.sent]
    assert sent == [("GET", "persistentvolumeclaims", "demo"), ("GET", "nodes", None),
                    ("DELETE", "pods/shop-db-1", "demo"), ("PATCH", "architectures/shop/status", "demo")]
    selector = ",".join(f"{k}={v}" for k, v in names.selector("shop", names.DATABASE).items())
    assert client.sent[0]["params"] == {"labelSelector": selector}
    assert client.sent[1]["params"] == {}


def test_volume_growth_patches_each_smaller_pvc() -> None:
    pvc = {"metadata": {"name": "data-shop-db-0"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}}
    client = FakeClient(body={"items": [pvc]})
    grown, refused = apply.grow_volumes(client, "shop", "demo", "2Gi", lambda a, b: a != b)
    assert (grown, refused) == (["data-shop-db-0"], [])
    assert [(s["method"], s["url"]) for s in client.sent] == [
        ("GET", "persistentvolumeclaims"), ("PATCH", "persistentvolumeclaims/data-shop-db-0")]


# ---------------------------------------------------------------------------------------------- the chart

# (namespace, "" when cluster-wide; role kind; role name; group; resource; verb; resource name or "")
Rendered = tuple[str, str, str, str, str, str, str]


def expected_chart(watched: list[str]) -> set[Rendered]:
    out: set[Rendered] = set()
    for need in NEEDS:
        name = f"{chart.RELEASE}-{need.role}"
        if need.scope is Scope.WATCHED:
            where = [(ns, "Role") for ns in watched] if watched else [("", "ClusterRole")]
        elif need.scope is Scope.CLUSTER:
            where = [("", "ClusterRole")]
        else:
            where = [(chart.NAMESPACE, "Role")]
        for namespace, kind in where:
            for verb in need.verbs:
                for resource_name in need.resource_names or ("",):
                    out.add((namespace, kind, name, need.group, need.resource, verb, resource_name))
    return out


def rendered_chart(docs: list[dict[str, Any]]) -> Iterator[Rendered]:
    roles = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d
             for d in docs if d["kind"] in ("Role", "ClusterRole")}
    bound = set()
    for binding in docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        namespace = binding["metadata"].get("namespace", "") if binding["kind"] == "RoleBinding" else ""
        ref = binding["roleRef"]
        key = (ref["kind"], namespace if ref["kind"] == "Role" else "", ref["name"])
        assert key in roles, f"{binding['metadata']['name']} binds a role the chart does not render: {key}"
        bound.add(key)
        sa = {"kind": "ServiceAccount", "name": chart.RELEASE, "namespace": chart.NAMESPACE}
        assert binding["subjects"] == [sa]
        for rule in roles[key]["rules"]:
            assert set(rule) <= {"apiGroups", "resources", "resourceNames", "verbs"}, rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for resource_name in rule.get("resourceNames") or [""]:
                            yield namespace, ref["kind"], ref["name"], group, resource, verb, resource_name
    assert bound == set(roles), f"roles nobody binds: {set(roles) - bound}"


@pytest.mark.parametrize("watched", [[], chart.WATCHED, [chart.NAMESPACE, "shop"]],
                         ids=["cluster-wide", "namespaced", "namespaced-with-release-namespace"])
def test_the_chart_grants_exactly_the_table(helm: str, tmp_path: Path, watched: list[str]) -> None:
    docs = chart._docs(chart._template(helm, tmp_path, {"watchNamespaces": watched}))
    rendered = list(rendered_chart(docs))
    assert len(rendered) == len(set(rendered)), "a permission is granted twice"
    expected = expected_chart(watched)
    assert set(rendered) == expected, (f"missing: {sorted(expected - set(rendered))}\n"
                                       f"extra: {sorted(set(rendered) - expected)}")
    for doc in docs:
        if doc["kind"] in ("Role", "ClusterRole"):
            role = doc["metadata"]["name"].removeprefix(f"{chart.RELEASE}-")
            assert doc["rules"] == [n.rule() for n in permissions.role_needs(role)], doc["metadata"]
    if watched:
        cluster = {r for r in rendered if r[0] == ""}
        assert {r[4] for r in cluster} == {"nodes"}, "namespaced mode: only Nodes stay cluster-wide"


@pytest.fixture(scope="module")
def helm() -> str:
    return chart._tool("HELM", "helm")


def test_docs_name_every_granted_resource() -> None:
    text = (ROOT / "docs" / "security.md").read_text()
    for need in NEEDS:
        assert f"`{need.resource}" in text, f"docs/security.md does not mention {need.resource}"
