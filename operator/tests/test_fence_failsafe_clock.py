"""The lease agent's failsafe timing (scripts/fence.sh, failsafe_holds), run by bash without Postgres.

A reply's reply_time is the follower's clock. The agent must time replies on the leader's own clock: a
follower whose clock runs ahead must not keep an old leader's failsafe alive after its replies stop."""

from __future__ import annotations

import subprocess
from pathlib import Path

from archop.failover import lease

FENCE = Path(__file__).resolve().parents[1] / "archop" / "scripts" / "fence.sh"
AHEAD = "2099-01-01 00:00:00+00"  # a follower whose clock is decades ahead
LATER = "2099-01-01 00:00:01+00"


def holds(*steps: tuple[float, tuple[str, ...]]) -> list[bool]:
    """Feed the agent's failsafe check one member list per step, at the given time on its own clock; each
    step's query started at that time, so the previous step's time is when the previous query started."""
    lines = [f"source {FENCE}", "NOW=0", "uptime_s() { echo \"$NOW\"; }"]
    since = steps[0][0]
    for now, members in steps:
        args = " ".join(f"'{m}'" for m in members)
        lines.append(f"NOW={now}; if failsafe_holds {since} {args}; then echo yes; else echo no; fi")
        since = now
    out = subprocess.run(["bash", "-c", "\n".join(lines)], capture_output=True, text=True, check=True,
                         env={"ARCHOP_SOURCE_ONLY": "1", "PGDATA": "/nonexistent",
                              "ARCHOP_FAILSAFE_REPLY_SECONDS": f"{lease.FAILSAFE_REPLY_SECONDS:g}",
                              "PATH": "/usr/bin:/bin"})
    return [w == "yes" for w in out.stdout.split()]


def test_a_reply_counts_from_before_the_agent_saw_it_change_not_from_its_timestamp():
    reply = lease.FAILSAFE_REPLY_SECONDS
    got = holds(
        (100.0, (f"db-1|{AHEAD}",)),  # first sighting: it may be old, it does not count yet
        (100.5, (f"db-1|{LATER}",)),  # a new reply: it arrived after the previous look (100.0), on this clock
        (100.0 + reply - 0.1, (f"db-1|{LATER}",)),  # no newer reply, still within the window
        (100.0 + reply + 0.1, (f"db-1|{LATER}",)),  # nothing new for longer than the window: over,
    )  # although the follower's timestamp is still in the future
    assert got == [False, True, True, False]


def test_every_member_must_stream_and_an_empty_list_holds():
    a, b = f"db-1|{AHEAD}", f"db-2|{AHEAD}"
    got = holds((10.0, (a, b)), (10.5, (f"db-1|{LATER}", f"db-2|{LATER}")),
                (11.0, (f"db-1|{LATER}", "db-2|")), (11.5, ()))
    # Both new: holds. One stops streaming: over. No member named (nobody may be promoted): holds.
    assert got == [False, True, False, True]


def test_a_member_that_stops_streaming_starts_over():
    got = holds((1.0, (f"db-1|{AHEAD}",)), (1.5, (f"db-1|{LATER}",)), (2.0, ("db-1|",)),
                (2.5, (f"db-1|{LATER}",)))  # back with the same value: it may be old, not counted
    assert got == [False, True, False, False]
