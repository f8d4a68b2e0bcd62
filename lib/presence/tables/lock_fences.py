"""The lock_fences table: the fencing token of each Redis lock shard
(presence.runtime.locks), so that a holder whose lease ran out cannot write after the
next holder did. Its name is fixed (schema/0005_etag_grace_and_fences.sql)."""

from __future__ import annotations

import asyncpg

TABLE = "lock_fences"


async def raise_token(connection: asyncpg.Connection, lock: str, token: int) -> bool:
    """Raise the shard's token to `token`, locking its row until the transaction ends;
    False (and nothing changed) when a newer token is there."""
    accepted = await connection.fetchval(
        f"""INSERT INTO {TABLE} (lock, token) VALUES ($1, $2)
            ON CONFLICT (lock) DO UPDATE SET token = EXCLUDED.token
                WHERE {TABLE}.token <= EXCLUDED.token
            RETURNING token""",
        lock,
        token,
    )
    return accepted is not None
