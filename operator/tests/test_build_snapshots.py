"""Golden-file tests: each builder rendered for each example must equal operator/tests/snapshots/.

Regenerate after an intended change with
    ARCHOP_UPDATE_SNAPSHOTS=1 pytest operator/tests/test_build_snapshots.py
and review the diff like code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from archop.build import app, cache, cdn, content_hash, ingress, policy, secrets
from archop.config import CDN, image_for
from buildfixtures import NAMESPACE, SETTINGS, STUB_CDN_CONF, counting_passwords, example_specs

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("ARCHOP_UPDATE_SNAPSHOTS") == "1"

BUILDERS = {
    "secrets": lambda n, s: secrets.build_secrets(n, NAMESPACE, password=counting_passwords(),
                                                  salt=lambda: "snapshot-salt"),
    "cache": lambda n, s: cache.build_cache(n, NAMESPACE, s, image_for(SETTINGS, s, "cache")),
    "cdn": lambda n, s: cdn.build_cdn(n, NAMESPACE, s, STUB_CDN_CONF),
    "app": lambda n, s: app.build_app(n, NAMESPACE, s, image_for(SETTINGS, s, "app"),
                                      image_for(SETTINGS, s, CDN), content_hash(STUB_CDN_CONF)),
    "ingress": lambda n, s: ingress.build_ingress(n, NAMESPACE, s),
    "policy": lambda n, s: policy.build_policies(n, NAMESPACE, s, SETTINGS),
}
CASES = [(example, builder) for example in example_specs() for builder in BUILDERS]


@pytest.mark.parametrize(("example", "builder"), CASES, ids=[f"{e}-{b}" for e, b in CASES])
def test_builder_matches_snapshot(example: str, builder: str) -> None:
    name, spec = example_specs()[example]
    rendered = json.dumps(BUILDERS[builder](name, spec), indent=2, sort_keys=True) + "\n"
    golden = SNAPSHOTS / example / f"{builder}.json"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(rendered)
    assert golden.exists(), f"no snapshot {golden}; run with ARCHOP_UPDATE_SNAPSHOTS=1 and review it"
    assert rendered == golden.read_text(), f"{golden} differs; if intended, regenerate (see module doc)"


def test_every_snapshot_file_is_still_produced() -> None:
    expected = {f"{e}/{b}.json" for e, b in CASES}
    present = {str(p.relative_to(SNAPSHOTS)) for p in SNAPSHOTS.glob("*/*.json")}
    assert present == expected
