"""Effects of the failover decisions: pod labels, pg_promote, primary_conninfo, synchronous_standby_names,
fencing, pod deletion. Every function is idempotent, so a step interrupted by an operator restart can simply
run again. The SQL helpers take a Target and are used as-is by the integration tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql

from archop import apply, names
from archop.build.database import script
from archop.failover import decide as d
from archop.failover import lease
from archop.health.probe import Target, Verify, bounded, connect

log = logging.getLogger(__name__)

# Client sessions to end when fencing: everything but replication and our own connection.
_TERMINATE = """
select count(pg_terminate_backend(pid)) from pg_stat_activity
 where backend_type = 'client backend' and pid <> pg_backend_pid()
"""


Stmt = sql.SQL | sql.Composed | str


async def _exec(target: Target, *statements: Stmt, timeout: float = 3.0,
                statement_timeout_ms: int | None = 3000) -> list[Any]:
    """Run statements in autocommit (ALTER SYSTEM refuses transactions); first column of each result."""
    out: list[Any] = []
    conn = await connect(target, timeout, statement_timeout_ms)
    async with conn:
        for stmt in statements:
            cur = await conn.execute(stmt)
            row = await cur.fetchone() if cur.description else None
            out.append(row[0] if row else None)
    return out


def _alter(setting: str, value: str | None) -> sql.Composed:
    if value is None:
        return sql.SQL("alter system reset {}").format(sql.Identifier(setting))
    return sql.SQL("alter system set {} = {}").format(sql.Identifier(setting), sql.Literal(value))


async def fence(target: Target, checkpoint: bool = False) -> int:
    """Read-only from now on (persisted, so it survives a restart) and every client session ended.
    Returns how many sessions were terminated."""
    stmts: list[Stmt] = ["checkpoint"] if checkpoint else []
    stmts += [_alter("default_transaction_read_only", "on"), "select pg_reload_conf()", _TERMINATE]
    return int((await _exec(target, *stmts, timeout=3.0, statement_timeout_ms=30000))[-1] or 0)


# In PGDATA, so pg_rewind (which drops files the source lacks) and a fresh base backup clear it; start.sh
# never starts an instance carrying it as a primary. scripts/stop.sql writes it.
FENCE_MARKER = "archop-fenced"
# Also in PGDATA: start.sh wipes PGDATA and clones the primary afresh (stop.sql writes it for rebuild()).
REBUILD_MARKER = "archop-rebuild"
STOP_SQL = script("stop.sql")


class NotLeading(RuntimeError):
    """This operator replica is not sure it holds the operator Lease."""


class NotThatInstance(RuntimeError):
    """The address answers, but as another instance: never stop it."""


class NothingListens(RuntimeError):
    """The stop's first connection was refused: the postmaster is gone, or an enforcer rejects the operator
    (decide.refusal_proves_down tells which, from what the followers say). Not a stop the operator did."""


async def stop(target: Target, clean: bool = False, timeout: float = 15.0, name: str | None = None,
               connect_timeout: float = 3.0) -> None:
    """The hard fence: leave the fence marker and shut the postmaster down; returns once it no longer takes
    connections; NothingListens when the first connection is refused. Through COPY TO PROGRAM (superuser), so
    it needs nothing but SQL access: the operator has no exec into pods. clean: fast shutdown (SIGINT), whose
    WAL senders first send connected followers all the WAL; otherwise immediate (SIGQUIT). name: the
    instance (cluster_name = pod name) expected at the address."""
    try:
        cluster = (await _exec(target, "select current_setting('cluster_name')", timeout=connect_timeout))[0]
    except psycopg.OperationalError as exc:
        if "Connection refused" in str(exc):
            raise NothingListens(f"connection to {target.host} refused") from exc
        raise
    if name is not None and cluster != name:
        raise NotThatInstance(f"{target.host} answers as {cluster!r}, not {name!r}")
    signal = "INT" if clean else "QUIT"
    with contextlib.suppress(psycopg.OperationalError):  # the shutdown it starts may end our own session
        await _exec(target, sql.SQL("set archop.stop_signal = {}").format(sql.Literal(signal)),
                    "set archop.stop_marker = on", STOP_SQL)
    # A refused or failed connection means it is down; a time-out proves nothing (it may be frozen), so
    # that keeps polling until the deadline and then fails the phase, which runs again next tick.
    deadline = time.monotonic() + timeout
    while True:
        try:
            still = await _exec(target, "select not pg_is_in_recovery()", timeout=1.0,
                                statement_timeout_ms=1000)
        except TimeoutError:
            still = [True]
        except psycopg.OperationalError as exc:
            # A shutdown in progress refuses new sessions but its WAL senders may still be handing followers
            # the last WAL: a clean stop waits for the postmaster to be gone.
            if not (clean and "shutting down" in str(exc)):
                return
            still = [True]
        if not still[0]:
            return  # a standby cannot commit either
        if time.monotonic() > deadline:
            raise TimeoutError(f"postgres at {target.host} still runs {timeout:.0f}s after the stop")
        await asyncio.sleep(0.1)


async def set_lease_members(target: Target, members: tuple[str, ...]) -> None:
    # ALTER SYSTEM accepts a custom setting only once it exists: a SET in this session declares it, whatever
    # server configuration (the official image's too) the instance started with.
    name = sql.SQL(".").join(sql.Identifier(p) for p in lease.MEMBERS_SETTING.split(".", 1))
    value = sql.Literal(",".join(members))
    await _exec(target, sql.SQL("set {} = ''").format(name),
                sql.SQL("alter system set {} = {}").format(name, value), "select pg_reload_conf()")


async def unfence(target: Target) -> None:
    await _exec(target, _alter("default_transaction_read_only", None), "select pg_reload_conf()")


async def set_primary_conninfo(target: Target, conninfo: str) -> None:
    """Re-point (or, with '', detach) a follower without a restart; recovery_target_timeline is 'latest'."""
    await _exec(target, _alter("primary_conninfo", conninfo), "select pg_reload_conf()")


# How long a detach waits for the WAL receiver to exit (the reload is asynchronous: the startup process
# reads the new setting and then shuts the receiver down, well under this even on a loaded machine).
DETACH_WAIT_SECONDS = 3.0


async def detach(target: Target) -> None:
    """No upstream any more, and answer only once the WAL receiver is gone: from then on this follower sends
    no reply to the old leader, which is what ends the old leader's failsafe (failover/lease.py)."""
    conn = await connect(target, 3.0, 3000)
    async with conn:
        await conn.execute(_alter("primary_conninfo", ""))
        await conn.execute("select pg_reload_conf()")
        deadline = time.monotonic() + DETACH_WAIT_SECONDS
        while True:
            cur = await conn.execute("select count(*) from pg_stat_wal_receiver")
            row = await cur.fetchone()
            if not row or not row[0]:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the WAL receiver still runs {DETACH_WAIT_SECONDS:.0f}s after the detach")
            await asyncio.sleep(0.05)


