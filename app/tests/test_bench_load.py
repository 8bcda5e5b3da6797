"""bench/app's load generator, run locally against the real app behind the real CDN config."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from conftest import PgPair, wait_replayed

from bench.app.__main__ import COMPARISONS, ratios
from bench.app.kube import current_flags, ingress_host
from bench.app.load import Stats, check_url, percentile, run_load, seed_users
from testsupport.nginx import start_cdn


def test_percentile_and_summary() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([7.0], 99) == 7.0
    s = Stats(started=0.0, finished=2.0)
    s.record(10.0, 200, True, {"X-Cache-Status": "HIT", "X-App-Cache": "MISS"})  # CDN hit: app header ignored
    s.record(20.0, 200, True, {"X-Cache-Status": "MISS", "X-App-Cache": "HIT"}, tokened=True)
    s.record(30.0, 200, True, {"X-Cache-Status": "MISS", "X-App-Cache": "MISS", "X-DB-Pool": "ro"})
    s.record(40.0, 503, False, {})
    s.record(0.0, None, True, {})
    out = s.summary()
    assert (out["requests"], out["ok"], out["errors"]) == (5, 3, 2)
    assert out["requests_per_s"] == 2.0 and out["p50_ms"] == 20.0
    assert out["cdn_hit_ratio"] == round(1 / 3, 4) and out["app_cache_hit_ratio"] == 0.5
    assert out["x_db_pool"] == {"NONE": 1, "ro": 1} and out["tokened_reads"] == 1
    assert ratios({"requests_per_s": 200.0, "p50_ms": 2.0, "p99_ms": 10.0},
                  {"requests_per_s": 100.0, "p50_ms": 5.0, "p99_ms": 30.0}) == {
        "requests_per_s": 2.0, "p50_latency": 2.5, "p99_latency": 3.0}
    assert [list(c.setups) for c in COMPARISONS.values()] == [
        ["cdn_and_cache", "no_cdn_no_cache"], ["eventual", "read_your_writes"]]
    assert COMPARISONS["tokens"].setups["read_your_writes"].tokens


def test_url_and_spec_helpers() -> None:
    assert check_url("http://172.18.0.2/") == "http://172.18.0.2"
    for bad in ("ftp://x", "172.18.0.2", "http://x/?q=1", "http:///nohost"):
        with pytest.raises(ValueError):
            check_url(bad)
    assert ingress_host({"spec": {}}) == "archop.local"
    assert ingress_host({"spec": {"ingress": {"host": ""}}}) is None
    assert current_flags({"spec": {"cdn": {"enabled": False}}}) == (False, True)


@pytest.mark.integration
async def test_load_through_the_cdn(client: TestClient, pg: PgPair, tmp_path: Path) -> None:
    ngx, base = await asyncio.to_thread(start_cdn, client.server.port or 0, tmp_path)
    try:
        seed = await seed_users(base, "bench.local", 20, follows_each=3)
        assert len(seed.ids) == 20
        # Plain reads are eventual: a follower that has not replayed the seeding yet would 404.
        await asyncio.to_thread(wait_replayed, pg)
        stats = await run_load(base, "bench.local", seed.ids, duration_s=1.5, max_requests=400, concurrency=8)
        tokened = await run_load(base, "bench.local", seed.ids, duration_s=1.5, max_requests=400,
                                 concurrency=8, token=seed.token)
    finally:
        await asyncio.to_thread(ngx.stop)
    out = stats.summary()
    assert out["requests"] <= 400 and out["duration_s"] < 5
    assert out["errors"] == 0 and set(out["statuses"]) == {"200"}, out
    assert out["cdn_hit_ratio"] and out["cdn_hit_ratio"] > 0.3, out  # skewed reads: hot pages stay cached
    assert out["app_cache_hit_ratio"] is not None and out["tokened_reads"] == 0, out
    # With tokens every read reaches the app (the CDN passes them by), answered by Redis or a follower that
    # has the token, or by the leader.
    out = tokened.summary()
    assert out["errors"] == 0 and set(out["statuses"]) == {"200"}, out
    assert out["tokened_reads"] == sum(out["x_cache_status"].values()) > 0, out
    assert out["cdn_hit_ratio"] == 0 and set(out["x_cache_status"]) == {"BYPASS"}, out
    assert set(out["x_db_pool"]) <= {"NONE", "ro", "rw"}, out
