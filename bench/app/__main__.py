"""python -m bench.app [--url URL] [--arch shop] [--duration 30] [--compare caches|tokens]

Drives a read-heavy social-graph mix through the Ingress (E2E_INGRESS_URL, the kind network) for two
setups of the same Architecture, switched with kubectl, and reports requests/s, p50/p99, the CDN hit ratio
(X-Cache-Status), the app cache hit ratio (X-App-Cache), who answered (X-DB-Pool) and the ratio between the
setups. The Architecture's original flags are restored at the end.
  --compare caches (default, -> bench/results/app.json): CDN sidecar + Redis cache on, then both off.
  --compare tokens (-> bench/results/app-tokens.json): both on, reads plain (eventual), then every read
    carrying its client's consistency token (read-your-writes): what tokens cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.app.kube import current_flags, get_arch, ingress_host, set_flags
from bench.app.load import Seed, check_url, run_load, seed_users

RESULTS = Path(__file__).resolve().parents[1] / "results"


@dataclass(frozen=True)
class Setup:
    cdn: bool
    cache: bool
    tokens: bool = False  # every read carries its client's consistency token


@dataclass(frozen=True)
class Comparison:
    setups: dict[str, Setup]  # measured in this order; the ratio is the first against the second
    ratio_key: str
    out: Path


COMPARISONS = {
    "caches": Comparison({"cdn_and_cache": Setup(True, True), "no_cdn_no_cache": Setup(False, False)},
                         "ratio_on_vs_off", RESULTS / "app.json"),
    # > 1: plain reads are that much faster than reads with tokens (which skip the CDN, check positions and
    # sometimes wait for a follower or go to the leader).
    "tokens": Comparison({"eventual": Setup(True, True), "read_your_writes": Setup(True, True, tokens=True)},
                         "ratio_eventual_vs_tokens", RESULTS / "app-tokens.json"),
}


async def wait_for_setup(base: str, host: str | None, uid: int, cdn: bool, cache: bool,
                         timeout_s: float = 180, streak: int = 20) -> None:
    """Until `streak` answers in a row show the setup: the Ingress may still reach old pods for a while."""
    headers = {"Host": host} if host else {}
    deadline, good = time.monotonic() + timeout_s, 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        while good < streak:
            if time.monotonic() > deadline:
                raise TimeoutError(f"ingress never showed cdn={cdn} cache={cache}")
            try:
                # strong: never a CDN hit, so X-App-Cache is the app's own (BYPASS with a cache, OFF without).
                async with s.get(f"{base}/users/{uid}?consistency=strong", headers=headers) as r:
                    await r.read()
                    seen_cdn = "X-Cache-Status" in r.headers
                    seen_cache = r.headers.get("X-App-Cache") != "OFF"
                    good = good + 1 if r.status == 200 and (seen_cdn, seen_cache) == (cdn, cache) else 0
            except (aiohttp.ClientError, TimeoutError):  # pods roll over while we wait
                good = 0
            await asyncio.sleep(0.1)


def ratios(first: dict[str, Any], second: dict[str, Any]) -> dict[str, float | None]:
    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    return {
        "requests_per_s": div(first["requests_per_s"], second["requests_per_s"]),  # > 1: first is faster
        "p50_latency": div(second["p50_ms"], first["p50_ms"]),  # > 1: first answers sooner
        "p99_latency": div(second["p99_ms"], first["p99_ms"]),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    base = check_url(args.url)
    obj = get_arch(args.arch, args.namespace)
    host = args.host if args.host is not None else ingress_host(obj)
    original = current_flags(obj)
    comparison = COMPARISONS[args.compare]
    out: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "url": base, "host": host, "architecture": f"{args.namespace}/{args.arch}", "compare": args.compare,
        "params": {"duration_s": args.duration, "max_requests": args.max_requests,
                   "concurrency": args.concurrency, "users": args.users, "warmup_s": args.warmup},
        "setups": {},
    }
    try:
        seed: Seed | None = None
        for name, setup in comparison.setups.items():
            print(f"[bench.app] switching to {name} ({setup})", file=sys.stderr)
            set_flags(args.arch, args.namespace, setup.cdn, setup.cache)
            if seed is None:
                seed = await seed_users(base, host, args.users)
            await wait_for_setup(base, host, seed.ids[0], setup.cdn, setup.cache)
            token = seed.token if setup.tokens else None
            if args.warmup > 0:
                await run_load(base, host, seed.ids, duration_s=args.warmup, max_requests=args.max_requests,
                               concurrency=args.concurrency, seed=1, token=token)
            stats = await run_load(base, host, seed.ids, duration_s=args.duration,
                                   max_requests=args.max_requests, concurrency=args.concurrency, token=token)
            out["setups"][name] = {"cdn": setup.cdn, "cache": setup.cache, "tokens": setup.tokens,
                                   **stats.summary()}
            print(f"[bench.app] {name}: {json.dumps(out['setups'][name])}", file=sys.stderr)
        first, second = comparison.setups
        out[comparison.ratio_key] = ratios(out["setups"][first], out["setups"][second])
    finally:
        print(f"[bench.app] restoring cdn={original[0]} cache={original[1]}", file=sys.stderr)
        set_flags(args.arch, args.namespace, *original)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=os.environ.get("E2E_INGRESS_URL"),
                    help="the Ingress base URL (default: $E2E_INGRESS_URL); the only place traffic goes")
    ap.add_argument("--host", default=None,
                    help="Host header (default: the Architecture's spec.ingress.host)")
    ap.add_argument("--arch", default=os.environ.get("BENCH_ARCH", "shop"))
    ap.add_argument("--namespace", "-n", default=os.environ.get("BENCH_NAMESPACE", "default"))
    ap.add_argument("--duration", type=float, default=30.0, help="measured seconds per setup")
    ap.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds per setup")
    ap.add_argument("--max-requests", type=int, default=50_000, help="cap per measured run (and warm-up)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--compare", choices=sorted(COMPARISONS), default="caches",
                    help="caches: CDN and Redis on vs off; tokens: plain reads vs reads with their token")
    ap.add_argument("--out", type=Path, default=None,
                    help="default: bench/results/app.json (caches), bench/results/app-tokens.json (tokens)")
    args = ap.parse_args(argv)
    if not args.url:
        ap.error("give --url or set E2E_INGRESS_URL")
    if not (0 < args.duration <= 600 and 0 < args.max_requests <= 1_000_000 and 0 < args.concurrency <= 512):
        ap.error("duration 0..600 s, max-requests 1..1e6, concurrency 1..512")
    result = asyncio.run(bench(args))
    out: Path = args.out or COMPARISONS[args.compare].out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"[bench.app] wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
