"""A spec the API server accepts must never crash the operator.

Hypothesis generates specs from the CRD's own schema (testsupport/specgen.py), keeps those that pass
its OpenAPI and CEL validation (crdschema.py), and checks that spec.py parses every one and the builders
render it into manifests that are valid for the pinned Kubernetes version.

(hypothesis-jsonschema would do the generation, but its last release breaks on current Hypothesis.)
"""

from __future__ import annotations

import os
from typing import Any

import kubernetes_validate.utils as kv
from archop import names
from archop.build import build_all, cdn
from archop.build.secrets import build_secrets
from archop.spec import ArchitectureSpec
from buildfixtures import NAMESPACE, SETTINGS, counting_passwords
from crdschema import apply_defaults, cel_errors, openapi_errors, openapi_schema
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from testsupport import specgen

K8S_VERSION = "1.34.0"
NAME = "shop"


SPECS = specgen.specs()


@st.composite
def accepted_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec = draw(SPECS)
    switchover = draw(st.none() | st.integers(0, 9))
    if switchover is not None:
        spec.setdefault("database", {})["switchoverTo"] = names.db_pod(NAME, switchover)
    obj = apply_defaults({"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {"name": NAME},
                          "spec": spec}, openapi_schema())
    assume(openapi_errors(obj) == [] and cel_errors(obj) == [])
    return obj


# Each example is filtered through every CEL rule in cel-python (slow): a few in `make test`, many with
# ARCHOP_LONG_PROPERTY=1.
@settings(max_examples=200 if os.environ.get("ARCHOP_LONG_PROPERTY") == "1" else 12, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.data_too_large])
@given(accepted_specs())
def test_every_accepted_spec_parses_and_renders(obj: dict[str, Any]) -> None:
    spec = ArchitectureSpec.parse(obj["spec"])
    conf = cdn.nginx_conf(spec) if spec.cdn.enabled else ""
    leader = obj["spec"]["database"].get("switchoverTo")
    manifests = build_secrets(NAME, NAMESPACE, password=counting_passwords()) + build_all(
        NAME, NAMESPACE, spec, SETTINGS, conf, current_leader=leader)
    assert manifests
    for manifest in manifests:
        kv.validate(manifest, K8S_VERSION, strict=True)
