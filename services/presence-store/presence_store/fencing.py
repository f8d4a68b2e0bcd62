"""Fencing of the Redis lock shards in PostgreSQL (see presence.runtime.locks)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from presence.runtime.locks import Lease, ShardedLocks
from presence.tables import lock_fences


class FencedOut(RuntimeError):
    """A newer lease of the same shard has written: this holder's lease ran out."""


async def enter_fence(connection: asyncpg.Connection, lease: Lease) -> None:
    """The first statement of every write transaction under a lease. Raising the shard's
    token row also locks it until commit, so a newer holder's transaction waits for
    this one and then sees its writes; a stale holder that comes later is refused."""
    if not await lock_fences.raise_token(connection, lease.key, lease.fence):
        raise FencedOut(f"lock {lease.key}: fence {lease.fence} is stale")


@asynccontextmanager
async def locked_write(
    locks: ShardedLocks, pool: asyncpg.Pool, presentity: str
) -> AsyncIterator[tuple[asyncpg.Connection, Lease]]:
    """The one way a write of a presentity's state begins: its lock shard (Redis), a
    pooled connection, a transaction whose first statement is the fence. An
    exception inside rolls the transaction back; the lock is released either way."""
    async with locks.hold(presentity) as lease, pool.acquire() as connection:
        async with connection.transaction():
            await enter_fence(connection, lease)
            yield connection, lease
