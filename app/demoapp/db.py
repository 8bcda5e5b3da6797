"""Database access that rides through a leader failover.

Two targets: rw (the leader, through N-db-rw) and ro (the followers, through N-db-ro). Every unit of work is
a coroutine `fn(conn)` that is safe to run again (reads, and writes guarded by an idempotency key), so
on a lost connection or a read-only leader the Db discards the pool, reconnects and retries it with
bounded exponential backoff. Reads go to ro while it answers, to rw while it does not; a read with a
consistency token goes to ro once the follower it reaches has replayed the token (waiting a few ms for it),
to rw otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from time import monotonic
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from demoapp import repo
from demoapp.config import Settings
from demoapp.consistency import Consistency, Freshness, Lsn, Versioned
from demoapp.metrics import Metrics

log = logging.getLogger("demoapp.db")
T = TypeVar("T")
Work = Callable[[AsyncConnection[Any]], Awaitable[T]]

# Worth another attempt: connection trouble (OperationalError covers lost sockets, refused connects,
# admin shutdown, pool timeouts), a leader that became read-only, and transient transaction aborts.
# OperationalError includes serialization failures ("conflict with recovery" on followers too) and
# deadlocks.
RETRYABLE: tuple[type[BaseException], ...] = (psycopg.OperationalError, errors.ReadOnlySqlTransaction)
# After these the connection (and its pool siblings) point at the wrong or a dead server ...
_RECONNECT: tuple[type[BaseException], ...] = (psycopg.OperationalError, errors.ReadOnlySqlTransaction)
# ... but these OperationalErrors only abort one transaction on a healthy connection.
_KEEP: tuple[type[BaseException], ...] = (
    errors.TransactionRollback, errors.SerializationFailure, errors.DeadlockDetected, errors.QueryCanceled)


# A follower behind a read's token is asked again this often until DEMOAPP_RYW_WAIT_MS is up. Each time on a
# fresh pooled connection: behind N-db-ro every connection may reach another follower.
RYW_POLL = 0.005


class Pool(StrEnum):
    RW = "rw"
    RO = "ro"


class DbUnavailable(Exception):
    """No usable database within the retry budget (the HTTP layer answers 503)."""


class NotReplayed(Exception):
    """The follower that answered has not replayed the read's token yet."""

    def __init__(self, lsn: Lsn) -> None:
        super().__init__(f"follower at {lsn}")
        self.lsn = lsn


@dataclass(frozen=True)
class DbRead(Generic[T]):
    data: Versioned[T]
    pool: Pool  # who answered


def versioned(fn: Work[T], min_lsn: Lsn | None) -> Work[Versioned[T]]:
    """`fn` with the position its data is at, taken just before it in the same round trip (a pipeline).
    With `min_lsn`, a follower that has not replayed it raises NotReplayed; a leader never does: it has
    every acknowledged write, and a token beyond its position (a write lost in an asynchronous failover, or
    a made-up one) gets what it has rather than a wait for something that will never come."""

    async def work(conn: AsyncConnection[Any]) -> Versioned[T]:
        async with conn.pipeline():
            cur = await conn.execute(repo.POSITION_SQL)
            value = await fn(conn)  # its first fetch sends both statements
            pos = repo.position(await cur.fetchone())
        if min_lsn is not None and pos.in_recovery and pos.lsn < min_lsn:
            raise NotReplayed(pos.lsn)
        return Versioned(value, pos.lsn)

    return work


