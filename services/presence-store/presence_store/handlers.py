"""Bus requests -> database transactions -> replies and change events."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import asyncpg
from aiokafka import AIOKafkaProducer

from presence import events
from presence.locks import ShardedLocks
from presence.settings import Settings
from presence.topics import Topics
from presence_store.publication import Reply
from presence_store.publish_store import apply_publish

log = logging.getLogger(__name__)


class RequestHandler:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        locks: ShardedLocks,
        producer: AIOKafkaProducer,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._locks = locks
        self._producer = producer
        self._topics = Topics.of(settings)

    async def handle(self, event: events.Event) -> list[asyncio.Future[object]]:
        """Apply one request; returns the pending sends of its reply and change events
        (the caller awaits them before committing the Kafka offset)."""
        if not isinstance(event, events.PublishRequest):
            log.warning("ignoring unexpected %s event", event.TYPE)
            return []
        reply, changed = await self._apply_once(event)
        log.info(
            "PUBLISH %s %s -> %s %s", event.presentity, event.event, reply.status, reply.reason
        )
        sends = [
            await self._producer.send(
                self._topics.edge_inbox(event.edge_id),
                events.encode(
                    events.SipReply(event.request_id, reply.status, reply.reason, reply.headers)
                ),
            )
        ]
        if changed:
            change = events.PresentityChanged(
                username=event.username,
                domain=event.domain,
                event=event.event,
                cause=event.request_id,
                received_at=event.received_at,
            )
            sends.append(
                await self._producer.send(
                    self._topics.changes, events.encode(change), key=event.presentity.encode()
                )
            )
        return sends

    async def _apply_once(self, event: events.PublishRequest) -> tuple[Reply, bool]:
        """Apply the request unless it was applied before (a redelivery after a crash)."""
        async with self._locks.hold(event.presentity), self._pool.acquire() as connection:
            async with connection.transaction():
                done = await connection.fetchrow(
                    "SELECT reply, changed FROM processed_requests WHERE request_id = $1",
                    event.request_id,
                )
                if done is not None:
                    stored = json.loads(done["reply"])
                    headers = [(name, value) for name, value in stored["headers"]]
                    return Reply(stored["status"], stored["reason"], headers), done["changed"]
                now = int(time.time())
                reply, changed = await apply_publish(connection, event, self._settings, now)
                await connection.execute(
                    """INSERT INTO processed_requests (request_id, reply, changed, created_at)
                       VALUES ($1, $2, $3, $4)""",
                    event.request_id,
                    json.dumps(
                        {"status": reply.status, "reason": reply.reason, "headers": reply.headers}
                    ),
                    changed,
                    now,
                )
                return reply, changed
