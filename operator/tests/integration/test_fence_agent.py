"""The leader-lease agent (fence.sh) on real Postgres 15, with the operator's own lease session
(act.LeaseSession): a primary keeps taking writes while the operator renews its lease or every follower the
operator may promote streams from it, and stops itself (the hard fence) within the bound the operator waits
out before promoting (lease.expires_at) once neither holds."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psycopg
import pytest
from archop.failover import act, lease
from archop.health.probe import Target

from testsupport.postgres import (
    clone_follower,
    free_port,
    init_leader,
    run_script,
    script_env,
    start_by_script,
)

from .loopback import sql, streaming_from, wait_for

pytestmark = pytest.mark.integration
REACTION = lease.AGENT_INTERVAL_SECONDS + lease.MARGIN_SECONDS


def agent(pg, leader):
    env = script_env(pg.base, leader.name, leader.port, leader.port)
    proc = run_script("fence.sh", env, pg.base / f"{leader.name}-lease.log")
    pg.procs.append(proc)
    return proc


def up(inst) -> bool:
    try:
        return sql(inst, "select not pg_is_in_recovery()") == [(True,)]
    except psycopg.OperationalError:
        return False


async def stopped_within(inst, seconds: float) -> float:
    """Seconds until the instance stopped answering; fails past `seconds`."""
    start = time.monotonic()
    await wait_for(lambda: not up(inst), timeout=seconds, interval=0.05, what=f"{inst.name} stops itself")
    return time.monotonic() - start


async def leader_with_follower(pg):
    leader = pg.add(init_leader(pg.base, "db-0"))
    follower = pg.add(clone_follower(leader, pg.base, "db-1"))
    await wait_for(lambda: streaming_from(leader, "db-1"), what="streaming")
    target = Target("127.0.0.1", leader.port)
    await act.set_lease_members(target, ("db-1",))
    return leader, follower, target


async def test_the_operators_renewals_keep_the_lease_and_their_end_stops_the_leader(pg):
    leader, follower, target = await leader_with_follower(pg)
    session = act.LeaseSession()
    follower.stop()  # no failsafe: only the renewals keep the lease
    agent(pg, leader)
    until = time.monotonic() + lease.TTL_SECONDS + 2
    while time.monotonic() < until:
        assert await session.renew("db-0", target) is lease.Renewal.RENEWED
        assert up(leader)
        await asyncio.sleep(1.0)  # the monitor's tick
    await session.close()
    renewed = time.monotonic() - 1.0  # the last renewal's statement ended about a tick ago
    took = await stopped_within(leader, lease.TTL_SECONDS + REACTION + 2)
    # The operator promotes only after lease.expires_at: the old leader must be down by then.
    assert time.monotonic() - renewed <= lease.expires_at(0, 0), f"stopped {took:.1f}s after the last renewal"
    # The agent's stop leaves no fence marker: start.sh may bring it back, but only gated (below).
    assert not (Path(leader.datadir) / act.FENCE_MARKER).exists()


def app_connects(inst) -> bool | None:
    """True: the application may connect; False: the gate refuses it; None: no answer either way (a slow
    machine), to be asked again."""
    try:
        psycopg.connect(inst.dsn(user="app"), connect_timeout=5).close()
        return True
    except psycopg.OperationalError as e:
        return False if "pg_hba.conf" in str(e) else None


async def gated(inst) -> bool:
    """The gate refuses the application (asked until the server answers one way or the other)."""
    answer = await wait_for(lambda: app_connects(inst) is not None and [app_connects(inst)], timeout=20,
                            what=f"{inst.name} answers the application")
    return answer == [False]


async def restarted_on_its_own(pg, leader):
    """The leader's postmaster comes back through start.sh with nobody else answering on rw: the crash
    restart that starts it as a primary without the operator's word."""
    sql(leader, "create role app login")
    leader.stop("immediate")
    inst, proc = start_by_script(pg.base, leader.name, primary_port=free_port(), port=leader.port,
                                 ARCHOP_RESTART_GRACE_SECONDS="0")
    pg.add(inst, proc)
    assert (pg.base / "archop-gated").exists()
    return inst


async def test_a_primary_restarted_on_its_own_takes_no_client_until_the_operator_renews_it(pg):
    """The start gate: the operator's superuser and replication may connect, applications may not, and the
    agent neither stops it nor lets clients in while the lease does not hold, however long that lasts."""
    leader, follower, target = await leader_with_follower(pg)
    follower.stop()
    inst = await restarted_on_its_own(pg, leader)
    agent(pg, inst)
    await asyncio.sleep(lease.TTL_SECONDS + REACTION + 1)
    # Still up (the agent never stops a gated primary; nothing would restart it here) and still gated.
    await wait_for(lambda: up(inst), timeout=20, what=f"{inst.name} answers the superuser")
    assert await gated(inst)
    session = act.LeaseSession()
    try:
        assert await session.renew(inst.name, target) is lease.Renewal.RENEWED
        # The bound is the machine's, not the design's: the agent looks every half second.
        await wait_for(lambda: app_connects(inst), timeout=20, interval=0.1, what="the gate opens")
    finally:
        await session.close()
    assert not (pg.base / "archop-gated").exists()


