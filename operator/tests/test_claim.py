"""handlers/claim.py: which operator release manages an Architecture.

The decision is pure (decide); settle() runs it against an in-memory API that honours resourceVersion
preconditions the way the API server does, so the race between two operators is played for real.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from archop import apply, main, names, reasons
from archop.handlers import claim
from archop.handlers.claim import Action, Decision, Effects, LeaseRead, OtherLease, Seen

OURS, OTHER = "team-b", "archop-system"
NOW = 1_000_000.0
GRACE = claim.TAKEOVER_GRACE_SECONDS


def held(renewed_ago: float, duration: float = 8.0) -> OtherLease:
    return OtherLease(LeaseRead.FOUND, NOW - renewed_ago, duration)


# ---------------------------------------------------------------------------------------------- decide


def test_unclaimed_is_claimed() -> None:
    for empty in (None, ""):
        assert claim.decide(empty, OURS, None, NOW).action is Action.CLAIM


def test_our_claim_proceeds_without_looking_at_any_lease() -> None:
    assert claim.decide(OURS, OURS, None, NOW) == Decision(Action.PROCEED)


@pytest.mark.parametrize("renewed_ago", [0.0, 3.0, 8.0 + GRACE - 1])
def test_a_live_release_keeps_its_claim(renewed_ago: float) -> None:
    """Held, or expired for less than the grace: a release restarting (rolling update) is not gone."""
    decision = claim.decide(OTHER, OURS, held(renewed_ago), NOW)
    assert decision.action is Action.STAND_ASIDE and not decision.acts
    assert decision.other == OTHER
    assert "renewed" in decision.why


def test_a_released_lease_within_the_grace_still_counts_as_live() -> None:
    """A clean stop releases the Lease (duration 1 s); the release is back within the grace."""
    assert claim.decide(OTHER, OURS, held(5.0, duration=1.0), NOW).action is Action.STAND_ASIDE


def test_a_long_expired_lease_is_taken_over() -> None:
    decision = claim.decide(OTHER, OURS, held(8.0 + GRACE + 1), NOW)
    assert decision == Decision(Action.TAKE_OVER, OTHER, "its Lease expired 121s ago")
    assert decision.acts


def test_a_missing_lease_is_taken_over() -> None:
    decision = claim.decide(OTHER, OURS, OtherLease(LeaseRead.MISSING), NOW)
    assert (decision.action, decision.other) == (Action.TAKE_OVER, OTHER)


def test_a_lease_never_renewed_is_taken_over() -> None:
    assert claim.decide(OTHER, OURS, OtherLease(LeaseRead.FOUND), NOW).action is Action.TAKE_OVER


@pytest.mark.parametrize("lease", [OtherLease(LeaseRead.UNREADABLE), None])
def test_an_unreadable_lease_proves_nothing_so_we_stand_aside(lease: OtherLease | None) -> None:
    assert claim.decide(OTHER, OURS, lease, NOW).action is Action.STAND_ASIDE


def test_lease_times_are_read_from_the_api_shape() -> None:
    lease = OtherLease.of({"spec": {"holderIdentity": "archop-1", "leaseDurationSeconds": 8,
                                    "renewTime": "1970-01-12T13:46:40.250000Z"}})
    assert lease == OtherLease(LeaseRead.FOUND, NOW + 0.25, 8.0)
    assert OtherLease.of({"spec": {"acquireTime": "1970-01-12T13:46:40Z"}}).renewed_at == NOW
    assert OtherLease.of({"spec": {"renewTime": "yesterday"}}).renewed_at is None
    assert OtherLease.of({}) == OtherLease(LeaseRead.FOUND, None, 0.0)


def test_seen_reads_the_annotation_and_the_resource_version() -> None:
    body = {"metadata": {"resourceVersion": "42", "annotations": {names.CLAIM_ANNOTATION: OTHER}}}
    assert Seen.of(body) == Seen(OTHER, "42")
    assert Seen.of({"metadata": {}}) == Seen(None, "")
    assert names.CLAIM_ANNOTATION == "archop.io/operator"


# ---------------------------------------------------------------------------------------------- settle


@dataclass
class Cluster:
    """One Architecture and the Leases, with the API server's rule: a write that carries a resourceVersion
    succeeds only if the object is still at it, and then moves it on."""

    claim: str | None = None
    version: int = 1
    gone: bool = False
    leases: dict[str, OtherLease] = field(default_factory=dict)
    writes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self) -> Seen:
        return Seen(self.claim, str(self.version))

    def effects(self, ours: str, before_write: Any = None) -> Effects:
        def read() -> Seen | None:
            return None if self.gone else self.seen()

        def read_lease(namespace: str) -> OtherLease:
            return self.leases.get(namespace, OtherLease(LeaseRead.MISSING))

        def write_claim(resource_version: str) -> bool:
            if before_write is not None:
                before_write()
            with self.lock:
                if self.gone or resource_version != str(self.version):
                    return False
                self.claim, self.version = ours, self.version + 1
                self.writes.append(ours)
                return True

        return Effects(read=read, read_lease=read_lease, write_claim=write_claim, now=lambda: NOW)


def test_settle_claims_an_unclaimed_architecture() -> None:
    cluster = Cluster()
    assert claim.settle(cluster.seen(), OURS, cluster.effects(OURS)).action is Action.CLAIM
    assert (cluster.claim, cluster.writes) == (OURS, [OURS])


def test_settle_writes_nothing_for_our_own_claim() -> None:
    cluster = Cluster(claim=OURS)
    assert claim.settle(cluster.seen(), OURS, cluster.effects(OURS)) == Decision(Action.PROCEED)
    assert cluster.writes == []


def test_settle_writes_nothing_while_the_other_release_lives() -> None:
    cluster = Cluster(claim=OTHER, leases={OTHER: held(1.0)})
    decision = claim.settle(cluster.seen(), OURS, cluster.effects(OURS))
    assert decision is not None and decision.action is Action.STAND_ASIDE
    assert (cluster.claim, cluster.writes) == (OTHER, [])


@pytest.mark.parametrize("lease", [None, held(8.0 + GRACE + 60)], ids=["lease-missing", "lease-expired"])
def test_settle_takes_over_from_a_release_that_is_gone(lease: OtherLease | None) -> None:
    cluster = Cluster(claim=OTHER, leases={OTHER: lease} if lease else {})
    decision = claim.settle(cluster.seen(), OURS, cluster.effects(OURS))
    assert decision is not None and (decision.action, decision.other) == (Action.TAKE_OVER, OTHER)
    assert cluster.claim == OURS


def test_race_on_claim_exactly_one_operator_wins() -> None:
    """Both operators saw the Architecture unclaimed at the same resourceVersion and both decided to claim;
    both writes are released together. One wins; the loser reads again, finds the winner's live claim and
    stands aside."""
    cluster = Cluster(leases={OURS: held(0.5), OTHER: held(0.5)})
    start = cluster.seen()
    both_decided = threading.Barrier(2, timeout=5)
    results: dict[str, Decision | None] = {}

    def run(ns: str) -> None:
        results[ns] = claim.settle(start, ns, cluster.effects(ns, before_write=both_decided.wait))

    threads = [threading.Thread(target=run, args=(ns,)) for ns in (OURS, OTHER)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(cluster.writes) == 1, cluster.writes
    winner = cluster.writes[0]
    loser = OTHER if winner == OURS else OURS
    assert cluster.claim == winner
    assert results[winner] == Decision(Action.CLAIM, why="no operator release had claimed it")
    lost = results[loser]
    assert lost is not None and (lost.action, lost.other) == (Action.STAND_ASIDE, winner)


def test_a_stale_copy_is_read_again_after_a_lost_write() -> None:
    """kopf's body said unclaimed, but the other release claimed it meanwhile: the write fails, the fresh
    read shows the claim, and this release stands aside."""
    cluster = Cluster(claim=OTHER, version=7, leases={OTHER: held(1.0)})
    decision = claim.settle(Seen(None, "6"), OURS, cluster.effects(OURS))
    assert decision is not None and decision.action is Action.STAND_ASIDE
    assert cluster.writes == []


def test_settle_reads_first_without_a_copy_and_reports_a_gone_architecture() -> None:
    cluster = Cluster(claim=OURS)
    assert claim.settle(None, OURS, cluster.effects(OURS)) == Decision(Action.PROCEED)
    cluster.gone = True
    assert claim.settle(None, OURS, cluster.effects(OURS)) is None
    assert claim.settle(Seen(None, "1"), OURS, cluster.effects(OURS)) is None  # lost the write: gone


def test_settle_gives_up_when_every_write_loses() -> None:
    cluster = Cluster()
    fx = cluster.effects(OURS)
    busy = Effects(read=fx.read, read_lease=fx.read_lease, write_claim=lambda rv: False, now=fx.now)
    with pytest.raises(claim.Contended):
        claim.settle(cluster.seen(), OURS, busy)


# ---------------------------------------------------------------------------------------------- tell


@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, bool]]:
    out: list[tuple[str, str, bool]] = []
    monkeypatch.setattr(claim.events, "emit",
                        lambda body, reason, message, warning=False: out.append((reason, message, warning)))
    monkeypatch.setattr(claim, "_warned", set())
    return out


def _body(uid: str = "u1") -> dict[str, Any]:
    return {"metadata": {"name": "shop", "namespace": "shop", "uid": uid, "resourceVersion": "1"}}


def test_standing_aside_is_told_once(emitted: list[tuple[str, str, bool]]) -> None:
    aside = Decision(Action.STAND_ASIDE, OTHER, "its Lease was renewed 1s ago")
    for _ in range(3):
        claim.tell(_body(), OURS, aside)
    assert len(emitted) == 1
    reason, message, warning = emitted[0]
    assert (reason, warning) == (reasons.MANAGED_BY_ANOTHER_OPERATOR, True)
    assert f"namespace {OTHER}" in message and f"namespace {OURS}" in message and "uninstall" in message
    claim.tell(_body("u2"), OURS, aside)  # another Architecture: its own event
    assert len(emitted) == 2


def test_acting_again_forgets_the_warning(emitted: list[tuple[str, str, bool]]) -> None:
    aside = Decision(Action.STAND_ASIDE, OTHER, "held")
    claim.tell(_body(), OURS, aside)
    claim.tell(_body(), OURS, Decision(Action.PROCEED))
    claim.tell(_body(), OURS, aside)
    assert [e[0] for e in emitted] == [reasons.MANAGED_BY_ANOTHER_OPERATOR] * 2


def test_a_takeover_is_told_and_a_plain_claim_is_not(emitted: list[tuple[str, str, bool]]) -> None:
    claim.tell(_body(), OURS, Decision(Action.CLAIM, why="nobody"))
    claim.tell(_body(), OURS, Decision(Action.TAKE_OVER, OTHER, "its Lease is gone"))
    assert emitted == [(reasons.CLAIM_TAKEN_OVER,
                        f"Taken over from the operator in namespace {OTHER}: its Lease is gone", False)]


# ---------------------------------------------------------------------------------------------- API effects


class FakeClient:
    """Answers pykube's request() from a table of (method, url) -> (status, body); records what was sent."""

    def __init__(self, answers: dict[tuple[str, str], tuple[int, dict[str, Any]]]) -> None:
        self.answers = answers
        self.sent: list[dict[str, Any]] = []

    def request(self, method: str, **kwargs: Any) -> requests.Response:
        self.sent.append({"method": method, **kwargs})
        status, body = self.answers[(method, kwargs["url"])]
        response = requests.Response()
        response.status_code, response._content = status, json.dumps(body).encode()
        response.reason = "x"
        return response


