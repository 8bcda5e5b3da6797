"""SQL probe of one Postgres instance: role, timeline, LSNs, WAL receiver, replication rows, fence state,
server version.

Short connect and statement timeouts: a frozen or partitioned instance must cost the tick about a second,
never more. Errors are reduced to their class and first line (they never contain the password).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from archop.health.model import Probe, ReplicaRow, SlotRow, parse_lsn

_STATE_SQL = """
select pg_is_in_recovery(),
       case when pg_is_in_recovery() then null else pg_current_wal_lsn()::text end,
       pg_last_wal_receive_lsn()::text,
       pg_last_wal_replay_lsn()::text,
       case when pg_is_in_recovery() then null
            else ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int end,
       (select timeline_id from pg_control_checkpoint()),
       (select max(('x' || substr(name, 1, 8))::bit(32)::int) from pg_ls_waldir()
         where name ~ '^[0-9A-F]{8}[.]history$'),
       current_setting('default_transaction_read_only'),
       current_setting('synchronous_standby_names'),
       current_setting('primary_conninfo'),
       pg_read_file('archop-rejoin', 0, 200, true),
       current_setting('archop.followers', true),
       current_setting('primary_slot_name'),
       (select setting::int from pg_settings where name = 'max_slot_wal_keep_size'),
       case when pg_is_in_recovery() then null else
         (select min(('x' || lpad(substr(name, 9, 8), 16, '0'))::bit(64)::bigint * 4294967296
                     + ('x' || lpad(substr(name, 17, 8), 16, '0'))::bit(64)::bigint
                       * (select setting::bigint from pg_settings where name = 'wal_segment_size'))
            from pg_ls_waldir() where name ~ '^[0-9A-F]{24}$') end,
       current_setting('server_version_num')::int
"""
# Segment file names sort by timeline first, so the oldest WAL is the smallest LSN over all of them.
_SLOTS_SQL = """
select slot_name, active, coalesce(wal_status, '') from pg_replication_slots where slot_type = 'physical'
"""
_RECEIVER_SQL = """
select status, received_tli, extract(epoch from (clock_timestamp() - last_msg_receipt_time))::float8
  from pg_stat_wal_receiver
"""
# The startup process waits for WAL (from a stream, or after every source came up empty) only once it has
# replayed everything it has.
_SETTLED_SQL = """
select exists (select 1 from pg_stat_activity
                where backend_type = 'startup'
                  and wait_event in ('RecoveryWalStream', 'RecoveryRetrieveRetryInterval'))
"""
_REPLICATION_SQL = """
select application_name, state, coalesce(sync_state, ''), flush_lsn::text, replay_lsn::text,
       extract(epoch from (clock_timestamp() - reply_time))::float8
  from pg_stat_replication
"""


@dataclass(frozen=True)
class Verify:
    """Whom the server must prove to be: a certificate for `server_name` signed by the CA in `ca_file`."""

    server_name: str
    ca_file: str


@dataclass(frozen=True)
class Target:
    """Where and as whom to connect (the superuser; pod IP in the cluster, 127.0.0.1 in tests).

    With `verify` (always, in the cluster) the connection goes to the address `host` over TLS, and only to a
    server whose certificate the CA signed for verify.server_name (libpq's sslmode=verify-full, the name in
    `host` and the address in `hostaddr`): anything else fails like an unreachable server, never a fallback
    to plain TCP. Without it (loopback tests with trust) libpq's defaults apply.

    Targets end up in log lines, exceptions and task reprs: the password is left out of repr() and str().
    """

    host: str
    port: int = 5432
    user: str = "postgres"
    password: str | None = field(default=None, repr=False)
    dbname: str = "postgres"
    application_name: str = "archop-operator"
    verify: Verify | None = None

    def kwargs(self, timeout: float, statement_timeout_ms: int | None) -> dict[str, Any]:
        kw: dict[str, Any] = {"host": self.host, "port": self.port, "user": self.user, "dbname": self.dbname,
                              "connect_timeout": max(1, int(timeout + 0.999)), "autocommit": True,
                              "application_name": self.application_name}
        if self.verify is not None:
            kw.update(host=self.verify.server_name, hostaddr=self.host, sslmode="verify-full",
                      sslrootcert=self.verify.ca_file)
        if self.password:
            kw["password"] = self.password
        if statement_timeout_ms:
            kw["options"] = f"-c statement_timeout={statement_timeout_ms}"
        return kw


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]


async def connect(target: Target, timeout: float = 1.0,
                  statement_timeout_ms: int | None = 1000) -> psycopg.AsyncConnection:
    # wait_for as well: libpq rounds connect_timeout up to whole seconds (and at least 2 in places).
    return await asyncio.wait_for(
        psycopg.AsyncConnection.connect(**target.kwargs(timeout, statement_timeout_ms)), timeout)


T = TypeVar("T")


async def bounded(conn: psycopg.AsyncConnection, work: Awaitable[T], timeout: float) -> T:
    """Await `work` (a query on `conn`) for at most `timeout` seconds. On expiry the connection is closed,
    not cancelled: psycopg answers a cancelled query by sending the server a cancel request and waiting up
    to 5 s for it and 5 s more for the query to end, which a partitioned or frozen server never does, and a
    monitor tick or a lease renewal stuck for 10 s delays a failover by as much."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if task in done:
        return task.result()
    conn.pgconn.finish()  # the socket is gone: psycopg sees no active query left to cancel
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise TimeoutError(f"no answer within {timeout:g}s; connection closed")


