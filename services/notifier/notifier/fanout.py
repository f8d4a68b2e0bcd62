"""From a change event to the NOTIFYs of the subscriptions it concerns (database and bus)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
from aiokafka import AIOKafkaProducer

from notifier.notify_builder import Subscription, build_notify
from presence import events
from presence.aggregation import Publication, aggregate, empty_document
from presence.authorization import judge, watcher_document
from presence.settings import Settings
from presence.topics import Topics
from presence.xcap_documents import load_pres_rules

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
        sends = []
        entity = f"sip:{change.username}@{change.domain}"
        async for subscriptions, document, rules in self._pages(change):
            now = datetime.now(UTC)
            for subscription in subscriptions:
                seen = self._as_seen_by(subscription, document, entity, rules, now)
                sends.append(await self._notify(subscription, seen))
        log.info("%s %s %s: %d NOTIFY", change.TYPE, change.presentity, change.event, len(sends))
        return sends

    async def _pages(
        self, change: events.PresentityChanged | events.WatcherChanged
    ) -> AsyncIterator[tuple[list[Subscription], bytes, str | None]]:
        """The subscriptions to notify, a page at a time, each with a freshly allocated
        CSeq and the document to send.

        Both come from one transaction, CSeqs first: allocating them locks the
        subscriptions' rows, so another notifier replica working on the same change
        (around a rebalance) waits, then reads a state at least as new and allocates
        higher CSeqs. A higher CSeq therefore always carries a newer-or-equal state,
        which is what lets the edge drop stragglers."""
        table = self._settings.active_watchers_table
        closed = change.closed if isinstance(change, events.PresentityChanged) else []
        last_id = 0
        while True:
            async with self._pool.acquire() as connection, connection.transaction():
                if isinstance(change, events.WatcherChanged):
                    rows = await connection.fetch(
                        f"""UPDATE {table} SET local_cseq = local_cseq + 1
                            WHERE to_tag = $1 RETURNING {_COLUMNS}""",
                        change.subscription,
                    )
                else:
                    rows = await connection.fetch(
                        f"""UPDATE {table} SET local_cseq = local_cseq + 1
                            WHERE id IN (SELECT id FROM {table}
                                         WHERE to_domain = $1 AND to_user = $2 AND event = $3
                                           AND status <> 'terminated'
                                           AND id > $4 ORDER BY id LIMIT $5)
                            RETURNING {_COLUMNS}""",
                        change.domain,
                        change.username,
                        change.event,
                        last_id,
                        PAGE_SIZE,
                    )
                if not rows:
                    return
                document = await self._document(connection, change, closed)
                rules = await load_pres_rules(
                    connection, self._settings, change.username, change.domain
                )
            page = [Subscription(**row) for row in sorted(rows, key=lambda r: r["id"])]
            yield page, document, rules
            if isinstance(change, events.WatcherChanged) or len(rows) < PAGE_SIZE:
                return
            last_id = max(r["id"] for r in rows)

    async def _document(
        self,
        connection: asyncpg.Connection,
        change: events.PresentityChanged | events.WatcherChanged,
        closed: list[str],
    ) -> bytes:
        """The presentity's aggregated document, with just-ended publications closed."""
        rows = await connection.fetch(
            f"""SELECT etag, received_time, body FROM {self._settings.presentity_table}
                WHERE username = $1 AND domain = $2 AND event = $3 AND expires > $4
                ORDER BY received_time, id""",
            change.username,
            change.domain,
            change.event,
            int(time.time()),
        )
        publications = [Publication(r["etag"], r["received_time"], r["body"]) for r in rows]
        ended = [Publication("", 0, body) for body in closed]
        return aggregate(f"sip:{change.username}@{change.domain}", publications, closed=ended)

    def _as_seen_by(
        self,
        subscription: Subscription,
        document: bytes,
        entity: str,
        rules: str | None,
        now: datetime,
    ) -> bytes:
        """The document filtered by the presentity's rules for this watcher (judged
        now, so a rules change shows in the next NOTIFY)."""
        if self._settings.force_active:
            return document
        verdict = judge(rules, subscription.remote_uri, self._settings, now)
        if verdict.status != "active":
            return empty_document(entity)
        return watcher_document(document, entity, verdict, self._settings)

    async def _notify(self, subscription: Subscription, document: bytes) -> asyncio.Future[object]:
        notify, _ = build_notify(
            subscription,
            document=document,
            now=int(time.time()),
            contact_uri=self._settings.contact_uri,
            notify_id=secrets.token_hex(12),
        )
        # A final NOTIFY does not delete the subscription here: the store does when the
        # edge reports its outcome, so a crash before it is sent cannot lose it.
        return await self._producer.send(
            self._topics.edge_inbox(subscription.edge_id), events.encode(notify)
        )
