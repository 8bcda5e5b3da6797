"""The load generator: a read-heavy social-graph mix against one base URL, bounded in count and time.

Pure of Kubernetes: it talks HTTP to the URL it is given (the Ingress on the kind network) and nothing else.
Reads are plain (eventual) or, given a start token, carry each worker's consistency token (read-your-writes),
so the cost of tokens can be measured on the same stack.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from demoapp.consistency import COMMIT_HEADER, MIN_HEADER, Lsn

CDN_HITS = frozenset({"HIT", "STALE", "UPDATING", "REVALIDATED"})  # served by nginx without the app
# Request mix (weights): mostly profile reads, some list reads, a few writes (follow/unfollow).
MIX = (("user", 70), ("followers", 15), ("following", 10), ("write", 5))


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"need a plain http(s)://host[:port][/prefix] URL, got {url!r}")
    return url.rstrip("/")


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * p // 100)))  # ceil(n*p/100), 1-based
    return ordered[int(rank) - 1]


@dataclass
class Stats:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0  # transport failures (no HTTP status)
    reads: int = 0
    cdn: dict[str, int] = field(default_factory=dict)  # X-Cache-Status of reads
    app_cache: dict[str, int] = field(default_factory=dict)  # X-App-Cache of reads the app served
    db_pool: dict[str, int] = field(default_factory=dict)  # X-DB-Pool of reads the app served (NONE: Redis)
    tokened_reads: int = 0  # reads that carried a consistency token
    started: float = 0.0
    finished: float = 0.0

    def record(self, ms: float, status: int | None, read: bool, headers: Any, tokened: bool = False) -> None:
        if status is None:
            self.errors += 1
            return
        self.latencies_ms.append(ms)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if not read:
            return
        self.reads += 1
        self.tokened_reads += int(tokened)
        cdn = headers.get("X-Cache-Status", "") or "NONE"
        self.cdn[cdn] = self.cdn.get(cdn, 0) + 1
        if cdn not in CDN_HITS:
            # A CDN hit replays the headers stored with the page, so only fresh app answers say
            # anything about the app's own cache and the database.
            for counts, name in ((self.app_cache, "X-App-Cache"), (self.db_pool, "X-DB-Pool")):
                value = headers.get(name, "") or "NONE"
                counts[value] = counts.get(value, 0) + 1

    def summary(self) -> dict[str, Any]:
        elapsed = max(1e-9, self.finished - self.started)
        done = len(self.latencies_ms)
        ok = sum(n for s, n in self.statuses.items() if 200 <= s < 400)
        cdn_hits = sum(n for k, n in self.cdn.items() if k in CDN_HITS)
        app_hits, app_misses = self.app_cache.get("HIT", 0), self.app_cache.get("MISS", 0)

        def ms(p: float) -> float | None:
            v = percentile(self.latencies_ms, p)
            return round(v, 2) if v is not None else None

        return {
            "requests": done + self.errors,
            "ok": ok,
            "errors": self.errors + done - ok,
            "duration_s": round(elapsed, 2),
            "requests_per_s": round(done / elapsed, 1),
            "p50_ms": ms(50), "p90_ms": ms(90), "p99_ms": ms(99),
            "cdn_hit_ratio": round(cdn_hits / self.reads, 4) if self.reads else None,
            "app_cache_hit_ratio": (round(app_hits / (app_hits + app_misses), 4)
                                    if app_hits + app_misses else None),
            "tokened_reads": self.tokened_reads,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "x_cache_status": dict(sorted(self.cdn.items())),
            "x_app_cache": dict(sorted(self.app_cache.items())),
            "x_db_pool": dict(sorted(self.db_pool.items())),
        }


class Picker:
    """Skewed ids: a few hot profiles get most reads, as on a real social site (what caches are for)."""

    def __init__(self, ids: list[int], skew: float = 1.1, seed: int = 7) -> None:
        if not ids:
            raise ValueError("no users to read")
        self.ids = ids
        self.weights = [1.0 / (rank + 1) ** skew for rank in range(len(ids))]
        self.rng = random.Random(seed)

    def user(self) -> int:
        return self.rng.choices(self.ids, self.weights)[0]

    def op(self) -> str:
        return self.rng.choices([m[0] for m in MIX], [m[1] for m in MIX])[0]


def _headers(host: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    h = {"Host": host} if host else {}
    return {**h, **(extra or {})}


def _session(**kw: Any) -> aiohttp.ClientSession:
    """No cookie jar: the app's commit_lsn cookie would turn every read after a write into a token read."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), **kw)


