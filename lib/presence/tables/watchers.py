"""The watchers table: the authorization decision per (presentity, watcher) pair, as the
presentity's rules last judged it (I/O). Written by presence-store only. `table` is
the configured name (Settings.watchers_table)."""

from __future__ import annotations

import asyncpg

from presence.subscriptions.state import Reason, State

Connection = asyncpg.Connection | asyncpg.Pool

# Pending decisions due to be forgotten ($1: the oldest inserted_time kept), a
# condition for the expiry timer's batched deletes; served by the partial index
# watchers_pending, so that the sweep does not read the whole table (nearly all
# active) at every period.
PENDING_DUE = "subs_status = 'pending' AND inserted_time <= $1"


async def record_decision(
    connection: asyncpg.Connection,
    table: str,
    *,
    presentity_user: str,
    presentity_domain: str,
    watcher_user: str,
    watcher_domain: str,
    state: State,
    reason: Reason | None,
    now: int,
) -> None:
    """The pair's decision, replacing the one before (inserted_time stays the first's)."""
    await connection.execute(
        f"""INSERT INTO {table}
                (p_user, p_domain, w_user, w_domain, subs_status, reason, inserted_time)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (p_user, p_domain, w_user, w_domain) DO UPDATE
                SET subs_status = EXCLUDED.subs_status, reason = EXCLUDED.reason""",
        presentity_user,
        presentity_domain,
        watcher_user,
        watcher_domain,
        state.value,
        None if reason is None else reason.value,
        now,
    )


async def decisions_of(
    connection: Connection, table: str, username: str, domain: str, limit: int
) -> list[asyncpg.Record]:
    """The presentity's decisions, oldest first: w_user, w_domain, subs_status, reason,
    inserted_time."""
    return await connection.fetch(
        f"""SELECT w_user, w_domain, subs_status, reason, inserted_time
            FROM {table}
            WHERE p_user = $1 AND p_domain = $2 ORDER BY id LIMIT $3""",
        username,
        domain,
        limit,
    )
