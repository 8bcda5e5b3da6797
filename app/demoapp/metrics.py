"""Prometheus metrics. One registry per app instance so tests can build many apps in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram(
            "demoapp_request_duration_seconds", "Request latency by route.", ["route", "method", "status"],
            registry=r, buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.cache_hits = Counter("demoapp_cache_hits_total", "Cache-aside hits.", ["kind"], registry=r)
        self.cache_misses = Counter(
            "demoapp_cache_misses_total", "Cache-aside misses (including Redis unavailable).", ["kind"],
            registry=r)
        self.cache_errors = Counter(
            "demoapp_cache_errors_total", "Redis operations that failed or were skipped by the breaker.",
            ["op"], registry=r)
        self.db_errors = Counter(
            "demoapp_db_errors_total", "Database errors by pool and class.", ["pool", "error"], registry=r)
        self.db_retries = Counter(
            "demoapp_db_retries_total", "Database attempts retried.", ["pool"], registry=r)
        self.ro_fallbacks = Counter(
            "demoapp_db_ro_fallback_total", "Reads served by rw because ro was unavailable.", registry=r)
        self.ryw_fallbacks = Counter(
            "demoapp_ryw_fallbacks_total",
            "Reads with a consistency token sent to rw because no follower had replayed the token within "
            "DEMOAPP_RYW_WAIT_MS.", registry=r)
        self.ryw_wait = Histogram(
            "demoapp_ryw_wait_seconds",
            "Time reads with a consistency token spent waiting for a follower to replay it, by who answered "
            "(ro: it caught up; rw: gave up).", ["pool"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5))
        self.cache_too_old = Counter(
            "demoapp_cache_too_old_total",
            "Cached values a read with a consistency token skipped: read before its token (also misses).",
            ["kind"], registry=r)
        self.idempotent_replays = Counter(
            "demoapp_idempotent_replays_total", "Writes answered from a stored Idempotency-Key result.",
            registry=r)
        self.cache_up = Gauge("demoapp_cache_up", "1 when the Redis breaker is closed.", registry=r)
        # Known label values exported as 0 from the start, so rates and alerts have a series to work on.
        for kind in ("user", "followers", "following"):
            self.cache_hits.labels(kind)
            self.cache_misses.labels(kind)
            self.cache_too_old.labels(kind)
        for op in ("get", "set", "delete"):
            self.cache_errors.labels(op)
        for pool in ("rw", "ro"):
            self.db_retries.labels(pool)
            self.ryw_wait.labels(pool)
