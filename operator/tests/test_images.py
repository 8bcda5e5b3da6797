"""Operand images: the defaults are pinned (and the same in config.py, the chart and the Makefile), image
references parse as the kubelet reads them, and the Postgres major version rule: the CRD's CEL rule and the
operator's decision (archop/images.py) read the same major from a tag."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from archop import names
from archop.config import CDN, Settings
from archop.images import (
    ImageDecision,
    ImageRef,
    ImageSource,
    MajorRefusal,
    database_image,
    postgres_major,
)
from crdschema import apply_defaults, cel_errors, field_errors, openapi_schema

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "0123456789abcdef" * 4
PG15 = "postgres:15.20-bookworm"
PG16 = "postgres:16.4-bookworm"

# How many numbers a full version of each operand has: Postgres (10 and later) is major.minor, the others
# major.minor.patch. `redis:7.0` and `nginx:1.27` are floating tags too: they move to each new patch release.
VERSION_PARTS = {names.DATABASE: 2, names.CACHE: 3, CDN: 3, names.APP: 3}
# The chart's images.* keys and the Makefile's variables, per component.
CHART_KEYS = {names.DATABASE: "postgres", names.CACHE: "redis", CDN: "nginx", names.APP: "app"}
MAKE_VARIABLES = {names.DATABASE: "POSTGRES_IMAGE", names.CACHE: "REDIS_IMAGE", CDN: "NGINX_IMAGE"}


def config_defaults() -> dict[str, str]:
    s = Settings()
    return {names.DATABASE: s.postgres_image, names.CACHE: s.redis_image, CDN: s.nginx_image,
            names.APP: s.app_image}


def chart_defaults() -> dict[str, str]:
    values = yaml.safe_load((ROOT / "charts" / "archop" / "values.yaml").read_text())
    return {component: values["images"][key] for component, key in CHART_KEYS.items()}


def makefile_online_defaults() -> dict[str, str]:
    """The operand images of `ARCHOP_ONLINE=1 make ...` (the official images; the offline branch builds its
    own from Debian packages and passes them explicitly)."""
    text = (ROOT / "Makefile").read_text()
    online = text.split("ifeq ($(ARCHOP_ONLINE),1)", 1)[1].split("else", 1)[0]
    found = dict(re.findall(r"^([A-Z_]+) \?= (\S+)$", online, flags=re.MULTILINE))
    return {component: found[var] for component, var in MAKE_VARIABLES.items()}


# --- the defaults ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("where", "defaults"), [("config.py", config_defaults),
                                                 ("values.yaml", chart_defaults),
                                                 ("Makefile ARCHOP_ONLINE", makefile_online_defaults)])
def test_every_default_operand_image_is_pinned(where: str, defaults: Any) -> None:
    floating = {component: image for component, image in defaults().items()
                if not ImageRef.parse(image).pinned(VERSION_PARTS[component])}
    assert floating == {}, f"{where}: floating tags"


def test_the_chart_and_the_makefile_default_to_the_operators_images() -> None:
    assert chart_defaults() == config_defaults()
    assert makefile_online_defaults() == {c: i for c, i in config_defaults().items() if c in MAKE_VARIABLES}


def test_the_crd_descriptions_name_the_default_images() -> None:
    spec = openapi_schema()["properties"]["spec"]["properties"]
    fields = {names.DATABASE: spec["database"], names.CACHE: spec["cache"], CDN: spec["cdn"]}
    for component, node in fields.items():
        description = " ".join(node["properties"]["image"]["description"].split())
        assert f"({config_defaults()[component]})" in description, component


@pytest.mark.parametrize(
    ("image", "parts", "pinned"),
    [
        ("postgres:15.20-bookworm", 2, True),
        ("postgres:15.20", 2, True),
        ("redis:7.0.15-bookworm", 3, True),
        ("nginx:1.27.5-alpine", 3, True),
        ("registry.local:5000/team/pg:16.4", 2, True),
        (f"postgres@{DIGEST}", 3, True),  # a digest pins whatever the tag
        (f"postgres:15@{DIGEST}", 2, True),
        ("postgres:15", 2, False),
        ("postgres", 2, False),
        ("postgres:latest", 2, False),
        ("postgres:bookworm", 2, False),
        ("redis:7", 3, False),
        ("redis:7.0", 3, False),  # the 7.0 line: moves to each patch release
        ("nginx:1.27", 3, False),
        ("registry.local:5000/pg", 2, False),  # the port is no tag
        ("postgres:15.20.1.2", 2, False),
        ("postgres:v15.20", 2, False),
    ],
)
def test_pinned(image: str, parts: int, pinned: bool) -> None:
    assert ImageRef.parse(image).pinned(parts) is pinned


# --- references and their major ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "repository", "tag", "digest", "major"),
    [
        ("postgres", "postgres", None, None, None),
        ("postgres:15", "postgres", "15", None, 15),
        ("postgres:16.4-bookworm", "postgres", "16.4-bookworm", None, 16),
        ("postgres:latest", "postgres", "latest", None, None),
        ("postgres:v16", "postgres", "v16", None, None),
        ("registry.local:5000/team/pg:15.8", "registry.local:5000/team/pg", "15.8", None, 15),
        ("registry.local:5000/team/pg", "registry.local:5000/team/pg", None, None, None),
        (f"postgres:15.8@{DIGEST}", "postgres", "15.8", DIGEST, 15),
        # The digest's hex may start with digits: it says nothing about the version.
        (f"postgres@{DIGEST}", "postgres", None, DIGEST, None),
        (f"registry.local:5000/pg@{DIGEST}", "registry.local:5000/pg", None, DIGEST, None),
        ("archop-offline/postgres:15", "archop-offline/postgres", "15", None, 15),
    ],
)
def test_references_parse_as_the_kubelet_reads_them(image: str, repository: str, tag: str | None,
                                                    digest: str | None, major: int | None) -> None:
    ref = ImageRef.parse(image)
    assert (ref.repository, ref.tag, ref.digest, ref.major) == (repository, tag, digest, major)
    assert str(ref) == image


def test_the_major_of_server_version_num() -> None:
    assert [postgres_major(n) for n in (150020, 160004, 170000, 100023, None)] == [15, 16, 17, 10, None]


def _arch(image: str) -> dict[str, Any]:
    return apply_defaults({"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {"name": "shop"},
                           "spec": {"database": {"image": image}}}, openapi_schema())


IMAGE_FIELD = "spec.database.image"
MAJOR_CASES = [
    "postgres:15", "postgres:15.20-bookworm", "postgres:16.4-bookworm", f"postgres:16.4@{DIGEST}",
    f"postgres@{DIGEST}", "postgres", "postgres:latest", "registry.local:5000/pg:15.6",
    "registry.local:5000/pg", "archop-offline/postgres:15", "postgres:9.6.24",
]


@pytest.mark.parametrize("old", MAJOR_CASES)
def test_the_cel_rule_reads_the_major_as_the_operator_does(old: str) -> None:
    """For every pair: the API server refuses the edit exactly when both tags name a major and they differ,
    by the operator's reading (ImageRef.major), and then names both majors."""
    for new in MAJOR_CASES:
        a, b = ImageRef.parse(old).major, ImageRef.parse(new).major
        errors = field_errors(IMAGE_FIELD, new, old)
        if a is not None and b is not None and a != b:
            (error,) = errors
            assert error.startswith(f"spec.database.image may not change the PostgreSQL major version "
                                    f"from {a} to {b}: "), error
            assert "new Architecture" in error and "pg_dump" in error
        else:
            assert errors == [], (old, new)


