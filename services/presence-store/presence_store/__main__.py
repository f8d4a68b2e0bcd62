"""presence-store: owns the presence tables and applies PUBLISH. Run: python -m presence_store"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from presence import service
from presence.cache import connect_redis, redis_ready
from presence.db import create_pool, database_ready
from presence.health import make_health_app
from presence.kafka import (
    bus_ready,
    consume_in_batches,
    ensure_topics,
    start_consumer,
    start_producer,
)
from presence.locks import ShardedLocks
from presence.settings import Settings
from presence.topics import Topics, shared_topics
from presence_store.cleaner import Cleaner
from presence_store.handlers import RequestHandler

log = logging.getLogger("presence_store")


async def body(settings: Settings, stopping: asyncio.Event) -> None:
    topics = Topics.of(settings)
    # Dependencies in the order a user would check them; each failure is one line.
    pool = await create_pool(settings.db_url)
    redis = await connect_redis(settings.redis_url)
    await ensure_topics(settings.kafka_bootstrap, shared_topics(settings))
    producer = await start_producer(settings.kafka_bootstrap)
    consumer = await start_consumer(
        settings.kafka_bootstrap,
        [topics.requests, topics.notify_outcomes],
        group_id=topics.group("presence-store"),
        client_id="presence-store",
    )
    locks = ShardedLocks(redis, settings.lock_set_size, prefix=topics.lock_prefix)
    handler = RequestHandler(settings, pool, locks, producer)
    cleaner = Cleaner(settings, pool, redis, producer)
    # Concurrency beyond the lock shards only queues on the locks.
    consuming = asyncio.create_task(
        consume_in_batches(consumer, handler.handle, concurrency=settings.lock_set_size)
    )
    cleaning = asyncio.create_task(cleaner.run())
    http = await service.serve_http(
        make_health_app(
            "presence-store",
            {
                "kafka": lambda: bus_ready(producer),
                "postgresql": lambda: database_ready(pool),
                "redis": lambda: redis_ready(redis),
            },
        ),
        settings.http_host,
        settings.store_http_port,
        "PRESENCE_STORE_HTTP_PORT",
    )
    log.info("presence-store consuming %s", topics.requests)
    done, _ = await asyncio.wait(
        [consuming, asyncio.create_task(stopping.wait())], return_when=asyncio.FIRST_COMPLETED
    )
    if consuming in done:
        consuming.result()  # a crash of the consumer loop ends the process loudly
    log.info("stopping")
    http.should_exit = True
    for task in (consuming, cleaning):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await cleaner.resign()
    await consumer.stop()
    await producer.stop()
    await pool.close()
    await redis.aclose()


def main() -> None:
    service.run("presence-store", body)


if __name__ == "__main__":
    main()
