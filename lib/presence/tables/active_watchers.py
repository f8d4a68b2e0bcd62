"""Questions about the active_watchers table that several services ask (I/O)."""

from __future__ import annotations

import asyncpg


async def watched(
    connection: asyncpg.Connection | asyncpg.Pool,
    table: str,
    domain: str,
    username: str,
    event: str,
) -> bool:
    """Whether any subscription not yet terminated watches `event` of the presentity:
    pending ones count (they are sent NOTIFYs without a body)."""
    return bool(
        await connection.fetchval(
            f"""SELECT EXISTS (SELECT 1 FROM {table}
                               WHERE to_domain = $1 AND to_user = $2 AND event = $3
                                 AND status <> 'terminated')""",
            domain,
            username,
            event,
        )
    )