def test_the_cel_rule_on_whole_objects() -> None:
    """As the API server runs it: on updates only, and only while the old object had an image."""
    assert cel_errors(_arch("postgres:16")) == []
    assert cel_errors(_arch("postgres:16"), old=_arch("postgres:16")) == []
    (error,) = cel_errors(_arch(PG16), old=_arch(PG15))
    assert "from 15 to 16" in error
    no_image = apply_defaults({"apiVersion": names.API_VERSION, "kind": names.KIND,
                               "metadata": {"name": "shop"}, "spec": {}}, openapi_schema())
    assert cel_errors(_arch(PG16), old=no_image) == []  # the operator's check covers this one


# --- the operator's decision ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("spec_image", "default", "running", "data_major", "rendered", "refused"),
    [
        # A first apply: nothing runs, nothing to protect.
        (None, PG16, None, None, PG16, None),
        (PG16, PG15, None, 15, PG16, None),
        # Unchanged, or a minor update: rolled out.
        (None, PG15, PG15, 15, PG15, None),
        (None, "postgres:15.21-bookworm", PG15, 15, "postgres:15.21-bookworm", None),
        (f"postgres:15.20@{DIGEST}", PG15, PG15, 15, f"postgres:15.20@{DIGEST}", None),
        # The operator's default moves to 16 (a Helm value, an operator upgrade): refused over data of 15.
        (None, PG16, PG15, 15, PG15, ImageSource.DEFAULT),
        # An image set where none was (the CEL rule cannot compare it with the default): refused.
        (PG16, PG15, PG15, 15, PG15, ImageSource.SPEC),
        # Before the first probe the running image's tag stands in for the data.
        (PG16, PG15, PG15, None, PG15, ImageSource.SPEC),
        # The data's own word beats a tag: a 15 image under a misleading tag may go back to a 15 one ...
        (PG15, PG15, "my/pg:16-compat", 15, PG15, None),
        # ... and an image that is running already is never refused (nothing would change).
        ("my/pg:16-compat", PG15, "my/pg:16-compat", 15, "my/pg:16-compat", None),
        # No major in the tag: the operator cannot know, and lets it through.
        (f"postgres@{DIGEST}", PG15, PG15, 15, f"postgres@{DIGEST}", None),
        ("postgres:latest", PG15, PG15, 15, "postgres:latest", None),
        (PG16, PG15, f"postgres@{DIGEST}", None, PG16, None),
        # But the data's major is known through a digest-only image: a tag of another major is refused.
        (PG16, PG15, f"postgres@{DIGEST}", 15, f"postgres@{DIGEST}", ImageSource.SPEC),
    ],
)
def test_the_database_image_decision(spec_image: str | None, default: str, running: str | None,
                                     data_major: int | None, rendered: str,
                                     refused: ImageSource | None) -> None:
    decision = database_image(spec_image, default, running, data_major)
    assert decision.image == rendered
    if refused is None:
        assert decision == ImageDecision(rendered)
        return
    refusal = decision.refusal
    assert refusal is not None and refusal.source is refused
    assert (refusal.image, refusal.image_major, refusal.running_image) == (
        spec_image or default, ImageRef.parse(spec_image or default).major, running)
    assert refusal.data_major == (data_major if data_major is not None else ImageRef.parse(running).major)


@pytest.mark.parametrize("source", list(ImageSource))
def test_the_refusal_says_what_to_change_and_how_to_upgrade(source: ImageSource) -> None:
    refusal = MajorRefusal(image=PG16, source=source, image_major=16, data_major=15, running_image=PG15)
    text = refusal.message()
    assert "spec.database.image" in text
    assert "PostgreSQL 16" in text and "PostgreSQL 15" in text and PG15 in text and PG16 in text
    assert "new Architecture" in text and "pg_dump" in text and "pg_upgrade in place is not supported" in text
    assert ("ARCHOP_POSTGRES_IMAGE" in text) is (source is ImageSource.DEFAULT)
    # kopf cuts an event's message at 1024 characters (out of the middle); the condition keeps it whole.
    assert len(text) < 1024
    assert MajorRefusal.from_status(refusal.to_status()) == refusal


@pytest.mark.parametrize("raw", [None, {}, "x", {"image": PG16, "source": "elsewhere", "imageMajor": 16,
                                                 "dataMajor": 15, "runningImage": PG15}])
def test_an_unreadable_refusal_record_is_none(raw: Any) -> None:
    assert MajorRefusal.from_status(raw) is None