def test_the_claim_write_carries_the_resource_version() -> None:
    url = f"{names.PLURAL}/shop"
    client = FakeClient({("PATCH", url): (200, {})})
    fx = claim.kube_effects(client, "shop", "shop", OURS, names.LEASE_NAME)
    assert fx.write_claim("41") is True
    sent = client.sent[0]
    assert json.loads(sent["data"]) == {
        "metadata": {"resourceVersion": "41", "annotations": {names.CLAIM_ANNOTATION: OURS}}}
    assert sent["headers"] == apply.MERGE and sent["namespace"] == "shop"
    for lost in (409, 404):
        client.answers[("PATCH", url)] = (lost, {"message": "conflict"})
        assert fx.write_claim("41") is False


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, {"spec": {"renewTime": "1970-01-12T13:46:40Z", "leaseDurationSeconds": 8}},
         OtherLease(LeaseRead.FOUND, NOW, 8.0)),
        (404, {"message": "not found"}, OtherLease(LeaseRead.MISSING)),
        (403, {"message": "forbidden"}, OtherLease(LeaseRead.UNREADABLE)),
        (500, {"message": "boom"}, OtherLease(LeaseRead.UNREADABLE)),
    ],
)
def test_the_other_lease_is_read_by_name_in_its_namespace(status: int, body: dict[str, Any],
                                                          expected: OtherLease) -> None:
    client = FakeClient({("GET", f"leases/{names.LEASE_NAME}"): (status, body)})
    assert claim.kube_effects(client, "shop", "shop", OURS, names.LEASE_NAME).read_lease(OTHER) == expected
    assert client.sent[0]["namespace"] == OTHER and client.sent[0]["version"] == "coordination.k8s.io/v1"


