"""The operator's observe -> decide -> act loop wired to loopback instances instead of pods.

Observation and SQL effects are the real code (health/probe.py, failover/act.py); only the Kubernetes side
(pod labels, pod deletion) is replaced by a record of what would have been done, since there is no cluster.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import psycopg
from archop.failover import decide as d
from archop.failover import runner
from archop.failover.act import Executor, LeaseSession, follower_conninfo
from archop.failover.lease import LeaseClock, Renewal
from archop.health.model import DbObservation, Instance, PodState
from archop.health.probe import Target, probe_all

from testsupport.postgres import PgInstance, clone_follower, init_leader


@dataclass
class Loopback:
    instances: dict[str, PgInstance]
    labels: dict[str, str] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    status: dict = field(default_factory=dict)
    notes: list[d.Note] = field(default_factory=list)
    # The operator's lease session, as the monitor keeps it (vouch renews through it).
    session: LeaseSession = field(default_factory=LeaseSession)
    lease: LeaseClock = field(default_factory=lambda: LeaseClock(started=time.time()))
    vouched: str | None = None

    async def vouch(self, name: str) -> bool:
        """monitor.py's vouch."""
        target = self.target(name)
        renewal = await self.session.renew(name, target) if target is not None else Renewal.FAILED
        if not self.lease.record(name, renewal, time.time()):
            return False
        self.vouched = name
        return True

    def target(self, name: str) -> Target | None:
        inst = self.instances.get(name)
        return Target(host="127.0.0.1", port=inst.port) if inst else None

    def upstream(self, follower: str, leader: str) -> str:
        return follower_conninfo("127.0.0.1", self.instances[leader].port, "postgres", follower, None)

    def executor(self) -> Executor:
        return Executor(
            target=self.target,
            upstream=self.upstream,
            set_label=lambda pod, role: self.labels.__setitem__(pod, role),
            delete_pod=self.deleted.append,
        )

    async def observe(self, gone: frozenset[str] = frozenset()) -> DbObservation:
        probes = await probe_all({n: self.target(n) for n in self.instances}, timeout=1.0)
        insts = {
            n: Instance(
                n, PodState(n, ip="127.0.0.1", role=self.labels.get(n), deleting=n in gone), probes[n]
            )
            for n in self.instances
        }
        obs = DbObservation(insts, desired=len(insts), hosts={n: "127.0.0.1" for n in insts})
        return await runner.with_lease_session(obs, self.session.established(), self.lease, self.vouch)

    async def failover(self, record: d.FailoverRecord, state: d.State, spec) -> str:
        """Run the phases with the operator's own runner (re-observing between phases); returns the new
        leader. The status it persists is kept in `self.status`."""
        async def observe(_previous: DbObservation, _skip: frozenset[str]) -> DbObservation:
            return await self.observe()

        async def persist(patch: dict) -> None:
            self.status.update(patch)

        fx = runner.Effects(observe=observe, persist=persist, executor=self.executor(),
                            emit=self.notes.append, lease=self.lease)
        result = await runner.run_failover(record, state, await self.observe(), spec, fx)
        assert result.outcome is d.Outcome.DONE, result.message
        return result.record.to

    async def steady(self, state: d.State, spec, memory: d.Memory | None = None) -> d.Step:
        step = d.decide(await self.observe(), state, spec, time.time(), memory or d.Memory())
        await self.executor().run_all(step.actions)
        return step


def sql(inst: PgInstance, query: str, dbname: str = "postgres", timeout_ms: int = 5000):
    with psycopg.connect(
        inst.dsn(dbname, options=f"'-c statement_timeout={timeout_ms}'"), autocommit=True
    ) as c:
        cur = c.execute(query)
        return cur.fetchall() if cur.description else []


def try_sql(inst: PgInstance, query: str, dbname: str = "postgres"):
    """sql() that answers None while the object is not there yet (replication in flight)."""
    try:
        return sql(inst, query, dbname)
    except psycopg.Error:
        return None


async def wait_for(pred, timeout: float = 20.0, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def streaming_from(leader: PgInstance, name: str) -> bool:
    try:
        rows = sql(leader, f"select state from pg_stat_replication where application_name = '{name}'")
    except psycopg.Error:
        return False
    return bool(rows) and rows[0][0] == "streaming"


def receiver_streams(follower: PgInstance) -> bool:
    """The follower's own view: its WAL receiver is streaming."""
    try:
        rows = sql(follower, "select status from pg_stat_wal_receiver")
    except psycopg.Error:
        return False
    return bool(rows) and rows[0][0] == "streaming"


async def kill_vouched_leader(lb: Loopback, name: str) -> None:
    """SIGKILL of a leader whose lease the operator renews (as it does every healthy leader's), then wait
    until no follower's WAL receiver streams any more: the evidence a killed postmaster leaves
    (decide.refusal_proves_down), waited for rather than assumed."""
    assert await lb.vouch(name)
    lb.instances[name].kill()
    others = [inst for n, inst in lb.instances.items() if n != name]
    await wait_for(lambda: not any(receiver_streams(inst) for inst in others),
                   what=f"no follower streams from the killed {name}")


async def three_streaming(pg) -> tuple[PgInstance, PgInstance, PgInstance, Loopback, d.State]:
    """db-0 leading, db-1 and db-2 streaming from it, wired to the loop with db-0 as current leader."""
    leader = pg.add(init_leader(pg.base, "db-0"))
    f1 = pg.add(clone_follower(leader, pg.base, "db-1"))
    f2 = pg.add(clone_follower(leader, pg.base, "db-2"))
    await wait_for(lambda: all(streaming_from(leader, f) for f in ("db-1", "db-2")), what="streaming")
    return leader, f1, f2, Loopback({"db-0": leader, "db-1": f1, "db-2": f2}), d.State(current_leader="db-0")
