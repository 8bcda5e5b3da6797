"""Operator HA: leader election on a coordination.k8s.io Lease with kubernetes.leaderelection.

Only the replica holding the Lease runs kopf. Losing the Lease ends the process (the pod restarts as a
standby), so two operators never act at once. A clean shutdown releases the Lease, so the standby takes
over after one retry period instead of waiting out the lease duration.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from kubernetes.leaderelection.electionconfig import Config
from kubernetes.leaderelection.leaderelection import LeaderElection
from kubernetes.leaderelection.leaderelectionrecord import LeaderElectionRecord
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from archop import metrics
from archop.config import Settings

log = logging.getLogger("archop.election")


def load_kube_config() -> None:
    """In-cluster service account when there is one, else KUBECONFIG / ~/.kube/config."""
    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        kube_config.load_kube_config()


# Every Lease call gives up after 1 s to connect / 3 s to answer, without retries. Found on kind: a pod on a
# node that had just restarted sent its SYN to the API server's ClusterIP before kube-proxy restored the
# rules, and the kernel's SYN back-off then kept one call hanging for about two minutes. A standby stuck
# like that never takes over; a holder stuck like that keeps acting after its Lease expired.
LEASE_CALL_TIMEOUT = (1.0, 3.0)


class _TimedApi:
    """The Lease API with `_request_timeout` on every call."""

    def __init__(self, api: Any, timeout: tuple[float, float]) -> None:
        self.api, self.timeout = api, timeout

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.api, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("_request_timeout", self.timeout)
            return attr(*args, **kwargs)

        return call


def lease_lock(settings: Settings) -> LeaseLock:
    """A LeaseLock whose API calls time out quickly and are not retried by urllib3 (the election retries)."""
    from kubernetes import client

    lock = LeaseLock(settings.lease_name, settings.namespace, settings.identity)
    cfg = client.Configuration.get_default_copy()
    cfg.retries = 0
    lock.api_instance = _TimedApi(  # type: ignore[assignment]  # same methods, with a timeout
        client.CoordinationV1Api(client.ApiClient(cfg)), LEASE_CALL_TIMEOUT)
    return lock


class _GuardedLock:
    """Wraps the lock so that a failed call is a failed attempt, never an exception (LeaseLock catches only
    ApiException; a timeout would end the election thread), and remembers the last record held by someone
    else: after acquiring, it tells a clean handover (released: no holder) from a takeover of an expired
    Lease, and since when nobody acted."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.foreign: LeaderElectionRecord | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.lock, name)

    def get(self, name: str, namespace: str) -> tuple[bool, Any]:
        try:
            found, record = self.lock.get(name, namespace)
        except Exception as exc:  # the library then logs "Error retrieving resource lock" and retries
            log.debug("Lease read failed: %s", exc)
            return False, ApiException(status=0, reason=f"{type(exc).__name__}: {exc}")
        mine = self.lock.identity
        if found and isinstance(record, LeaderElectionRecord) and record.holder_identity != mine:
            self.foreign = record
        return found, record

    def create(self, name: str, namespace: str, election_record: LeaderElectionRecord) -> bool:
        return self._attempt(self.lock.create, name, namespace, election_record)

    def update(self, name: str, namespace: str, updated_record: LeaderElectionRecord) -> bool:
        return self._attempt(self.lock.update, name, namespace, updated_record)

    @staticmethod
    def _attempt(write: Callable[..., Any], *args: Any) -> bool:
        global last_write_ok
        try:
            ok = bool(write(*args))
        except Exception as exc:
            log.debug("Lease %s failed: %s", write.__name__, exc)
            return False
        if ok:
            last_write_ok = time.monotonic()
        return ok


# When this process took over an expired Lease: the previous holder's last renewal (epoch seconds), i.e.
# since when no operator has watched the databases. None: a clean handover, a fresh Lease, or no election.
unwatched_since: float | None = None
took_over_at: float | None = None  # when this process acquired the Lease (epoch seconds)
# The election this process runs (None: none, as in tests and a single replica without one), and when its
# last create or update of the Lease succeeded (monotonic).
current: LeaseElection | None = None
last_write_ok: float | None = None


