"""The CRD teaches the API (descriptions), defaults like spec.py, and validates the shipped examples."""

from __future__ import annotations

import copy
import re

import jsonschema
import pytest
import yaml
from archop import names
from archop.build import app
from archop.spec import ArchitectureSpec
from crdschema import CRD_PATH, EXAMPLES, apply_defaults, cel_rules, load_crd, openapi_schema, validate, walk

# Optional fields whose absence means something ("use the operator default", "none"), so no default.
NO_DEFAULT_ON_PURPOSE = {
    "spec.database.image",
    "spec.cache.image",
    "spec.app.image",
    "spec.cdn.image",
    "spec.database.storage.storageClassName",
    "spec.database.switchoverTo",
    "spec.database.replication.dataDurability",  # only allowed in sync mode, where absent means required
    "spec.ingress.className",
    "spec.ingress.tlsSecretName",
    "spec.app.command",  # absent: the image's ENTRYPOINT
    "spec.app.args",  # absent: the image's CMD
    "spec.app.env",  # absent: the operator's variables only
    "spec.app.envFrom",
    "spec.cdn.enabled",  # absent: follows spec.app.enabled, which a default could not (CEL tells them apart)
    "spec.ingress.enabled",  # likewise
}


def test_identity_matches_names_module() -> None:
    crd = load_crd()
    assert crd["metadata"]["name"] == f"{names.PLURAL}.{names.GROUP}"
    assert crd["spec"]["group"] == names.GROUP
    assert crd["spec"]["names"]["kind"] == names.KIND
    assert crd["spec"]["names"]["plural"] == names.PLURAL
    assert crd["spec"]["names"]["shortNames"] == ["arch"]
    (version,) = crd["spec"]["versions"]
    assert version["name"] == names.VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_every_field_has_a_description() -> None:
    # The API server allows nothing but `type` on the root metadata, so that one is exempt.
    missing = [
        path for path, node in walk(openapi_schema()) if not node.get("description") and path != "metadata"
    ]
    assert missing == []
    assert openapi_schema()["properties"]["metadata"] == {"type": "object"}


def test_every_optional_spec_field_has_a_default() -> None:
    missing = []
    for path, node in walk(openapi_schema()):
        if not path.startswith("spec.") or path in NO_DEFAULT_ON_PURPOSE:
            continue
        if ".resources." in path and (path.endswith(".limits") or path.count(".") > 3):
            continue  # limits and single quantities are optional maps entries, not defaulted
        if "[]" in path:
            continue  # inside a list's items (spec.app.env[]): an absent field means what it means in a Pod
        if "default" not in node:
            missing.append(path)
    assert missing == []


def test_crd_defaults_agree_with_spec_py_defaults() -> None:
    obj = apply_defaults({"spec": {}}, openapi_schema())
    assert ArchitectureSpec.parse(obj["spec"]) == ArchitectureSpec()


def test_printer_columns_read_fields_the_status_has() -> None:
    status = openapi_schema()["properties"]["status"]["properties"]
    cols = {c["name"]: c["jsonPath"] for c in load_crd()["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert list(cols) == ["Ready", "Leader", "Followers", "App", "Failover", "Age"]
    for name in ("Leader", "Followers", "App"):
        field = cols[name].removeprefix(".status.")
        assert field in status, name


def test_conditions_are_a_map_list_keyed_by_type() -> None:
    conditions = openapi_schema()["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert conditions["items"]["required"] == ["type", "status"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path) -> None:
    obj = yaml.safe_load(path.read_text())
    assert obj["apiVersion"] == names.API_VERSION and obj["kind"] == names.KIND
    validate(apply_defaults(copy.deepcopy(obj), openapi_schema()))
    ArchitectureSpec.parse(obj["spec"])


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"database": {"followers": 10}}, "10 is greater than the maximum of 9"),
        ({"database": {"replication": {"mode": "semi"}}}, "'semi' is not one of"),
        ({"database": {"storage": {"size": "lots"}}}, "does not match"),
        ({"database": {"storage": {"reclaimPolicy": "Recycle"}}}, "'Recycle' is not one of"),
        ({"database": {"failover": {"leaderTimeoutSeconds": 1.5}}}, "less than the minimum of 2"),
        ({"cache": {"evictionPolicy": "lru"}}, "'lru' is not one of"),
        ({"cache": {"maxMemory": "64 MB"}}, "does not match"),
        ({"app": {"replicas": 0}}, "less than the minimum of 1"),
        ({"app": {"port": 80}}, "less than the minimum of 1024"),
        ({"cdn": {"cacheSize": "1tb"}}, "does not match"),
        ({"ingress": {"path": "no-slash"}}, "does not match"),
        ({"database": {"switchoverTo": "Shop-db-1"}}, "does not match"),
        ({"database": {"unknownField": 1}}, "Additional properties are not allowed"),
    ],
)
def test_openapi_rules_refuse_bad_specs(spec, fragment) -> None:
    obj = apply_defaults(
        {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {"name": "shop"}, "spec": spec},
        openapi_schema(),
    )
    with pytest.raises(jsonschema.ValidationError, match=fragment.replace("(", r"\(")):
        validate(obj)


def test_cel_rules_have_actionable_messages() -> None:
    rules = cel_rules()
    assert len(rules) >= 7
    for path, rule in rules:
        assert rule["rule"].strip(), path
        # Every message names the field(s) to fix; "must"/"may not" says what is expected.
        assert (
            "must" in rule["message"]
            or "may not" in rule["message"]
            or "is immutable" in rule["message"]
            or "requires" in rule["message"]
        ), path


def test_unsafe_changes_use_transition_rules() -> None:
    by_path = {path: rule["rule"] for path, rule in cel_rules()}
    assert "quantity(self).compareTo(quantity(oldSelf)) >= 0" in by_path["spec.database.storage.size"]
    assert "oldSelf.storageClassName" in by_path["spec.database.storage"]


def test_crd_file_is_a_single_document() -> None:
    docs = [d for d in yaml.safe_load_all(CRD_PATH.read_text()) if d]
    assert len(docs) == 1


def test_the_env_names_the_crd_reserves_are_those_the_builder_sets() -> None:
    """spec.app.env may not take a name of the contract or of the demo app's knobs (two entries of one name
    would break the apply), nor expand the URLs into argv: the CRD's lists and build/app.py's agree."""
    app_schema = openapi_schema()["properties"]["spec"]["properties"]["app"]["properties"]
    (reserved, _) = app_schema["env"]["x-kubernetes-validations"]
    assert set(re.findall(r"'([A-Z_]+)'", reserved["rule"])) == set(app.RESERVED_ENV)
    secret_urls = {e["name"] for e in app.contract_env("shop", ArchitectureSpec()) if "valueFrom" in e}
    for field in ("command", "args"):
        (rule,) = app_schema[field]["x-kubernetes-validations"]
        found = re.search(r"\(([A-Z_|]+)\)", rule["rule"])
        assert found is not None and set(found.group(1).split("|")) == secret_urls
