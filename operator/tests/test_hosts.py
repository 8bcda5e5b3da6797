"""hosts.py: one Architecture per ingress host, first come, first served (the kopf index entry and decide)."""

from __future__ import annotations

from typing import Any

import pytest
from archop.hosts import GRANTED, PENDING, TAKEN, Claim, Decision, decide, host_key, index_entry, refusal

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"


def claim(ns: str, name: str, created: str = T0, state: str | None = TAKEN, uid: str = "") -> Claim:
    return Claim(namespace=ns, name=name, uid=uid or f"uid-{ns}-{name}", created=created, state=state)


def body(ns: str = "team-a", name: str = "shop", host: Any = "Shop.Example.com", enabled: bool = True,
         created: str = T0, status: dict[str, Any] | None = None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": ns, "name": name, "uid": f"uid-{ns}-{name}",
                            "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = T1
    ingress: dict[str, Any] = {"enabled": enabled}
    if host is not None:
        ingress["host"] = host
    return {"metadata": meta, "spec": {"ingress": ingress}, "status": status or {}}


# ---------------------------------------------------------------------------------------------- decide


def test_alone_it_gets_the_host() -> None:
    me = claim("team-a", "shop", state=None)
    assert decide("shop.example.com", me, []) == Decision("shop.example.com", GRANTED)
    assert decide("shop.example.com", me, [me]).granted  # the index may hold this very Architecture


def test_the_same_architecture_is_never_its_own_rival() -> None:
    """An older copy of itself in the index (other state, other spec) does not count against it."""
    me = claim("team-a", "shop", created=T1, state=None)
    stale_self = claim("team-a", "shop", created=T1, state=GRANTED)
    assert decide("h", me, [stale_self]).granted


def test_the_holder_keeps_the_host_against_an_older_newcomer() -> None:
    """first come, first served: an Architecture created earlier cannot take a younger one's host by
    changing its spec."""
    holder = claim("team-b", "web", created=T1, state=GRANTED)
    older = claim("team-a", "shop", created=T0, state=None)
    assert decide("h", older, [holder, older]) == Decision("h", TAKEN, "team-b/web")
    assert decide("h", holder, [holder, older]).granted


def test_nobody_holds_it_the_oldest_gets_it() -> None:
    old = claim("team-b", "web", created=T0, state=TAKEN)
    young = claim("team-a", "shop", created=T1, state=TAKEN)
    assert decide("h", old, [old, young]).granted
    assert decide("h", young, [old, young]) == Decision("h", TAKEN, "team-b/web")


@pytest.mark.parametrize(("a", "b", "winner"), [
    (("team-a", "shop"), ("team-b", "shop"), "team-a/shop"),  # same second: namespace first
    (("team-a", "alpha"), ("team-a", "beta"), "team-a/alpha"),  # then name
])
def test_ties_in_creation_time_go_by_namespace_then_name(a: tuple[str, str], b: tuple[str, str],
                                                         winner: str) -> None:
    first, second = claim(*a, state=TAKEN), claim(*b, state=TAKEN)
    for me in (first, second):
        got = decide("h", me, [first, second])
        assert got.granted == (me.ref == winner)
        if not got.granted:
            assert got.by == winner


def test_two_holders_settle_on_the_first_in_order() -> None:
    """Two holders (decisions that could not see each other, or an operator from before this rule): the
    first in order keeps it, the other gives it up."""
    a = claim("team-a", "shop", created=T0, state=GRANTED)
    b = claim("team-b", "web", created=T0, state=GRANTED)
    assert decide("h", a, [a, b]).granted
    assert decide("h", b, [a, b]) == Decision("h", TAKEN, "team-a/shop")


def test_an_undecided_rival_makes_it_wait() -> None:
    """Two Architectures created together may each decide before seeing the other: while a rival's claim
    is not decided (nothing recorded for this host), wait, whatever the order."""
    me = claim("team-a", "shop", created=T0, state=None)
    rival = claim("team-b", "web", created=T1, state=None)
    assert decide("h", me, [me, rival]) == Decision("h", PENDING, "team-b/web")
    # once both recorded a decision, the order decides, the same for both
    me_, rival_ = claim("team-a", "shop", created=T0, state=PENDING), claim("team-b", "web", created=T1,
                                                                           state=PENDING)
    assert decide("h", me_, [me_, rival_]).granted
    assert decide("h", rival_, [me_, rival_]) == Decision("h", TAKEN, "team-a/shop")


def test_a_holder_does_not_wait_for_undecided_rivals() -> None:
    me = claim("team-a", "shop", created=T1, state=GRANTED)
    assert decide("h", me, [me, claim("team-b", "web", created=T0, state=None)]).granted


def test_the_record_goes_into_the_status() -> None:
    taken = Decision("h", TAKEN, "team-b/web")
    assert taken.record() == {"host": "h", "state": TAKEN, "heldBy": "team-b/web"}
    assert Decision("h", GRANTED).record() == {"host": "h", "state": GRANTED, "heldBy": ""}


# ---------------------------------------------------------------------------------------------- the index


def test_hosts_compare_case_insensitively() -> None:
    assert host_key("Shop.Example.COM") == host_key("shop.example.com.") == "shop.example.com"
    (key,) = index_entry(body(host="Shop.Example.com"))
    (other,) = index_entry(body(ns="team-b", host="SHOP.example.com"))
    assert key == other == "shop.example.com"


def test_index_entry_carries_identity_and_order() -> None:
    entry = index_entry(body(created=T1))
    assert entry == {"shop.example.com": Claim("team-a", "shop", "uid-team-a-shop", T1, None)}


def test_the_recorded_state_counts_only_for_the_host_it_was_decided_for() -> None:
    granted = {"ingressHost": {"host": "shop.example.com", "state": GRANTED, "heldBy": ""}}
    assert index_entry(body(status=granted))["shop.example.com"].state == GRANTED
    moved = index_entry(body(host="new.example.com", status=granted))
    assert moved["new.example.com"].state is None


def test_deleted_and_ingressless_architectures_claim_nothing() -> None:
    assert index_entry(body(deleting=True)) == {}
    assert index_entry(body(enabled=False)) == {}
    no_app = body()
    no_app["spec"]["app"] = {"enabled": False}  # no app tier: no Ingress, whatever ingress says
    assert index_entry(no_app) == {}


def test_the_catch_all_is_a_host_of_its_own_and_the_default_host_applies() -> None:
    assert list(index_entry(body(host=""))) == [""]
    assert list(index_entry(body(host=None))) == ["archop.local"]  # spec.ingress.host's default


def test_refusals_name_the_other_architecture() -> None:
    taken = refusal({"host": "shop.example.com", "state": TAKEN, "heldBy": "team-b/web"})
    assert taken.startswith("Host shop.example.com belongs to Architecture team-b/web")
    pending = refusal({"host": "", "state": PENDING, "heldBy": "team-b/web"})
    assert pending.startswith("The catch-all rule (every host) is also asked for by Architecture team-b/web")
