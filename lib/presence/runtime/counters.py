"""Fixed-window counters in Redis: how many times something happened in the current
window, shared by every replica (failed authentications per source, XCAP writes per
presentity). One script for every such count."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

# INCR, and on the window's first hit EXPIRE: the key disappears when the window
# ends, so the count starts again from zero. The TTL tells a refused client when.
_HIT = """
local count = redis.call('incr', KEYS[1])
if count == 1 then redis.call('expire', KEYS[1], ARGV[1]) end
local ttl = redis.call('ttl', KEYS[1])
if ttl < 0 then
  redis.call('expire', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


@dataclass(frozen=True)
class Hit:
    count: int  # hits in the current window, this one included
    window_left: int  # seconds until the window ends and the count starts again

    def over(self, limit: int) -> bool:
        """Whether this hit is beyond `limit` hits per window."""
        return self.count > limit


class WindowCounter:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._hit = redis.register_script(_HIT)

    async def hit(self, key: str, window_seconds: int) -> Hit:
        """Count one more at `key`; a new window of `window_seconds` starts with the
        first hit after the last one ended."""
        count, ttl = await self._hit(keys=[key], args=[window_seconds])
        return Hit(int(count), max(1, int(ttl)))

    async def count(self, key: str) -> int:
        """The hits in the current window, without counting one."""
        return int(await self._redis.get(key) or 0)
