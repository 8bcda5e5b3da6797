"""The leader lease: how long an old leader may still acknowledge writes once the operator stops vouching for
it, so that a failover promotes only after it surely cannot any more (docs/failover.md, "Leader lease").

The leader holds the lease while either
- the operator renewed it recently: the operator keeps one session to the leader (application_name
  SESSION, as the superuser) and runs a statement on it every monitor tick; the agent in the leader's pod
  (scripts/fence.sh) measures the session's last statement on the leader's own clock (pg_stat_activity
  state_change), so no two clocks are compared; or
- failsafe: every follower the operator may promote (the MEMBERS_SETTING list, which the operator keeps on
  the leader) streams from it and a new reply from it arrived within FAILSAFE_REPLY_SECONDS, timed by the
  agent on the leader's clock (a reply carries the follower's clock, which is never compared): the agent
  dates a reply by the start of its previous look, before which it had not arrived. A failover
  detaches the followers before promoting one, which ends this; while no failover can happen it lets the
  leader write through an operator restart.
When neither holds the agent stops the postmaster (the hard fence) within AGENT_INTERVAL_SECONDS.

Pure: constants and the operator-side arithmetic.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

SESSION = "archop-lease"
MEMBERS_SETTING = "archop.followers"
# An operator renewal keeps the lease this long on the leader's clock: three monitor ticks, so two slow or
# failed ticks in a row do not end it (and while every follower streams, the failsafe holds anyway).
TTL_SECONDS = 3.0
# Followers report every second (wal_receiver_status_interval = 1s in scripts/postgresql.conf); a reply
# older than this means the follower stopped streaming (a partition; a Detach the leader sees ends the row at
# once). Two seconds of slack: a loaded machine delays a report, and a leader whose operator is away would
# stop itself for nothing (1.5 s did, once, in CI's `make test`).
FAILSAFE_REPLY_SECONDS = 3.0
AGENT_INTERVAL_SECONDS = 0.5  # how often the agent checks
# The agent's check and an immediate shutdown take well under this, and it also covers the clock-rate
# difference between the operator's and the leader's clocks over a few seconds.
MARGIN_SECONDS = 1.0


class Renewal(enum.Enum):
    """How one try of the operator's lease session went (act.LeaseSession.renew)."""

    RENEWED = "renewed"
    BROKEN = "broken"  # the established session failed: the connection to that postmaster broke
    FAILED = "failed"  # no session could be opened (refused, unreachable): no established connection broke


def expires_at(renewed_at: float, detached_at: float) -> float:
    """When the old leader's lease has surely run out, on the operator's clock: TTL after the last renewal,
    or FAILSAFE_REPLY after a follower of the lease stopped replying to it (it was detached; the agent dates a
    reply no later than its arrival), whichever is later; then the agent's next check and its stop."""
    return (max(renewed_at + TTL_SECONDS, detached_at + FAILSAFE_REPLY_SECONDS)
            + AGENT_INTERVAL_SECONDS + MARGIN_SECONDS)


@dataclass
class LeaseClock:
    """The times this process knows of. Another process's renewals all happened before this one started
    (an operator renews only while it holds the operator Lease), so `started` bounds them; a failover resumed
    by a new process had its followers detached before that process saw it."""

    started: float
    renewed: dict[str, float] = field(default_factory=dict)  # leader pod -> last renewal by this process
    last_try_ok: dict[str, bool] = field(default_factory=dict)  # leader pod -> whether the last try worked
    # (old leader, failover startedAt) -> when that failover's fencing (detaching the followers) finished
    fenced: dict[tuple[str, str], float] = field(default_factory=dict)

    def renewal(self, pod: str, at: float) -> None:
        self.renewed[pod] = at
        self.last_try_ok[pod] = True

    def failure(self, pod: str) -> None:
        """The established lease session to the pod failed (Renewal.BROKEN), not a new connection."""
        self.last_try_ok[pod] = False

    def record(self, pod: str, renewal: Renewal, at: float) -> bool:
        """Note how a try of the lease session went; True when it renewed."""
        if renewal is Renewal.RENEWED:
            self.renewal(pod, at)
        elif renewal is Renewal.BROKEN:
            self.failure(pod)
        return renewal is Renewal.RENEWED

    def session_lost(self, pod: str) -> bool:
        """This process renewed the pod's lease over its lease session, and since then that established
        connection broke (decide.refusal_proves_down); a later renewal over a new connection clears it."""
        return pod in self.renewed and self.last_try_ok.get(pod) is False

    def mark_fenced(self, old: str, started_at: str, at: float) -> None:
        self.fenced[(old, started_at)] = at

    def expiry(self, old: str, started_at: str, now: float) -> float:
        detached = self.fenced.setdefault((old, started_at), now)
        return expires_at(max(self.renewed.get(old, self.started), self.started), detached)
