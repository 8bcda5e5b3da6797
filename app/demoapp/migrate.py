"""Schema migration, safe when many pods start at once: one advisory lock, idempotent DDL."""

from __future__ import annotations

from importlib import resources

from psycopg import AsyncConnection

# Any constant shared by every pod: whoever holds it migrates, the others wait and then find nothing to do.
LOCK_ID = 0x64656D6F  # "demo"


def schema_sql() -> str:
    return resources.files("demoapp").joinpath("schema.sql").read_text()


async def migrate(conn: AsyncConnection) -> None:
    """Apply schema.sql on a read-write connection (autocommit off: all or nothing)."""
    async with conn.transaction():
        # xact lock: released by commit/rollback, and by the server if this pod dies mid-way.
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_ID,))
        await conn.execute(schema_sql().encode())
