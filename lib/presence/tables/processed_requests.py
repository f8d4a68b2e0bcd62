"""The processed_requests table: the outcome of each bus request the store applied
(its reply and the events it emitted, as JSON), recorded in the transaction of its
effect, so that a redelivered request is answered from here instead of applied
twice. Its name is fixed (schema/0002_processed_requests.sql)."""

from __future__ import annotations

import asyncpg

from presence.tables.batches import delete_some

TABLE = "processed_requests"


async def outcome_of(connection: asyncpg.Connection, request_id: str) -> tuple[str, str] | None:
    """The recorded (reply, notices) JSON texts of a request; None when not recorded."""
    row = await connection.fetchrow(
        f"SELECT reply, notices FROM {TABLE} WHERE request_id = $1", request_id
    )
    return None if row is None else (row["reply"], row["notices"])


async def record(
    connection: asyncpg.Connection, request_id: str, reply: str, notices: str, created_at: int
) -> None:
    """Record a request's outcome (reply and notices as JSON texts)."""
    await connection.execute(
        f"""INSERT INTO {TABLE} (request_id, reply, notices, created_at)
            VALUES ($1, $2, $3, $4)""",
        request_id,
        reply,
        notices,
        created_at,
    )


async def record_unless_recorded(
    connection: asyncpg.Connection, request_id: str, reply: str, created_at: int
) -> None:
    """Record a reply without notices, unless the request has an outcome already."""
    await connection.execute(
        f"""INSERT INTO {TABLE} (request_id, reply, notices, created_at)
            VALUES ($1, $2, '[]', $3) ON CONFLICT (request_id) DO NOTHING""",
        request_id,
        reply,
        created_at,
    )


async def delete_older(
    connection: asyncpg.Connection | asyncpg.Pool, oldest_kept: int, limit: int
) -> int:
    """Delete up to `limit` outcomes recorded at or before `oldest_kept`; how many went."""
    return await delete_some(connection, TABLE, "created_at <= $1", oldest_kept, limit)