async def repoint(target: Target, conninfo: str, slot: str | None) -> None:
    """primary_conninfo and primary_slot_name in one reload (a change of either restarts the WAL receiver).
    slot None: stream without a slot."""
    await _exec(target, _alter("primary_conninfo", conninfo), _alter("primary_slot_name", slot),
                "select pg_reload_conf()")


def _names(slots: tuple[str, ...]) -> sql.Composed:
    return sql.SQL("{}::text[]").format(sql.Literal(list(slots)))


async def create_slots(target: Target, slots: tuple[str, ...]) -> int:
    """Make sure each physical slot exists and holds WAL: a lost one nobody streams through is dropped and
    created again, a missing one is created reserving WAL at once (immediately_reserve), so it holds the WAL
    from now on even before its follower connects. Returns how many were created."""
    done = await _exec(
        target,
        sql.SQL("select count(pg_drop_replication_slot(slot_name)) from pg_replication_slots "
                "where slot_name = any({}) and wal_status = 'lost' and not active").format(_names(slots)),
        sql.SQL("select count(pg_create_physical_replication_slot(n, true)) from unnest({}) n "
                "where n not in (select slot_name from pg_replication_slots)").format(_names(slots)))
    return int(done[-1] or 0)


async def drop_slots(target: Target, slots: tuple[str, ...]) -> int:
    """Drop these slots unless a WAL sender uses them (that one goes on; the next tick tries again)."""
    done = await _exec(target, sql.SQL(
        "select count(pg_drop_replication_slot(slot_name)) from pg_replication_slots "
        "where slot_name = any({}) and not active").format(_names(slots)))
    return int(done[0] or 0)