async def probe(target: Target, timeout: float = 1.0) -> Probe:
    try:
        conn = await connect(target, timeout)
    except (OSError, psycopg.Error, TimeoutError) as exc:
        return Probe(reachable=False, error=short_error(exc), refused="Connection refused" in str(exc))
    try:
        async with conn:
            return await bounded(conn, _query(conn), timeout + 1.0)
    except (OSError, psycopg.Error, TimeoutError) as exc:
        return Probe(reachable=False, error=short_error(exc))


async def _query(conn: psycopg.AsyncConnection) -> Probe:
    cur = await conn.execute(_STATE_SQL)
    row = await cur.fetchone()
    assert row is not None
    (in_rec, cur_lsn, recv, replay, wal_tli, ckpt_tli, history_tli, read_only, sync_names, conninfo, marker,
     lease, slot_name, slot_keep, oldest_wal, version_num) = row
    status = None
    msg_age = None
    recv_tli = None
    if in_rec:
        cur = await conn.execute(_RECEIVER_SQL)
        r = await cur.fetchone()
        if r is not None:
            status, recv_tli, msg_age = r
        cur = await conn.execute(_SETTLED_SQL)
        settled_row = await cur.fetchone()
        settled = bool(settled_row[0]) if settled_row else None
    replicas: tuple[ReplicaRow, ...] = ()
    if not in_rec:
        settled = None
        cur = await conn.execute(_REPLICATION_SQL)
        replicas = tuple(
            ReplicaRow(name=a or "", state=s or "", sync_state=ss or "", flush_lsn=parse_lsn(f),
                       replay_lsn=parse_lsn(rp), reply_age=age)
            for a, s, ss, f, rp, age in await cur.fetchall())
    cur = await conn.execute(_SLOTS_SQL)
    slots = tuple(SlotRow(name=n, active=bool(a), wal_status=w or "") for n, a, w in await cur.fetchall())
    host = hostaddr = None
    if in_rec:
        try:
            parsed = conninfo_to_dict(conninfo or "")
        except psycopg.ProgrammingError:
            parsed = {}
        host, hostaddr = str(parsed.get("host", "")), str(parsed.get("hostaddr", "")) or None
    # A follower's timeline is that of the WAL it received: the receiver says so while it runs. Once it has
    # stopped (its leader is gone: exactly when candidates are compared) the last checkpoint's timeline may
    # be older than the WAL it holds (a follower that streamed across a promotion makes no checkpoint of its
    # own), so the newest timeline history it fetched counts too: the receiver fetches a timeline's history
    # before streaming it.
    timeline = wal_tli if not in_rec else (recv_tli or max(history_tli or 0, ckpt_tli or 0) or None)
    return Probe(
        reachable=True, in_recovery=bool(in_rec), timeline=timeline, current_lsn=parse_lsn(cur_lsn),
        received_lsn=parse_lsn(recv), replay_lsn=parse_lsn(replay), receiver_status=status,
        receiver_msg_age=msg_age, replay_settled=settled, primary_host=host, primary_hostaddr=hostaddr,
        read_only=read_only == "on",
        sync_standby_names=sync_names or "", replicas=replicas, rejoin_marker=(marker or "").strip() or None,
        lease_members=parse_members(lease), slots=slots, primary_slot_name=slot_name or None,
        oldest_wal_lsn=int(oldest_wal) if oldest_wal is not None else None, slot_wal_keep_mb=slot_keep,
        server_version_num=version_num,
    )


def parse_members(text: str | None) -> tuple[str, ...] | None:
    """archop.followers: 'a,b' -> ('a', 'b'); '' -> () (no follower); unset -> None."""
    if text is None:
        return None
    return tuple(sorted(m.strip() for m in text.split(",") if m.strip()))


async def probe_all(targets: dict[str, Target | None], timeout: float = 1.0) -> dict[str, Probe]:
    """Probe every instance concurrently; a pod without an address is unreachable without trying."""
    names = list(targets)

    async def one(n: str) -> Probe:
        t = targets[n]
        return await probe(t, timeout) if t is not None else Probe(reachable=False, error="no pod IP")

    results = await asyncio.gather(*(one(n) for n in names))
    return dict(zip(names, results, strict=True))
