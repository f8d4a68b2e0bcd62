"""Deleting rows a bounded batch at a time (I/O): the cleaner's sweeps hold no lock and
no long transaction, whatever the backlog."""

from __future__ import annotations

import asyncpg


async def delete_some(
    connection: asyncpg.Connection | asyncpg.Pool,
    table: str,
    condition: str,
    bound: object,
    limit: int,
) -> int:
    """Delete up to `limit` rows of `table` where `condition` (SQL with $1 for `bound`)
    holds; how many went. By ctid: one index scan picks the batch, no ordering needed."""
    status = await connection.execute(
        f"""DELETE FROM {table} WHERE ctid = ANY(ARRAY(
                SELECT ctid FROM {table} WHERE {condition} LIMIT {int(limit)}))""",
        bound,
    )
    return int(status.split()[-1])
