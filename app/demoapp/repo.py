"""SQL for the social graph. Each function takes a connection; transactions are the caller's.

`follows` is the truth; `users.followers` (ids) and the two counts are its denormalised copy, changed in
the same transaction as the edge so they never disagree. The array holds the first LIST_LIMIT followers
only (in follow order), never more: a popular user's row stays small, and so does every follow's rewrite of
it; an unfollow refills it from `follows`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from demoapp.consistency import Lsn

LIST_LIMIT = 1000  # followers/following lists return at most this many ids (the counts are exact)
_USER = "id, name, follower_count, following_count, created_at"


class NotFound(Exception):
    def __init__(self, uid: int) -> None:
        super().__init__(f"user {uid} not found")
        self.uid = uid


class KeyReused(Exception):
    """An Idempotency-Key sent again with a different request."""


@dataclass(frozen=True)
class Position:
    in_recovery: bool  # a follower (a leader never is)
    lsn: Lsn  # the data read after it reflects every write whose X-Commit-LSN <= lsn


# Run in its own statement just BEFORE a read's statement(s): under READ COMMITTED each statement takes its
# snapshot when it starts, so the read sees everything up to this position.
#  - follower: pg_last_wal_replay_lsn(). Replaying a commit record makes it visible, then the position moves
#    past it.
#  - leader: pg_current_wal_lsn() - 1. A commit is flushed, and counted in pg_current_wal_lsn(), a moment
#    before it becomes visible (in synchronous mode: the whole wait for the standby), so a commit at or below
#    the current position may still be invisible. Its writer reads its token only once it is visible, so
#    after this, so that token is >= this position: one byte less leaves it out.
# (pg_current_wal_lsn() raises on a follower; CASE evaluates only the branch it picks.)
POSITION_SQL = (
    "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
    " ELSE pg_current_wal_lsn() - 1 END::text")

# A write's token, read on its connection right after COMMIT returned. With synchronous_commit at `local` or
# above (the default `on`; the operator never lowers it) COMMIT returns once the commit record is flushed, so
# the write position pg_current_wal_lsn() is already past it. With `off` the flush comes later, and only the
# insert position is surely past the record. Why not always the insert position: it also counts WAL that
# concurrent transactions inserted and nobody flushed yet, which no follower can have, so tokened reads
# would wait, or go to the leader, for nothing.
COMMIT_LSN_SQL = (
    "SELECT CASE WHEN current_setting('synchronous_commit') = 'off' THEN pg_current_wal_insert_lsn()"
    " ELSE pg_current_wal_lsn() END::text")


def position(row: tuple[Any, ...] | None) -> Position:
    """A POSITION_SQL row. A follower that has replayed nothing yet has no replay position: 0/0."""
    assert row is not None
    return Position(bool(row[0]), Lsn.parse(row[1]) if row[1] is not None else Lsn(0))


async def commit_lsn(conn: AsyncConnection[Any]) -> Lsn:
    row = await (await conn.execute(COMMIT_LSN_SQL)).fetchone()
    assert row is not None
    return Lsn.parse(row[0])


def _user(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"], "name": row["name"], "follower_count": row["follower_count"],
        "following_count": row["following_count"], "created_at": row["created_at"].isoformat(),
    }


async def get_user(conn: AsyncConnection[Any], uid: int) -> dict[str, Any] | None:
    cur = conn.cursor(row_factory=dict_row)
    row = await (await cur.execute(f"SELECT {_USER} FROM users WHERE id = %s", (uid,))).fetchone()
    return _user(row) if row else None


async def get_followers(conn: AsyncConnection[Any], uid: int) -> dict[str, Any] | None:
    """From the denormalised array: one row, no join."""
    cur = await conn.execute(
        "SELECT followers[1:%s], follower_count FROM users WHERE id = %s", (LIST_LIMIT, uid))
    row = await cur.fetchone()
    if row is None:
        return None
    followers = list(row[0] or [])
    return {"id": uid, "followers": followers, "count": row[1], "truncated": row[1] > len(followers)}


async def get_following(conn: AsyncConnection[Any], uid: int) -> dict[str, Any] | None:
    cur = await conn.execute("SELECT following_count FROM users WHERE id = %s", (uid,))
    row = await cur.fetchone()
    if row is None:
        return None
    cur = await conn.execute(
        "SELECT followee_id FROM follows WHERE follower_id = %s ORDER BY created_at, followee_id LIMIT %s",
        (uid, LIST_LIMIT))
    following = [r[0] for r in await cur.fetchall()]
    return {"id": uid, "following": following, "count": row[0], "truncated": row[0] > len(following)}


async def create_user(conn: AsyncConnection[Any], name: str) -> dict[str, Any]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(f"INSERT INTO users (name) VALUES (%s) RETURNING {_USER}", (name,))
    row = await cur.fetchone()
    assert row is not None
    return _user(row)


async def _lock_pair(conn: AsyncConnection[Any], uid: int, target: int) -> None:
    """Row-lock both users in id order (no deadlock between A->B and B->A), 404 if one is missing."""
    cur = await conn.execute(
        "SELECT id FROM users WHERE id = ANY(%s) ORDER BY id FOR UPDATE", ([uid, target],))
    found = {r[0] for r in await cur.fetchall()}
    for u in (uid, target):
        if u not in found:
            raise NotFound(u)


async def follow(conn: AsyncConnection[Any], uid: int, target: int) -> dict[str, Any]:
    await _lock_pair(conn, uid, target)
    cur = await conn.execute(
        "INSERT INTO follows (follower_id, followee_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (uid, target))
    changed = cur.rowcount == 1
    if changed:
        await conn.execute(
            "UPDATE users SET followers = CASE WHEN cardinality(followers) < %s"
            " THEN array_append(followers, %s) ELSE followers END, follower_count = follower_count + 1"
            " WHERE id = %s", (LIST_LIMIT, uid, target))
        await conn.execute("UPDATE users SET following_count = following_count + 1 WHERE id = %s", (uid,))
    return await _edge_result(conn, uid, target, following=True, changed=changed)


async def unfollow(conn: AsyncConnection[Any], uid: int, target: int) -> dict[str, Any]:
    await _lock_pair(conn, uid, target)
    cur = await conn.execute("DELETE FROM follows WHERE follower_id = %s AND followee_id = %s", (uid, target))
    changed = cur.rowcount == 1
    if changed:
        cur = await conn.execute(
            "UPDATE users SET followers = array_remove(followers, %s), follower_count = follower_count - 1"
            " WHERE id = %s RETURNING cardinality(followers), follower_count", (uid, target))
        row = await cur.fetchone()
        assert row is not None
        held, count = row
        if held < min(count, LIST_LIMIT):
            # The array was full and lost one: take the next follower(s) in follow order from the truth.
            await conn.execute(
                "UPDATE users u SET followers = u.followers || ARRAY("
                " SELECT f.follower_id FROM follows f WHERE f.followee_id = u.id"
                " AND f.follower_id <> ALL (u.followers) ORDER BY f.created_at, f.follower_id LIMIT %s)"
                " WHERE u.id = %s", (min(count, LIST_LIMIT) - held, target))
        await conn.execute("UPDATE users SET following_count = following_count - 1 WHERE id = %s", (uid,))
    return await _edge_result(conn, uid, target, following=False, changed=changed)


async def _edge_result(conn: AsyncConnection[Any], uid: int, target: int, *, following: bool,
                       changed: bool) -> dict[str, Any]:
    """The fresh state of both users, read inside the writing transaction."""
    user, other = await get_user(conn, uid), await get_user(conn, target)
    return {"user": user, "target": other, "following": following, "changed": changed}


# --- idempotency keys -------------------------------------------------------------------------------
def request_hash(method: str, path: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


async def lock_key(conn: AsyncConnection[Any], key: str) -> None:
    """Serialise concurrent requests with one key until the first one's transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))


async def stored_result(conn: AsyncConnection[Any], key: str, req_hash: str) -> tuple[int, Any] | None:
    cur = await conn.execute("SELECT request_hash, status, body FROM idempotency_keys WHERE key = %s", (key,))
    row = await cur.fetchone()
    if row is None:
        return None
    if row[0] != req_hash:
        raise KeyReused(key)
    return int(row[1]), row[2]


async def store_result(conn: AsyncConnection[Any], key: str, req_hash: str, status: int, body: Any) -> None:
    await conn.execute(
        "INSERT INTO idempotency_keys (key, request_hash, status, body) VALUES (%s, %s, %s, %s)",
        (key, req_hash, status, Jsonb(body)))


async def expire_keys(conn: AsyncConnection[Any], hours: int = 24) -> int:
    cur = await conn.execute(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => %s)", (hours,))
    return cur.rowcount