async def set_slot_wal_keep(target: Target, megabytes: int) -> None:
    await _exec(target, _alter("max_slot_wal_keep_size", f"{int(megabytes)}MB"), "select pg_reload_conf()")


async def rebuild(target: Target, name: str | None = None) -> None:
    """Stop a follower with the rebuild marker (fast shutdown); its start script then wipes PGDATA and takes a
    fresh base backup from the primary on rw. Refuses anything but a standby that answers as `name`: a
    primary is never rebuilt."""
    cluster, in_recovery = await _exec(target, "select current_setting('cluster_name')",
                                       "select pg_is_in_recovery()")
    if name is not None and cluster != name:
        raise NotThatInstance(f"{target.host} answers as {cluster!r}, not {name!r}")
    if not in_recovery:
        raise RuntimeError(f"{cluster} is a primary; a primary is never rebuilt")
    with contextlib.suppress(psycopg.OperationalError):  # the shutdown ends our own session
        await _exec(target, "set archop.stop_signal = 'INT'", "set archop.stop_marker = 'rebuild'", STOP_SQL)


async def set_sync_standbys(target: Target, value: str) -> None:
    await _exec(target, _alter("synchronous_standby_names", value), "select pg_reload_conf()")


# Postgres names a promotion's timeline after the newest timeline history in its own pg_wal. A follower that
# never saw another leader's timeline would reuse its ID, so the operator first leaves a placeholder history
# for every timeline up to the newest one used in the tier. Its one entry forks at 0/0, before anything this
# follower replayed, so recovery (recovery_target_timeline = latest) never switches to it; only its
# existence counts. Spaces separate the fields: Postgres reads them with sscanf, and COPY would escape tabs.
RESERVE_TIMELINES_SQL = """
do $$
declare
  t int;
  f text;
begin
  if not pg_is_in_recovery() then
    return;
  end if;
  for t in 2..{floor} loop
    f := current_setting('data_directory') || '/pg_wal/' || lpad(upper(to_hex(t)), 8, '0') || '.history';
    if pg_stat_file(f, true) is null then
      execute format('copy (select %L) to %L',
                     (t - 1)::text || ' 0/0 archop: timeline ' || t || ' was used by another leader', f);
    end if;
  end loop;
end $$
"""


async def promote(target: Target, wait_seconds: int = 30, timeline_floor: int = 0) -> bool:
    """pg_promote(wait => true) onto a timeline newer than `timeline_floor`; a no-op when the instance is
    already a primary."""
    if timeline_floor >= 2:
        await _exec(target, RESERVE_TIMELINES_SQL.format(floor=int(timeline_floor)), timeout=3.0)
    res = await _exec(
        target,
        f"select case when pg_is_in_recovery() then pg_promote(true, {int(wait_seconds)}) else true end",
        timeout=3.0, statement_timeout_ms=(wait_seconds + 5) * 1000)
    if not res[0]:
        raise RuntimeError(f"pg_promote did not finish within {wait_seconds}s")
    # Until a checkpoint, pg_control still names the old timeline and pg_rewind of the old leader against
    # this server says "no rewind required" and leaves it diverged.
    await _exec(target, "checkpoint", timeout=3.0, statement_timeout_ms=60000)
    return True


class NotPrimary(RuntimeError):
    """The instance is in recovery: a role's password is set on the primary only (followers replay it)."""


class RoleRefused(RuntimeError):
    """The role does not exist, or is one whose password the operator must never set (a superuser, the
    replication user): the name comes from a Secret the tenant may edit."""


# What the role may be: an existing login role without superuser or replication rights.
_ROLE_SQL = "select pg_is_in_recovery(), (select rolsuper or rolreplication from pg_roles where rolname = %s)"