@dataclass(frozen=True)
class Seed:
    ids: list[int]
    token: Lsn  # the highest X-Commit-LSN of the seeding writes: reads that carry it see all of them


async def seed_users(base: str, host: str | None, count: int, follows_each: int = 5,
                     concurrency: int = 16) -> Seed:
    """Create `count` users and a random follow graph through the API."""
    base = check_url(base)
    rng = random.Random(11)
    sem = asyncio.Semaphore(concurrency)
    run = f"bench-{int(time.time())}"
    timeout = aiohttp.ClientTimeout(total=30)
    tokens: list[Lsn] = []

    async with _session(timeout=timeout) as s:

        async def post(path: str, body: dict[str, Any], key: str) -> dict[str, Any]:
            async with sem:
                for attempt in range(5):  # a pod may be restarting after the last patch
                    try:
                        async with s.post(base + path, json=body,
                                          headers=_headers(host, {"Idempotency-Key": key})) as r:
                            if r.status in (200, 201):
                                tokens.append(Lsn.parse(r.headers[COMMIT_HEADER]))
                                return dict(await r.json())
                            if r.status < 500:
                                raise RuntimeError(f"POST {path}: {r.status} {await r.text()}")
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.5 * (attempt + 1))
                raise RuntimeError(f"POST {path} kept failing")

        users = await asyncio.gather(*[post("/users", {"name": f"{run}-{i}"}, f"{run}-u{i}")
                                       for i in range(count)])
        ids = [u["id"] for u in users]
        edges = {(a, b) for a in ids for b in rng.sample(ids, min(follows_each, len(ids))) if a != b}
        await asyncio.gather(*[post(f"/users/{a}/follow", {"target": b}, f"{run}-f{a}-{b}")
                               for a, b in edges])
    return Seed(ids, max(tokens))


@dataclass
class Client:
    """One worker: a client that, in token mode, reads with the highest token its own writes returned."""

    token: Lsn | None  # None: plain reads

    def saw(self, headers: Any) -> None:
        if self.token is not None and COMMIT_HEADER in headers:
            self.token = max(self.token, Lsn.parse(headers[COMMIT_HEADER]))


async def run_load(base: str, host: str | None, ids: list[int], *, duration_s: float, max_requests: int,
                   concurrency: int, seed: int = 7, token: Lsn | None = None) -> Stats:
    """Drive the mix until `duration_s` passed or `max_requests` were sent, whichever comes first.
    With `token` (e.g. Seed.token), every read carries X-Min-LSN: the highest of it and of the tokens of the
    worker's own writes so far. Without, reads are plain."""
    base = check_url(base)
    picker = Picker(ids, seed=seed)
    stats = Stats()
    budget = max_requests
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with _session(timeout=timeout, connector=connector) as s:
        stats.started = time.monotonic()
        deadline = stats.started + duration_s

        async def one(client: Client) -> None:
            op, uid = picker.op(), picker.user()
            read = op != "write"
            if read:
                path = {"user": f"/users/{uid}", "followers": f"/users/{uid}/followers",
                        "following": f"/users/{uid}/following"}[op]
                extra = {MIN_HEADER: str(client.token)} if client.token is not None else None
                request = s.get(base + path, headers=_headers(host, extra))
            else:
                other = picker.user()
                if other == uid:
                    other = ids[(ids.index(uid) + 1) % len(ids)]
                verb = "follow" if picker.rng.random() < 0.5 else "unfollow"
                request = s.post(f"{base}/users/{uid}/{verb}", json={"target": other}, headers=_headers(host))
            tokened = read and client.token is not None
            t0 = time.perf_counter()
            try:
                async with request as r:
                    await r.read()
                    stats.record((time.perf_counter() - t0) * 1000, r.status, read, r.headers, tokened)
                    client.saw(r.headers)
            except (TimeoutError, aiohttp.ClientError):
                stats.record(0.0, None, read, {})

        async def worker() -> None:
            nonlocal budget
            client = Client(token)
            while budget > 0 and time.monotonic() < deadline:
                budget -= 1
                await one(client)

        await asyncio.gather(*[worker() for _ in range(concurrency)])
        stats.finished = time.monotonic()
    return stats
