"""Leader election logic against an in-memory Lease (the real kubernetes.leaderelection code runs on it)."""

from __future__ import annotations

import copy
import datetime
import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from archop import metrics
from archop.cli import Health, serve_health
from archop.config import Settings
from archop.election import LeaseElection
from kubernetes.leaderelection.leaderelectionrecord import LeaderElectionRecord

FAST = dict(lease_duration_seconds=3, renew_deadline_seconds=2, retry_period_seconds=1)


class NotFound:
    body = json.dumps({"code": 404})
    reason = "NotFound"


class LeaseStore:
    """One Lease object shared by candidates, with LeaseLock's semantics (record in, record out)."""

    def __init__(self) -> None:
        self.record: LeaderElectionRecord | None = None
        self.fail_updates = False
        self.lock = threading.Lock()

    def lock_for(self, identity: str) -> FakeLock:
        return FakeLock(self, identity)


class FakeLock:
    def __init__(self, store: LeaseStore, identity: str) -> None:
        self.store, self.identity = store, identity
        self.name, self.namespace = "archop-operator", "archop-system"

    def get(self, name: str, namespace: str):  # noqa: ANN201 - mirrors LeaseLock.get
        with self.store.lock:
            if self.store.record is None:
                return False, NotFound()
            return True, copy.copy(self.store.record)

    def create(self, name: str, namespace: str, election_record: LeaderElectionRecord) -> bool:
        with self.store.lock:
            if self.store.record is not None:
                return False
            self.store.record = copy.copy(election_record)
            return True

    def update(self, name: str, namespace: str, updated_record: LeaderElectionRecord) -> bool:
        with self.store.lock:
            if self.store.fail_updates:
                return False
            self.store.record = copy.copy(updated_record)
            return True


def candidate(store: LeaseStore, identity: str) -> LeaseElection:
    return LeaseElection(Settings(identity=identity, **FAST), lock=store.lock_for(identity))


def test_only_one_candidate_leads() -> None:
    store = LeaseStore()
    a, b = candidate(store, "a"), candidate(store, "b")
    assert a.try_acquire() is True
    assert b.try_acquire() is False
    assert store.record is not None and store.record.holder_identity == "a"
    assert a.try_acquire() is True  # the holder renews


def test_release_hands_over_without_waiting_for_expiry() -> None:
    store = LeaseStore()
    a, b = candidate(store, "a"), candidate(store, "b")
    assert a.try_acquire() and not b.try_acquire()
    assert a.release() is True
    assert store.record is not None and store.record.holder_identity is None
    assert b.try_acquire() is True  # immediately, although a's lease had 3 s left
    assert store.record.holder_identity == "b"
    assert a.release() is False  # a no longer holds it: releasing must not steal b's lease
    assert store.record.holder_identity == "b"


def test_standby_takes_over_after_the_lease_expires() -> None:
    store = LeaseStore()
    a, b = candidate(store, "a"), candidate(store, "b")
    assert a.try_acquire() and not b.try_acquire()
    started = time.monotonic()
    b.acquire()  # blocks while a's lease is fresh; a is gone and never renews
    waited = time.monotonic() - started
    assert 2.0 <= waited <= 6.0
    assert store.record is not None and store.record.holder_identity == "b"
    assert metrics.operator_leader._value.get() == 1


def test_missed_renewals_report_the_loss_and_stopping_does_not() -> None:
    store = LeaseStore()
    a = candidate(store, "a")
    a.acquire()
    lost = threading.Event()
    a.hold(lost.set)
    store.fail_updates = True
    assert lost.wait(timeout=6), "a renewal failure past the renew deadline must be reported"
    assert a.lost.is_set()

    store2 = LeaseStore()
    b = candidate(store2, "b")
    b.acquire()
    called = threading.Event()
    b.hold(called.set)
    b.stop()
    assert not called.is_set() and not b.lost.is_set()