def test_a_namespaced_release_reads_leases_only_in_its_watched_namespaces() -> None:
    """The chart's namespaced RBAC mode grants the Lease read only there: elsewhere nothing is sent and the
    Lease counts as unreadable, so the other release keeps its claim."""
    client = FakeClient({("GET", f"leases/{names.LEASE_NAME}"): (200, {"spec": {}})})
    fx = claim.kube_effects(client, "shop", "shop", OURS, names.LEASE_NAME, lease_namespaces=("shop",))
    assert fx.read_lease(OTHER) == OtherLease(LeaseRead.UNREADABLE)
    assert client.sent == []
    assert fx.read_lease("shop").read is LeaseRead.FOUND
    assert claim.decide(OTHER, OURS, OtherLease(LeaseRead.UNREADABLE), NOW).action is Action.STAND_ASIDE


# ---------------------------------------------------------------------------------------------- entry points


def _deciding(monkeypatch: pytest.MonkeyPatch, *decisions: Decision | None) -> list[Seen | None]:
    """claim.check answers these decisions in turn; returns the copies it was handed."""
    seen: list[Seen | None] = []
    queue = list(decisions)

    def check(body: Any, copy: Seen | None) -> Decision | None:
        seen.append(copy)
        return queue.pop(0)

    monkeypatch.setattr(claim, "check", check)
    monkeypatch.setattr(claim, "RECHECK_SECONDS", 0.0)
    return seen