async def test_the_gate_opens_when_every_follower_streams_from_the_restarted_primary(pg):
    """With the operator away, followers streaming from it prove that none of them was promoted."""
    leader, follower, _ = await leader_with_follower(pg)
    follower.stop()
    inst = await restarted_on_its_own(pg, leader)
    agent(pg, inst)
    await asyncio.sleep(1.5)
    assert await gated(inst)
    follower.start()
    await wait_for(lambda: app_connects(inst), timeout=lease.FAILSAFE_REPLY_SECONDS + REACTION + 10,
                   interval=0.2, what="the gate opens on failsafe")


async def renewed_then_left(pg, leader, target) -> Path:
    """The agent starts while the operator renews (as on any healthy leader), watches the followers' replies
    for a few seconds, then the operator goes away (a restart): its lease session ends. The agent's log."""
    session = act.LeaseSession()
    agent(pg, leader)
    log = pg.base / f"{leader.name}-lease.log"
    until = time.monotonic() + 3
    while time.monotonic() < until:
        assert await session.renew(leader.name, target) is lease.Renewal.RENEWED
        await asyncio.sleep(0.5)
    assert "LeaseHeld: renewed" in log.read_text(), log.read_text()
    await session.close()
    return log


async def test_failsafe_holds_while_every_follower_streams_and_detaching_one_ends_it(pg):
    """An operator restart does not stop a healthy leader; a failover's Detach of its candidate does."""
    leader, follower, target = await leader_with_follower(pg)
    log = await renewed_then_left(pg, leader, target)
    await asyncio.sleep(lease.TTL_SECONDS + 2)  # no renewal at all
    assert up(leader), log.read_text()
    await act.detach(Target("127.0.0.1", follower.port))  # the failover's Detach
    detached = time.monotonic()
    await stopped_within(leader, lease.FAILSAFE_REPLY_SECONDS + lease.AGENT_INTERVAL_SECONDS + REACTION + 5)
    assert time.monotonic() - detached <= lease.expires_at(-100, 0)


async def test_an_agent_that_starts_on_an_unrenewed_primary_counts_no_reply_it_has_not_seen_arrive(pg):
    """A reply's timestamp is the follower's clock, so a (re)started agent cannot tell how old the last one
    is: with no renewal either, the primary is stopped at once rather than trusted."""
    leader, _, _ = await leader_with_follower(pg)
    agent(pg, leader)
    await stopped_within(leader, REACTION + 2)


async def test_only_a_superuser_session_renews(pg):
    """An application that names its session archop-lease keeps no lease alive."""
    leader, follower, _ = await leader_with_follower(pg)
    sql(leader, "create role app login")
    follower.stop()
    fake = psycopg.connect(leader.dsn(user="app", application_name=lease.SESSION), autocommit=True)
    agent(pg, leader)

    async def keep_busy() -> None:
        while True:
            fake.execute("select 1")
            await asyncio.sleep(0.5)

    busy = asyncio.create_task(keep_busy())
    try:
        await stopped_within(leader, lease.TTL_SECONDS + REACTION + 2)
    finally:
        busy.cancel()


async def test_a_standby_is_left_alone(pg):
    leader, follower, _ = await leader_with_follower(pg)
    agent_proc = agent(pg, follower)
    await asyncio.sleep(2)
    assert sql(follower, "select pg_is_in_recovery()") == [(True,)]
    assert agent_proc.poll() is None


async def test_a_frozen_primary_is_killed_before_it_can_resume(pg):
    """A primary that held its lease and then stops answering (every process SIGSTOPped) is killed once it
    has not answered for TTL: it cannot have been renewed since, and a thawed backend must not acknowledge
    a commit after a failover elsewhere. SIGKILL reaches stopped processes."""
    leader, follower, target = await leader_with_follower(pg)
    await renewed_then_left(pg, leader, target)
    frozen = leader.children() + [leader.postmaster_pid()]
    leader.freeze_all()
    started = time.monotonic()

    def all_gone() -> bool:
        return not any(pid and Path(f"/proc/{pid}").exists() and "zombie" not in
                       Path(f"/proc/{pid}/status").read_text().lower() for pid in frozen)

    # The agent's own bound is TTL + its 2 s query timeout + an interval; the slack above that is for a
    # loaded 2-core machine (the safety argument assumes the agent is scheduled, see docs/failover.md), and
    # the test's point is that the kill happens at all, and not early.
    await wait_for(all_gone, timeout=lease.TTL_SECONDS + REACTION + 10, interval=0.1,
                   what="the frozen postmaster and backends are killed")
    assert time.monotonic() - started >= lease.TTL_SECONDS - 1.5  # not before the lease could have run out