def _get(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status, r.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()


def test_health_reflects_kopf_liveness_on_the_leader() -> None:
    kopf_ok = {"code": 200}

    class FakeKopf(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(kopf_ok["code"])
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    kopf_server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKopf)
    threading.Thread(target=kopf_server.serve_forever, daemon=True).start()
    health = Health(f"http://127.0.0.1:{kopf_server.server_address[1]}/healthz")
    server = serve_health(0, health)
    port = server.server_address[1]
    try:
        assert _get(port) == (200, "standby")
        health.leading_since = time.monotonic()
        assert _get(port) == (200, "leading")
        kopf_ok["code"] = 500
        assert _get(port)[0] == 503
        health.lost.set()
        assert _get(port) == (503, "lost the Lease; exiting")
    finally:
        server.shutdown()
        kopf_server.shutdown()


def test_health_grace_while_kopf_starts() -> None:
    health = Health("http://127.0.0.1:9/healthz")  # nothing listens on the discard port
    health.leading_since = time.monotonic()
    assert health.check() == (200, "leading; kopf starting")
    health.leading_since = time.monotonic() - 60
    assert health.check()[0] == 503


def test_takeover_of_an_expired_lease_reports_the_blind_interval() -> None:
    """b takes over after a died without releasing: nobody acted since a's last renewal."""
    store = LeaseStore()
    a, b = candidate(store, "a"), candidate(store, "b")
    assert a.try_acquire() and not b.try_acquire()
    assert store.record is not None
    last_renewal = datetime.datetime.fromisoformat(str(store.record.renew_time)).timestamp()
    deadline = time.monotonic() + 10
    while not b.try_acquire():  # a is gone: the Lease expires (3 s here)
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert b.unwatched_since() == last_renewal


def test_clean_handover_has_no_blind_interval() -> None:
    store = LeaseStore()
    a, b = candidate(store, "a"), candidate(store, "b")
    assert a.try_acquire() and not b.try_acquire()
    assert a.release()
    assert b.try_acquire()
    assert b.unwatched_since() is None
    c = candidate(LeaseStore(), "c")  # the very first holder of a new Lease
    assert c.try_acquire() and c.unwatched_since() is None


def test_lease_renewals_are_not_logged(caplog) -> None:
    """One INFO line per renewal (every second) would drown the operator's own logs."""
    import logging

    from archop.cli import quiet_noisy_loggers

    quiet_noisy_loggers()
    store = LeaseStore()
    a = candidate(store, "a")
    with caplog.at_level(logging.INFO):
        assert a.try_acquire() and a.try_acquire()
    assert not [r for r in caplog.records if "acquired lease" in r.getMessage()]


class FlakyLock(FakeLock):
    """Raises like urllib3 does on a connect timeout (not an ApiException) while `down` is set."""

    down = False

    def get(self, name: str, namespace: str):  # noqa: ANN201
        if self.down:
            raise TimeoutError("connect timed out")
        return super().get(name, namespace)

    def update(self, name: str, namespace: str, updated_record: LeaderElectionRecord) -> bool:
        if self.down:
            raise TimeoutError("connect timed out")
        return super().update(name, namespace, updated_record)


def test_an_api_timeout_is_a_failed_attempt_not_a_dead_election() -> None:
    store = LeaseStore()
    lock = FlakyLock(store, "a")
    a = LeaseElection(Settings(identity="a", **FAST), lock=lock)
    lock.down = True
    assert a.try_acquire() is False  # no exception escapes into the election thread
    lock.down = False
    assert a.try_acquire() is True
    lock.down = True
    assert a.try_acquire() is False  # a renewal that times out fails; the renew deadline then ends it


def test_lease_calls_have_a_timeout() -> None:
    from archop.election import LEASE_CALL_TIMEOUT, _TimedApi

    seen = {}

    class Api:
        def read_namespaced_lease(self, name, namespace, **kwargs):  # noqa: ANN001, ANN201
            seen.update(kwargs)

    _TimedApi(Api(), LEASE_CALL_TIMEOUT).read_namespaced_lease("l", "ns")
    assert seen == {"_request_timeout": LEASE_CALL_TIMEOUT}