class Backend:
    """One target behind an AsyncConnectionPool that is replaced, not repaired, after a failure.

    Why replace: psycopg_pool reconnects with backoff starting at 1s and doubling, which would keep a
    pod failing for many seconds after the new leader is up. A fresh pool connects at once."""

    REPLACE_EVERY = 0.3  # at most one replacement per this many seconds, however many requests fail

    def __init__(self, name: Pool, conninfo: str, password: str, max_size: int, get_timeout: float) -> None:
        self.name = name
        self._conninfo = conninfo
        self._kwargs: dict[str, Any] = {"autocommit": True}
        if password:
            self._kwargs["password"] = password  # passed apart from conninfo: never in a logged string
        self._max_size = max_size
        self.get_timeout = get_timeout
        self._replaced_at = 0.0
        self.ok_at = 0.0  # last successful unit of work through this backend
        self._closing: set[asyncio.Task[None]] = set()
        self.pool = self._new_pool()

    def _new_pool(self) -> AsyncConnectionPool:
        return AsyncConnectionPool(
            self._conninfo, kwargs=self._kwargs, min_size=1, max_size=self._max_size, open=False,
            name=f"demoapp-{self.name}", timeout=self.get_timeout, max_idle=60,
            # Recycle connections so new followers behind N-db-ro get a share of the reads.
            max_lifetime=300, reconnect_timeout=3600,
        )

    async def open(self) -> None:
        await self.pool.open(wait=False)

    def should_replace(self, exc: BaseException) -> bool:
        """A broken or read-only connection: yes. Waiting too long for a pooled connection while other
        requests keep succeeding is overload, not a dead server: keep the good connections."""
        if isinstance(exc, PoolTimeout):
            return monotonic() - self.ok_at > 2.0
        if isinstance(exc, _KEEP):
            return False
        return isinstance(exc, _RECONNECT)

    async def replace(self) -> None:
        """Swap in a fresh pool; the old one closes in the background (its in-use connections on return)."""
        now = monotonic()
        if now - self._replaced_at < self.REPLACE_EVERY:
            return
        self._replaced_at = now
        old, self.pool = self.pool, self._new_pool()
        await self.pool.open(wait=False)
        task = asyncio.create_task(old.close(timeout=2))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        log.info("database pool replaced", extra={"pool": self.name})

    async def close(self) -> None:
        await self.pool.close(timeout=2)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


