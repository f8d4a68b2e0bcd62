"""Redis-sharded locks: the distributed form of the seed's lock_set_size.

The seed hashes a presentity onto one of lock_set_size process locks. Here the
same hash picks one of lock_set_size Redis keys, so every replica of every
service serializes updates of one presentity. A lock has a lease (it frees
itself if its holder dies) and is released only by its holder (token check).
"""

from __future__ import annotations

import asyncio
import secrets
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class LockTimeout(RuntimeError):
    pass


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
        self._release = redis.register_script(_RELEASE)

    def key(self, presentity: str) -> str:
        return f"{self._prefix}{lock_slot(presentity, self._size)}"

    @asynccontextmanager
    async def hold(self, presentity: str, timeout: float = 5.0) -> AsyncIterator[None]:
        key, token = self.key(presentity), secrets.token_hex(16)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.001
        while not await self._redis.set(key, token, nx=True, px=self._lease_ms):
            if loop.time() >= deadline:
                raise LockTimeout(f"lock {key} not acquired within {timeout}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        try:
            yield
        finally:
            await self._release(keys=[key], args=[token])
