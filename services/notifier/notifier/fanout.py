"""From a change event to the NOTIFYs of the subscriptions it concerns (database and bus)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator

import asyncpg
from aiokafka import AIOKafkaProducer

from notifier.notify_builder import Subscription, build_notify
from presence import events
from presence.aggregation import Publication, aggregate
from presence.settings import Settings
from presence.topics import Topics

log = logging.getLogger(__name__)

# Subscriptions of one presentity are read and notified this many at a time, so a
# presentity with 10,000 watchers is streamed, not loaded at once.
PAGE_SIZE = 500
_COLUMNS = ", ".join(
    [
        "id", "to_user", "to_domain", "event", "event_id", "to_tag", "from_tag", "callid",
        "local_cseq", "contact", "record_route", "expires", "status", "reason", "local_uri",
        "remote_uri", "flow", "edge_id",
    ]
)  # fmt: skip


class Fanout:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer) -> None:
        self._settings = settings
        self._pool = pool
        self._producer = producer
        self._topics = Topics.of(settings)

    async def handle(self, change: events.Event) -> list[asyncio.Future[object]]:
        """Send the NOTIFYs a change calls for; returns the pending Kafka sends."""
        if not isinstance(change, events.PresentityChanged | events.WatcherChanged):
            log.warning("ignoring unexpected %s event", change.TYPE)
            return []
        closed = change.closed if isinstance(change, events.PresentityChanged) else []
        document = await self.current_document(change.username, change.domain, change.event, closed)
        sends = []
        count = 0
        async for subscription in self._subscriptions(change):
            sends.append(await self._notify(subscription, document))
            count += 1
        log.info("%s %s %s: %d NOTIFY", change.TYPE, change.presentity, change.event, count)
        return sends

    async def current_document(
        self, username: str, domain: str, event: str, closed: list[str]
    ) -> bytes:
        rows = await self._pool.fetch(
            f"""SELECT etag, received_time, body FROM {self._settings.presentity_table}
                WHERE username = $1 AND domain = $2 AND event = $3 AND expires > $4
                ORDER BY received_time, id""",
            username,
            domain,
            event,
            int(time.time()),
        )
        publications = [Publication(r["etag"], r["received_time"], r["body"]) for r in rows]
        ended = [Publication("", 0, body) for body in closed]
        return aggregate(f"sip:{username}@{domain}", publications, closed=ended)

    async def _subscriptions(
        self, change: events.PresentityChanged | events.WatcherChanged
    ) -> AsyncIterator[Subscription]:
        """The subscriptions to notify, each with a freshly allocated CSeq (allocated in
        the database, so CSeqs of one dialog only grow, whichever replica sends)."""
        table = self._settings.active_watchers_table
        if isinstance(change, events.WatcherChanged):
            rows = await self._pool.fetch(
                f"""UPDATE {table} SET local_cseq = local_cseq + 1
                    WHERE to_tag = $1 RETURNING {_COLUMNS}""",
                change.subscription,
            )
            for row in rows:
                yield Subscription(**row)
            return
        last_id = 0
        while True:
            rows = await self._pool.fetch(
                f"""UPDATE {table} SET local_cseq = local_cseq + 1
                    WHERE id IN (SELECT id FROM {table}
                                 WHERE to_domain = $1 AND to_user = $2 AND event = $3
                                   AND id > $4 ORDER BY id LIMIT $5)
                    RETURNING {_COLUMNS}""",
                change.domain,
                change.username,
                change.event,
                last_id,
                PAGE_SIZE,
            )
            for row in sorted(rows, key=lambda r: r["id"]):
                yield Subscription(**row)
            if len(rows) < PAGE_SIZE:
                return
            last_id = max(r["id"] for r in rows)

    async def _notify(self, subscription: Subscription, document: bytes) -> asyncio.Future[object]:
        notify, final = build_notify(
            subscription,
            document=document,
            now=int(time.time()),
            contact_uri=self._settings.contact_uri,
            notify_id=secrets.token_hex(12),
        )
        if final:
            # The final NOTIFY is the subscription's last word: the dialog ends here.
            await self._pool.execute(
                f"DELETE FROM {self._settings.active_watchers_table} WHERE id = $1",
                subscription.id,
            )
        return await self._producer.send(
            self._topics.edge_inbox(subscription.edge_id), events.encode(notify)
        )