class Db:
    RO_DOWN_MIN, RO_DOWN_MAX = 1.0, 5.0  # how long reads skip a failed ro target (doubling)
    RW_FRESH = 2.0

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        pw, size = settings.db_password, settings.pool_max_size
        self.rw = Backend(Pool.RW, settings.conninfo("rw"), pw, size, get_timeout=2.0)
        self.ro: Backend | None = None
        if settings.db_ro_host:
            self.ro = Backend(Pool.RO, settings.conninfo("ro"), pw, size, get_timeout=1.0)
        self._ro_down_until = 0.0
        self._ro_down_for = 0.0

    async def open(self) -> None:
        await self.rw.open()
        if self.ro:
            await self.ro.open()

    async def close(self) -> None:
        await self.rw.close()
        if self.ro:
            await self.ro.close()

    # --- routing -----------------------------------------------------------------------------------
    async def _ro_usable(self) -> bool:
        if self.ro is None:
            return False
        if self._ro_down_for == 0.0:
            return True
        if monotonic() < self._ro_down_until:
            return False
        if self.ro.pool.get_stats().get("pool_available", 0) > 0:
            return True  # the pool reconnected in the background: try ro again
        # Still nothing: let a fresh pool try to connect now, look again after the next window.
        self._ro_failed()
        await self.ro.replace()
        return False

    def _ro_failed(self) -> None:
        self._ro_down_for = min(self.RO_DOWN_MAX, max(self.RO_DOWN_MIN, self._ro_down_for * 2))
        self._ro_down_until = monotonic() + self._ro_down_for

    def _ro_ok(self) -> None:
        self._ro_down_for = 0.0

    # --- work --------------------------------------------------------------------------------------
    async def write(self, fn: Work[T]) -> T:
        """Run replay-safe work on the leader."""
        result, _ = await self._run(fn, prefer_ro=False)
        return result

    async def read(self, fn: Work[T], freshness: Freshness) -> DbRead[T]:
        """Run a read with the position it was read at. STRONG reads the leader; READ_YOUR_WRITES reads a
        follower that has replayed the token (waiting up to DEMOAPP_RYW_WAIT_MS), else the leader."""
        ryw = freshness.level is Consistency.READ_YOUR_WRITES
        data, pool = await self._run(versioned(fn, freshness.min_lsn),
                                     prefer_ro=freshness.level is not Consistency.STRONG,
                                     ryw_wait=self.settings.ryw_wait_ms / 1000 if ryw else None)
        return DbRead(data, pool)

    async def _run(self, fn: Work[T], prefer_ro: bool, ryw_wait: float | None = None) -> tuple[T, Pool]:
        """`ryw_wait`: how long a follower raising NotReplayed may take to catch up (None: no token)."""
        start = monotonic()
        deadline = start + self.settings.retry_budget_seconds
        delay = 0.05
        while True:
            use_ro = prefer_ro and await self._ro_usable()
            backend = self.ro if use_ro and self.ro else self.rw
            if prefer_ro and backend is self.rw and self.ro is not None:
                self.metrics.ro_fallbacks.inc()
            try:
                result = await self._attempt(backend, fn, deadline)
            except NotReplayed:
                backend.ok_at = monotonic()
                self._ro_ok()  # only ro raises it (a leader is never behind), and ro answered
                waited = monotonic() - start
                if ryw_wait is not None and waited + RYW_POLL <= ryw_wait:
                    await asyncio.sleep(RYW_POLL)
                    continue
                # Replica lag is not a failure of ro: only this read goes to the leader.
                self.metrics.ryw_fallbacks.inc()
                self.metrics.ryw_wait.labels(Pool.RW).observe(waited)
                prefer_ro = False
                continue
            except errors.UndefinedTable as exc:
                if backend is not self.ro:
                    raise
                # A follower that has not replayed the migration yet (first start): ask the leader.
                self.metrics.db_errors.labels(backend.name, type(exc).__name__).inc()
                self._ro_failed()
                continue
            except RETRYABLE as exc:
                self.metrics.db_errors.labels(backend.name, type(exc).__name__).inc()
                if backend.should_replace(exc):
                    await backend.replace()
                if backend is self.ro:
                    # A dead follower Service must not cost every read a timeout: skip ro for a while
                    # and go to rw right away, without sleeping.
                    self._ro_failed()
                    log.warning("ro unavailable, reading from rw", extra={"error": type(exc).__name__})
                    continue
                if monotonic() + delay >= deadline:
                    raise DbUnavailable(f"{backend.name}: {type(exc).__name__}") from exc
                self.metrics.db_retries.labels(backend.name).inc()
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 1.0)
                continue
            backend.ok_at = monotonic()
            if backend is self.ro:
                self._ro_ok()
                if ryw_wait is not None:
                    self.metrics.ryw_wait.labels(Pool.RO).observe(monotonic() - start)
            return result, backend.name

    async def _attempt(self, backend: Backend, fn: Work[T], deadline: float) -> T:
        timeout = max(0.05, min(backend.get_timeout, deadline - monotonic()))
        async with backend.pool.connection(timeout=timeout) as conn:
            try:
                return await fn(conn)
            except errors.ReadOnlySqlTransaction:
                # Connected to a fenced or demoted leader: this connection is useless for writes.
                await conn.close()
                raise

    async def ping(self, timeout: float = 1.0) -> bool:
        """rw reachable: it answered in the last RW_FRESH seconds, or answers one `SELECT 1` now.
        Why the shortcut: under load every pooled connection is busy, and a probe that queues for one
        would mark a healthy pod unready."""
        if monotonic() - self.rw.ok_at < self.RW_FRESH:
            return True
        try:
            async with self.rw.pool.connection(timeout=timeout) as conn:
                await conn.execute("SELECT 1")
            self.rw.ok_at = monotonic()
            return True
        except psycopg.Error:
            await self.rw.replace()
            return False
