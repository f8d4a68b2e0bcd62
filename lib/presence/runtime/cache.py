"""Redis connections (locks and leases live there; no state that must survive)."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError


class CacheUnavailable(RuntimeError):
    pass


async def connect_redis(url: str) -> Redis:
    redis = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        await redis.ping()
    except (OSError, RedisError) as error:
        await redis.aclose()
        raise CacheUnavailable(
            f"cannot reach Redis at {url}: {error} (is it running? `make run` starts one)"
        ) from None
    return redis


async def redis_ready(redis: Redis) -> bool:
    return bool(await redis.ping())