def scram_verifier(pgconn: Any, role: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier of `password` for `role`, computed by libpq on this side (with a fresh
    random salt): what pg_authid stores. The server never sees the password."""
    return bytes(pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")).decode()


def password_statement(role: str, verifier: str) -> sql.Composed:
    """ALTER ROLE with a verifier: the statement (which log_statement, pg_stat_activity or an error message
    may show) holds the verifier, never the password. Quoted by psycopg.sql: ALTER ROLE takes no bound
    parameters."""
    return sql.SQL("alter role {} password {}").format(sql.Identifier(role), sql.Literal(verifier))


async def set_role_password(target: Target, role: str, password: str, timeout: float = 3.0) -> None:
    """Give login role `role` the password `password` on the primary at `target`. Idempotent: setting the
    password it has already changes nothing for its clients. Sessions logged in before keep running (a
    password is checked only at login). Raises NotPrimary or RoleRefused before anything is changed."""
    conn = await connect(target, timeout, int(timeout * 1000))
    async with conn:
        cur = await conn.execute(_ROLE_SQL, (role,))
        row = await cur.fetchone()
        in_recovery, privileged = row if row is not None else (None, None)
        if in_recovery:
            raise NotPrimary(f"{target.host} is in recovery")
        if privileged is None:
            raise RoleRefused(f"role {role!r} does not exist")
        if privileged:
            raise RoleRefused(f"role {role!r} is a superuser or replication role")
        await conn.execute(password_statement(role, scram_verifier(conn.pgconn, role, password)))


def follower_conninfo(host: str, port: int, user: str, application_name: str, passfile: str | None,
                      hostaddr: str | None = None, sslrootcert: str | None = None) -> str:
    """primary_conninfo for a follower. The password stays in the passfile the start script writes.
    hostaddr (the leader's pod IP) skips DNS, which serves a restarted pod's old IP for a while; host stays
    for the passfile, for reading, and as the name the leader's certificate must carry: with `sslrootcert`
    (the CA file in the follower's pod) the follower streams only from a server it verified."""
    # A vanished leader's IP is black-holed. The WAL receiver connects asynchronously and ignores
    # connect_timeout; tcp_user_timeout bounds the SYN retries too, so it gives up and resolves the name
    # again instead of hanging in connect() for minutes (start.sh writes the same).
    parts = [f"host={host}", *([f"hostaddr={hostaddr}"] if hostaddr else []), f"port={port}", f"user={user}",
             f"application_name={application_name}", "connect_timeout=2", "tcp_user_timeout=4000"]
    if passfile:
        parts.append(f"passfile={passfile}")
    if sslrootcert:
        parts += ["sslmode=verify-full", f"sslrootcert={sslrootcert}"]
    return " ".join(parts)


class LeaseSession:
    """The operator's side of the leader lease (failover/lease.py): one session to the leader that runs a
    statement every monitor tick; the agent in the leader's pod reads, on the leader's own clock, how long
    ago the last one ended."""

    def __init__(self) -> None:
        self._conn: psycopg.AsyncConnection | None = None
        self._key: tuple[str, str, Verify | None] | None = None

    def established(self) -> str | None:
        """The pod this session holds an open connection to, if any."""
        if self._conn is None or self._conn.closed or self._key is None:
            return None
        return self._key[0]

    async def renew(self, pod: str, target: Target) -> lease.Renewal:
        key = (pod, target.host, target.verify)
        if key != self._key:
            await self.close()
            self._key = key
        established = self._conn is not None and not self._conn.closed
        try:
            if not established:
                self._conn = await connect(replace(target, application_name=lease.SESSION), 1.0, 1000)
            assert self._conn is not None
            await bounded(self._conn, self._conn.execute("select 1"), 1.5)
            return lease.Renewal.RENEWED
        except (OSError, psycopg.Error, TimeoutError) as exc:
            log.info("leader lease renewal on %s failed: %s", pod, type(exc).__name__)
            await self.close()
            return lease.Renewal.BROKEN if established else lease.Renewal.FAILED

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


@dataclass
class Executor:
    """Performs decide.py's actions for one Architecture.

    target(pod) says how the operator reaches a pod's Postgres; upstream(follower, leader) is the
    primary_conninfo a follower gets; set_label / delete_pod are the Kubernetes effects (blocking calls,
    run in a thread).
    """

    target: Callable[[str], Target | None]
    upstream: Callable[[str, str], str]
    set_label: Callable[[str, str], None]
    delete_pod: Callable[[str], None]
    # Checked before every action: an operator replica that may have lost its Lease (paused past the renew
    # deadline) must not fence, promote or relabel anything another replica may be deciding about.
    may_act: Callable[[], bool] = lambda: True
    # Vouches for a pod's leader lease (the monitor's LeaseSession); False when it could not.
    renew_lease: Callable[[str], Awaitable[bool]] | None = None
    # How to reach pod's instance at an explicit address (same credentials and verification as target()).
    target_at: Callable[[str, str], Target | None] = lambda pod, address: None

    async def run(self, action: d.Action) -> None:
        if not self.may_act():
            raise NotLeading(f"not sure to hold the operator Lease; {type(action).__name__} not run")
        match action:
            case d.SetRole(pod=pod, role=role):
                await asyncio.to_thread(self.set_label, pod, role)
            case d.DeletePod(pod=pod):
                await asyncio.to_thread(self.delete_pod, pod)
            case d.Fence(pod=pod, checkpoint=cp):
                n = await fence(self._t(pod), checkpoint=cp)
                log.info("fenced %s (%d sessions ended)", pod, n)
            case d.Stop(pod=pod, clean=clean, address=address, required=required):
                # The old process's address, when its pod is gone or replaced (the pod may have no IP now).
                target = self._t(pod) if address is None else self._t(pod, address)
                await stop(target, clean=clean, name=pod, connect_timeout=3.0 if required else 1.0)
                log.warning("stopped %s (hard fence, %s shutdown)", pod, "fast" if clean else "immediate")
            case d.SetLeaseMembers(pod=pod, members=members):
                await set_lease_members(self._t(pod), members)
            case d.RenewLease(pod=pod):
                if self.renew_lease is not None and not await self.renew_lease(pod):
                    raise RuntimeError(f"could not renew {pod}'s leader lease")
            case d.Unfence(pod=pod):
                await unfence(self._t(pod))
            case d.Detach(pod=pod):
                await detach(self._t(pod))
            case d.Promote(pod=pod, timeline_floor=floor):
                await promote(self._t(pod), timeline_floor=floor)
            case d.Repoint(pod=pod, leader=leader, slot=slot):
                await repoint(self._t(pod), self.upstream(pod, leader), slot)
            case d.CreateSlots(pod=pod, slots=slots):
                if n := await create_slots(self._t(pod), slots):
                    log.info("created %d replication slot(s) on %s", n, pod)
            case d.DropSlots(pod=pod, slots=slots):
                if n := await drop_slots(self._t(pod), slots):
                    log.info("dropped %d replication slot(s) on %s", n, pod)
            case d.SetSlotWalKeep(pod=pod, megabytes=mb):
                await set_slot_wal_keep(self._t(pod), mb)
            case d.Rebuild(pod=pod):
                await rebuild(self._t(pod), name=pod)
                log.warning("stopped %s with the rebuild marker (fresh base backup)", pod)
            case d.SetSyncStandbys(pod=pod, value=value):
                await set_sync_standbys(self._t(pod), value)

    async def run_all(self, actions: tuple[d.Action, ...], best_effort: tuple[type, ...] = ()) -> list[str]:
        """Run in order. Failures of `best_effort` action types (and of a Stop that is only a try) are
        collected (e.g. fencing an old leader that does not answer); any other failure stops and raises, so
        the phase is retried."""
        return [f"{type(a).__name__}({getattr(a, 'pod', '')}): {type(e).__name__}"
                for a, e in await self.run_each(actions, best_effort)]

    async def run_each(
        self, actions: tuple[d.Action, ...], best_effort: tuple[type, ...] = (),
        done: Callable[[d.Action], None] = lambda action: None,
    ) -> list[tuple[d.Action, Exception]]:
        """run_all, answering which actions failed and how; done(action) is called as each one succeeds."""
        failed: list[tuple[d.Action, Exception]] = []
        for a in actions:
            try:
                await self.run(a)
            except Exception as exc:
                optional = isinstance(a, best_effort) or (isinstance(a, d.Stop) and not a.required)
                if isinstance(exc, NotLeading) or not optional:
                    raise
                failed.append((a, exc))
            else:
                done(a)
        return failed

    def _t(self, pod: str, address: str | None = None) -> Target:
        t = self.target(pod) if address is None else self.target_at(pod, address)
        if t is None:
            raise LookupError(f"pod {pod} has no address")
        return t


def kube_effects(api: Any, namespace: str) -> tuple[Callable[[str, str], None], Callable[[str], None]]:
    """The label and delete effects against the cluster."""

    def set_label(pod: str, role: str) -> None:
        try:
            apply.patch_pod_labels(api, namespace, pod, {names.L_ROLE: role})
        except Exception as exc:  # a pod that is gone needs no label
            if "HTTP 404" in str(exc):  # apply maps API errors to kopf.TemporaryError("... HTTP <code>: ...")
                return
            raise

    def delete_pod(pod: str) -> None:
        apply.delete_pod(api, namespace, pod)  # a pod that is gone already is fine

    return set_label, delete_pod
