"""Cache-aside in Redis that never makes the app wait on a dead Redis.

Short socket timeouts and no client retries bound one call; a breaker then skips Redis entirely for a
growing while, so a dead cache costs one timeout per window, not one per request. Deletes that could not
reach Redis are remembered and replayed (and their keys treated as misses) so a Redis that comes back
never serves what a write invalidated meanwhile.

Every value is stored with the WAL position it was read at, so a read with a consistency token can tell
whether a cached value is new enough for it (a follower that lags may refill a key right after a write
deleted it; the position shows that value predates the write).
"""

from __future__ import annotations

import asyncio
import json
import logging
from time import monotonic
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from demoapp.config import Settings
from demoapp.consistency import Lsn, Versioned
from demoapp.metrics import Metrics

log = logging.getLogger("demoapp.cache")
# v2: {"lsn": "<position>", "value": <JSON>}. v1 stored the bare value; a new prefix keeps old pods and new
# ones from reading each other's format during a rollout.
PREFIX = "demoapp:v2:"
HIT, MISS, OFF = "HIT", "MISS", "OFF"  # values of the X-App-Cache response header
# Second delete after a write: a read from a lagging follower may have re-filled the key meanwhile.
SECOND_DELETE_AFTER = 1.0
MAX_PENDING = 10_000


def user_key(uid: int) -> str:
    return f"{PREFIX}user:{uid}"


def followers_key(uid: int) -> str:
    return f"{PREFIX}followers:{uid}"


def following_key(uid: int) -> str:
    return f"{PREFIX}following:{uid}"


def encode(entry: Versioned[Any]) -> str:
    return json.dumps({"lsn": str(entry.lsn), "value": entry.value}, separators=(",", ":"))


def decode(raw: str | bytes) -> Versioned[Any]:
    doc = json.loads(raw)
    return Versioned(doc["value"], Lsn.parse(doc["lsn"]))


class Breaker:
    """Closed -> open for base*2^n seconds after each failure (capped); one trial call when it expires."""

    def __init__(self, base: float = 0.5, cap: float = 10.0, trial_timeout: float = 1.0) -> None:
        self.base, self.cap, self.trial_timeout = base, cap, trial_timeout
        self.failures = 0
        self.open_until = 0.0

    def allow(self) -> bool:
        now = monotonic()
        if self.failures == 0:
            return True
        if now < self.open_until:
            return False
        self.open_until = now + self.trial_timeout  # only this caller probes until it reports back
        return True

    def success(self) -> None:
        self.failures = 0
        self.open_until = 0.0

    def failure(self) -> None:
        self.failures += 1
        self.open_until = monotonic() + min(self.cap, self.base * 2 ** (self.failures - 1))

    @property
    def closed(self) -> bool:
        return self.failures == 0


def tls_options(settings: Settings) -> dict[str, Any]:
    """The client's TLS settings (rediss://): the server's certificate must chain to the CA file (the system's
    trust store without one) and name the host dialled. Nothing when TLS is off."""
    if not settings.redis_tls:
        return {}
    return {"ssl": True, "ssl_ca_certs": settings.redis_ca_file, "ssl_cert_reqs": "required",
            "ssl_check_hostname": True}


class Cache:
    def __init__(self, settings: Settings, metrics: Metrics, timeout: float = 0.25) -> None:
        assert settings.redis_host is not None
        self.ttl = settings.cache_ttl_seconds
        self.metrics = metrics
        # The connect timeout covers the TLS handshake too (one more round trip on a fresh connection; the
        # pool keeps connections open, so that is paid once per connection, not per call).
        self.client = Redis(
            host=settings.redis_host, port=settings.redis_port, db=settings.redis_db,
            username=settings.redis_username, password=settings.redis_password or None,
            socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0),
            max_connections=64, health_check_interval=0, **tls_options(settings),
        )
        self.breaker = Breaker()
        self._pending: set[str] = set()  # deletes that did not reach Redis yet
        self._flush = False  # too many pending deletes to remember: flush the (app-only) cache Redis
        self._tasks: set[asyncio.Task[None]] = set()
        metrics.cache_up.set(1)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()

    def _failed(self, op: str, exc: BaseException | None) -> None:
        self.metrics.cache_errors.labels(op).inc()
        if exc is not None:
            was_closed = self.breaker.closed
            self.breaker.failure()
            self.metrics.cache_up.set(0)
            if was_closed:
                log.warning("redis unavailable, serving from the database",
                            extra={"error": type(exc).__name__})

    async def _ready(self, op: str) -> bool:
        """True when Redis may be called now (breaker allows, pending deletes flushed)."""
        if not self.breaker.allow():
            self._failed(op, None)  # skipped by the breaker: counted, costs nothing
            return False
        if self._flush:
            try:
                await self.client.flushdb()
            except (RedisError, OSError) as exc:
                self._failed("delete", exc)
                return False
            self._flush = False
            self._pending.clear()
        if self._pending:
            keys = list(self._pending)
            try:
                await self.client.delete(*keys)
            except (RedisError, OSError) as exc:
                self._failed("delete", exc)
                return False
            self._pending.difference_update(keys)
        return True

    def _ok(self) -> None:
        if not self.breaker.closed:
            log.info("redis reachable again")
        self.breaker.success()
        self.metrics.cache_up.set(1)

    async def get(self, kind: str, key: str, min_lsn: Lsn | None = None) -> Versioned[Any] | None:
        """The cached entry, or None: a miss, Redis down, a key with a pending delete, or (with `min_lsn`, a
        read's token) an entry read at an older position than the token."""
        if self._flush or key in self._pending or not await self._ready("get"):
            self.metrics.cache_misses.labels(kind).inc()
            return None
        try:
            raw = await self.client.get(key)
        except (RedisError, OSError) as exc:
            self._failed("get", exc)
            self.metrics.cache_misses.labels(kind).inc()
            return None
        self._ok()
        if raw is None:
            self.metrics.cache_misses.labels(kind).inc()
            return None
        entry = decode(raw)
        if min_lsn is not None and entry.lsn < min_lsn:
            self.metrics.cache_too_old.labels(kind).inc()
            self.metrics.cache_misses.labels(kind).inc()
            return None
        self.metrics.cache_hits.labels(kind).inc()
        return entry

    async def set(self, key: str, entry: Versioned[Any]) -> None:
        if self._flush or key in self._pending or not await self._ready("set"):
            return
        try:
            await self.client.set(key, encode(entry), ex=self.ttl)
        except (RedisError, OSError) as exc:
            self._failed("set", exc)
            return
        self._ok()

    async def invalidate(self, *keys: str) -> None:
        """Delete now and once more shortly after; remember keys Redis could not be told about."""
        await self._delete(keys)
        task = asyncio.create_task(self._delete_later(keys))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _delete_later(self, keys: tuple[str, ...]) -> None:
        await asyncio.sleep(SECOND_DELETE_AFTER)
        await self._delete(keys)

    async def _delete(self, keys: tuple[str, ...]) -> None:
        if await self._ready("delete"):
            try:
                await self.client.delete(*keys)
                self._ok()
                return
            except (RedisError, OSError) as exc:
                self._failed("delete", exc)
        if self._flush or len(self._pending) + len(keys) > MAX_PENDING:
            self._flush = True
            self._pending.clear()
        else:
            self._pending.update(keys)

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False
