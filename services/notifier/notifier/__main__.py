"""notifier: turns presence changes into NOTIFYs for the watchers. Run: python -m notifier

Replicas share the presence.changes partitions through the Kafka consumer group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from notifier.fanout import Fanout
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
from presence.settings import Settings
from presence.topics import Topics, shared_topics

log = logging.getLogger("notifier")


async def body(settings: Settings, stopping: asyncio.Event) -> None:
    topics = Topics.of(settings)
    # Dependencies in the order a user would check them; each failure is one line.
    pool = await create_pool(settings.db_url)
    redis = await connect_redis(settings.redis_url)
    await ensure_topics(settings.kafka_bootstrap, shared_topics(settings))
    producer = await start_producer(settings.kafka_bootstrap)
    consumer = await start_consumer(
        settings.kafka_bootstrap,
        [topics.changes],
        group_id=topics.group("notifier"),
        client_id="notifier",
    )
    fanout = Fanout(settings, pool, producer)
    consuming = asyncio.create_task(consume_in_batches(consumer, fanout.handle, concurrency=8))
    http = await service.serve_http(
        make_health_app(
            "notifier",
            {
                "kafka": lambda: bus_ready(producer),
                "postgresql": lambda: database_ready(pool),
                "redis": lambda: redis_ready(redis),
            },
        ),
        settings.http_host,
        settings.notifier_http_port,
        "PRESENCE_NOTIFIER_HTTP_PORT",
    )
    log.info("notifier consuming %s", topics.changes)
    done, _ = await asyncio.wait(
        [consuming, asyncio.create_task(stopping.wait())], return_when=asyncio.FIRST_COMPLETED
    )
    if consuming in done:
        consuming.result()
    log.info("stopping")
    http.should_exit = True
    consuming.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consuming
    await consumer.stop()
    await producer.stop()
    await pool.close()
    await redis.aclose()


def main() -> None:
    service.run("notifier", body)


if __name__ == "__main__":
    main()
