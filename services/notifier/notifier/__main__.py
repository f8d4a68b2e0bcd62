"""notifier: turns presence changes into NOTIFYs for the watchers. Run: python -m notifier

Replicas share the presence.changes partitions through the Kafka consumer group.
"""

from __future__ import annotations

import asyncio

from notifier.fanout import Fanout
from presence.bus.topics import Topics
from presence.runtime import service
from presence.runtime.backend import Backend
from presence.settings import Settings


async def body(settings: Settings, stopping: asyncio.Event) -> None:
    topics = Topics.of(settings)
    backend = await Backend.open(
        settings,
        topics=[topics.changes],
        group=topics.group("notifier"),
        client_id="notifier",
        use_redis=False,  # it takes no presentity lock: CSeqs are allocated in PostgreSQL
    )
    fanout = Fanout(settings, backend.pool, backend.producer)
    try:
        await backend.serve(
            "notifier",
            settings,
            stopping,
            http_port=settings.notifier_http_port,
            port_variable="PRESENCE_NOTIFIER_HTTP_PORT",
            workers=[
                backend.consume(
                    "notifier", settings, fanout.handle, concurrency=8, stopping=stopping
                )
            ],
        )
    finally:
        await backend.close()


def main() -> None:
    service.run("notifier", body)


if __name__ == "__main__":
    main()
