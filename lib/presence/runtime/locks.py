"""Redis-sharded locks: the distributed form of the seed's lock_set_size.

The seed hashes a presentity onto one of lock_set_size process locks. Here the
same hash picks one of lock_set_size Redis keys, so every replica of every
service serializes updates of one presentity. A lock has a lease (it frees
itself if its holder dies) and is released only by its holder (token check).

A lease can run out while its holder still works (a long pause), so each
acquisition also gets a fencing token, larger than every earlier one of its
shard; writers pass it to the database (see presence_store.fencing), which
refuses a token older than one it has seen.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from redis.asyncio import Redis

from presence.runtime.metrics import LOCK_WAIT_SECONDS

# The fence counter starts at the Redis server's clock in microseconds, so that
# after a Redis restart (which loses the counter) new tokens still exceed old ones.
_ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    if redis.call('exists', KEYS[2]) == 0 then
        local now = redis.call('time')
        redis.call('set', KEYS[2], now[1] .. string.rep('0', 6 - #now[2]) .. now[2])
    end
    return redis.call('incr', KEYS[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class LockTimeout(RuntimeError):
    pass


@dataclass(frozen=True)
class Lease:
    key: str  # the lock shard's Redis key
    fence: int  # larger than the fence of every earlier lease of this shard


def lock_slot(presentity: str, lock_set_size: int) -> int:
    # crc32 is stable across processes and Python versions (hash() is salted).
    return zlib.crc32(presentity.lower().encode()) % lock_set_size


class ShardedLocks:
    def __init__(
        self,
        redis: Redis,
        lock_set_size: int,
        *,
        lease_ms: int = 10_000,
        prefix: str = "presence:lock:",
    ) -> None:
        self._redis = redis
        self._size = lock_set_size
        self._lease_ms = lease_ms
        self._prefix = prefix
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        # Holders in this process queue on a local lock first, so that only one of
        # them at a time polls Redis for a shard.
        self._local: dict[str, asyncio.Lock] = {}

    def key(self, presentity: str) -> str:
        return f"{self._prefix}{lock_slot(presentity, self._size)}"

    @asynccontextmanager
    async def hold(self, presentity: str, timeout: float = 5.0) -> AsyncIterator[Lease]:
        key = self.key(presentity)
        local = self._local.setdefault(key, asyncio.Lock())
        started = time.monotonic()
        try:
            await asyncio.wait_for(local.acquire(), timeout)
        except TimeoutError:
            LOCK_WAIT_SECONDS.labels("timeout").observe(time.monotonic() - started)
            raise LockTimeout(f"lock {key} not acquired within {timeout}s") from None
        try:
            async with self._hold_shared(key, timeout, started) as lease:
                yield lease
        finally:
            local.release()

    @asynccontextmanager
    async def _hold_shared(self, key: str, timeout: float, started: float) -> AsyncIterator[Lease]:
        token = secrets.token_hex(16)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.001
        while not (
            fence := int(
                await self._acquire(keys=[key, key + ":fence"], args=[token, self._lease_ms])
            )
        ):
            if loop.time() >= deadline:
                LOCK_WAIT_SECONDS.labels("timeout").observe(time.monotonic() - started)
                raise LockTimeout(f"lock {key} not acquired within {timeout}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        # The wait includes queueing behind this process's own holders of the shard.
        LOCK_WAIT_SECONDS.labels("acquired").observe(time.monotonic() - started)
        try:
            yield Lease(key, fence)
        finally:
            await self._release(keys=[key], args=[token])