def holds_now() -> bool:
    """Whether this process may act as the operator right now: its last Lease renewal is within the renew
    deadline. A process paused past it (its renewer paused too) must not renew a database's leader lease
    before it has noticed that another replica may hold the operator Lease."""
    if current is None:
        return True
    return last_write_ok is not None and (
        time.monotonic() - last_write_ok < current.settings.renew_deadline_seconds)


class LeaseElection:
    """One candidate. `lock` is anything with LeaseLock's get/create/update (tests use an in-memory one)."""

    def __init__(self, settings: Settings, lock: Any = None) -> None:
        self.settings = settings
        self.lock = _GuardedLock(lock if lock is not None else lease_lock(settings))
        self._elector = LeaderElection(Config(
            self.lock,
            lease_duration=settings.lease_duration_seconds,
            renew_deadline=settings.renew_deadline_seconds,
            retry_period=settings.retry_period_seconds,
            onstarted_leading=lambda: None,  # we drive the phases ourselves: acquire, hold, release
            onstopped_leading=lambda: None,
        ))
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._renewer: threading.Thread | None = None

    @property
    def identity(self) -> str:
        return str(self.lock.identity)

    def try_acquire(self) -> bool:
        """One attempt to take or renew the Lease."""
        return bool(self._elector.try_acquire_or_renew())

    def acquire(self) -> None:
        """Block until this candidate holds the Lease (standby until then)."""
        log.info("%s waits for Lease %s/%s", self.identity, self.settings.namespace, self.settings.lease_name)
        self._elector.acquire()
        global current
        current = self
        metrics.operator_leader.set(1)
        log.info("%s holds Lease %s/%s", self.identity, self.settings.namespace, self.settings.lease_name)
        global unwatched_since, took_over_at
        unwatched_since, took_over_at = self.unwatched_since(), time.time()
        if unwatched_since is not None:
            log.warning("took over an expired Lease: no operator acted for %.1fs",
                        max(0.0, time.time() - unwatched_since))

    def unwatched_since(self) -> float | None:
        """The previous holder's last renewal when it did not release the Lease (it died or was cut off)."""
        prev = self.lock.foreign
        if prev is None or not prev.holder_identity or not prev.renew_time:
            return None
        try:
            return datetime.datetime.fromisoformat(str(prev.renew_time)).timestamp()
        except ValueError:
            return None

    def hold(self, on_lost: Callable[[], None]) -> threading.Thread:
        """Keep renewing in a background thread; call `on_lost` if a renewal misses the renew deadline."""
        def renew() -> None:
            self._elector.renew_loop(self._stop)
            if not self._stop.is_set():
                self.lost.set()
                metrics.operator_leader.set(0)
                log.error("%s lost Lease %s: renewal missed the %ss deadline", self.identity,
                          self.settings.lease_name, self.settings.renew_deadline_seconds)
                on_lost()

        self._renewer = threading.Thread(target=renew, name="lease-renewer", daemon=True)
        self._renewer.start()
        return self._renewer

    def stop(self) -> None:
        """Stop renewing (and wait for the renewer, at most one retry period and a bit)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=self.settings.retry_period_seconds + 1)

    def release(self) -> bool:
        """Give the Lease up if this candidate still holds it: empty holder, 1 s duration (as client-go's
        ReleaseOnCancel). Call stop() first so the renewer cannot take it back. True when released."""
        found, record = self.lock.get(self.settings.lease_name, self.settings.namespace)
        if not found or record is None or record.holder_identity != self.identity:
            return False
        now = str(datetime.datetime.now())
        released = LeaderElectionRecord(None, "1", now, now)
        ok = bool(self.lock.update(self.settings.lease_name, self.settings.namespace, released))
        if ok:
            metrics.operator_leader.set(0)
            log.info("%s released Lease %s", self.identity, self.settings.lease_name)
        return ok