ASIDE = Decision(Action.STAND_ASIDE, OTHER, "held")


def test_may_act_follows_the_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    _deciding(monkeypatch, Decision(Action.PROCEED), ASIDE, None)
    assert claim.may_act(_body()) is True
    assert claim.may_act(_body()) is False
    assert claim.may_act(_body()) is False  # gone


async def test_wait_for_turn_idles_until_the_other_release_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    copies = _deciding(monkeypatch, ASIDE, ASIDE, Decision(Action.TAKE_OVER, OTHER, "gone"))
    assert await claim.wait_for_turn(_body()) is True
    assert copies == [Seen(None, "1"), None, None]  # kopf's copy first, then fresh reads


async def test_wait_for_turn_ends_when_the_architecture_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    _deciding(monkeypatch, ASIDE, None)
    assert await claim.wait_for_turn(_body()) is False


class Stopped:
    """kopf's daemon flag: falsy until set; `await stopped.wait(t)` returns early once set."""

    def __init__(self) -> None:
        self.flag = False

    def __bool__(self) -> bool:
        return self.flag

    async def wait(self, timeout: float) -> None:
        self.flag = True  # the daemon is stopped while it waits


async def test_wait_for_turn_ends_when_the_daemon_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    _deciding(monkeypatch, ASIDE, ASIDE)
    assert await claim.wait_for_turn(_body(), Stopped()) is False


def test_reconcile_does_nothing_when_another_release_manages(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(claim, "may_act", lambda body: False)
    monkeypatch.setattr(main.rec, "reconcile", lambda **kw: calls.append("reconcile"))
    main.reconcile(name="shop", namespace="shop", body=_body(), spec={}, status={},  # type: ignore[arg-type]
                   meta={"generation": 1}, logger=None)  # type: ignore[arg-type]
    assert calls == []
    monkeypatch.setattr(claim, "may_act", lambda body: True)
    main.reconcile(name="shop", namespace="shop", body=_body(), spec={}, status={},  # type: ignore[arg-type]
                   meta={"generation": 1}, logger=None)  # type: ignore[arg-type]
    assert calls == ["reconcile"]


async def test_delete_and_monitor_wait_for_their_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    turn = {"mine": False}

    async def wait_for_turn(body: Any, stopped: Any = None) -> bool:
        return turn["mine"]

    async def monitor(**kwargs: Any) -> None:
        calls.append("monitor")

    monkeypatch.setattr(claim, "wait_for_turn", wait_for_turn)
    monkeypatch.setattr(main.rec, "delete", lambda **kw: calls.append("delete"))
    monkeypatch.setattr("archop.handlers.monitor.monitor", monitor)
    for _ in range(2):
        await main.delete(name="shop", namespace="shop", body=_body(), spec={}, logger=None)  # type: ignore[arg-type]
        await main.monitor(name="shop", namespace="shop", body=_body(), spec={}, status={},  # type: ignore[arg-type]
                           stopped=Stopped(), logger=None)  # type: ignore[arg-type]
        turn["mine"] = True
    assert calls == ["delete", "monitor"]
