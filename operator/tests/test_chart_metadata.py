"""Chart.yaml's ArtifactHub annotations must agree with what they describe: the CRD, an example the chart
checks already validate (test_chart.py), and the project's license."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = yaml.safe_load((ROOT / "charts" / "archop" / "Chart.yaml").read_text())
CRD = yaml.safe_load((ROOT / "crds" / "archop.io_architectures.yaml").read_text())
EXAMPLE = ROOT / "examples" / "minimal.yaml"
CAPABILITY_LEVELS = ("Basic Install", "Seamless Upgrades", "Full Lifecycle", "Deep Insights", "Auto Pilot")


def annotation(key: str) -> Any:
    # The list-valued annotations are YAML documents inside strings: parse them as ArtifactHub does.
    return yaml.safe_load(CHART["annotations"][f"artifacthub.io/{key}"])


def test_crds_annotation_names_the_crd() -> None:
    (entry,) = annotation("crds")
    assert entry["kind"] == CRD["spec"]["names"]["kind"]
    assert entry["name"] == CRD["metadata"]["name"]
    assert entry["version"] in [v["name"] for v in CRD["spec"]["versions"] if v["served"]]
    assert entry["displayName"] and entry["description"]


def test_crds_example_is_the_minimal_example() -> None:
    assert annotation("crdsExamples") == [yaml.safe_load(EXAMPLE.read_text())]


def test_license_is_the_projects() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert CHART["annotations"]["artifacthub.io/license"] == project["license"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text()


def test_operator_annotations() -> None:
    assert CHART["annotations"]["artifacthub.io/operator"] == "true"
    assert CHART["annotations"]["artifacthub.io/operatorCapabilities"] in CAPABILITY_LEVELS


def test_links_point_at_the_home_repository() -> None:
    links = annotation("links")
    assert links and all(link["url"].startswith(CHART["home"]) for link in links)
    assert CHART["sources"] == [CHART["home"]]
