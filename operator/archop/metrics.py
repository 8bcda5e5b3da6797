"""Every Prometheus metric of the operator (prefix archop_), as module-level objects, and the HTTP server."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

reconcile_total = Counter(
    "archop_reconcile_total", "Reconciliations run, by component.", ["component"])
reconcile_errors_total = Counter(
    "archop_reconcile_errors_total", "Reconciliations that failed, by component.", ["component"])
reconcile_duration_seconds = Histogram(
    "archop_reconcile_duration_seconds", "Time one reconciliation took, by component.", ["component"])
failovers_total = Counter(
    "archop_failovers_total", "Failovers and switchovers completed.", ["namespace", "architecture", "reason"])
failover_duration_seconds = Histogram(
    "archop_failover_duration_seconds", "From the failover decision to writes accepted on the new leader.",
    ["namespace", "architecture"], buckets=(0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60))
replication_lag_bytes = Gauge(
    "archop_replication_lag_bytes", "Bytes of WAL a follower is behind the leader.",
    ["namespace", "architecture", "instance"])
leader_up = Gauge(
    "archop_leader_up", "1 while the Postgres leader answers, else 0.", ["namespace", "architecture"])
database_instances = Gauge(
    "archop_database_instances", "Postgres instances per role.", ["namespace", "architecture", "role"])
architecture_ready = Gauge(
    "archop_architecture_ready", "1 while the Architecture's Ready condition is True, else 0.",
    ["namespace", "architecture"])
operator_leader = Gauge(
    "archop_operator_leader", "1 on the operator replica that holds the Lease, else 0.")


def forget_architecture(namespace: str, architecture: str) -> None:
    """Drop the per-Architecture series of a deleted Architecture, so dashboards do not show ghosts."""
    for metric in (replication_lag_bytes, leader_up, database_instances, failover_duration_seconds,
                   failovers_total, architecture_ready):
        for labels in list(metric._metrics):  # noqa: SLF001 - prometheus-client has no public listing
            if labels[:2] == (namespace, architecture):
                metric.remove(*labels)


def serve(port: int, registry: CollectorRegistry = REGISTRY) -> None:
    """Serve /metrics on all interfaces (the Prometheus scrape target) in a background thread."""
    start_http_server(port, registry=registry)
