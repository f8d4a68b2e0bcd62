"""From a change event to the NOTIFYs of the subscriptions it concerns (database and bus)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
from aiokafka import AIOKafkaProducer

from notifier.edge_inboxes import EdgeInboxes
from presence.bus import events
from presence.bus.topics import Topics
from presence.packages.registry import watcher_info_package
from presence.runtime import metrics
from presence.settings import Settings
from presence.subscriptions.notify import Subscription
from presence.tables.active_watchers import (
    OneDialog,
    PresentityPage,
    allocate_notifies,
    watched,
)
from presence.tables.notify_views import Change, View, notify_request, view_for

log = logging.getLogger(__name__)

# Subscriptions of one presentity are read and notified this many at a time, so a
# presentity with 10,000 watchers is streamed, not loaded at once.
PAGE_SIZE = 500


class Fanout:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer) -> None:
        self._settings = settings
        self._pool = pool
        self._producer = producer
        self._topics = Topics.of(settings)
        self._inboxes = EdgeInboxes(producer)

    async def handle(self, change: events.Event) -> list[asyncio.Future[object]]:
        """Send the NOTIFYs a change calls for; returns the pending Kafka sends."""
        if not isinstance(change, Change):
            log.warning("ignoring unexpected %s event", change.TYPE)
            return []
        sends = []
        # The publish-to-notify delay is measured from the PUBLISH's arrival at the edge.
        published_at = (
            change.received_at
            if isinstance(change, events.PresentityChanged)
            and change.cause not in events.LOCAL_CAUSES
            else 0.0
        )
        async for subscriptions, view in self._pages(change):
            for subscription in subscriptions:
                sends.append(await self._notify(subscription, view(subscription), published_at))
                metrics.NOTIFIES_BUILT.labels(subscription.event).inc()
        event = getattr(change, "event", None) or f"{change.package} watchers"
        log.info("%s %s %s: %d NOTIFY", change.TYPE, change.presentity, event, len(sends))
        return sends

    async def _pages(self, change: Change) -> AsyncIterator[tuple[list[Subscription], View]]:
        """The subscriptions to notify, a page at a time, each with a freshly allocated
        CSeq, and what to send each.

        Both come from one transaction, CSeqs first (allocate_notifies, as the store
        allocates them): allocating them locks the subscriptions' rows, so another
        notifier replica working on the same change (around a rebalance) waits, then
        reads a state at least as new and allocates higher CSeqs."""
        table = self._settings.active_watchers_table
        if isinstance(change, events.WatcherInfoChanged):
            winfo = watcher_info_package(change.package)
            if winfo is None:  # from a producer of another version: the record's fault
                raise ValueError(f"no package watches the watchers of {change.package!r}")
            event = winfo
        else:
            event = change.event
        if not isinstance(change, events.WatcherChanged) and not await watched(
            self._pool, table, change.domain, change.username, event
        ):
            # Nobody to notify (most changes of most presentities under a PUBLISH load):
            # one statement instead of BEGIN, an UPDATE of no row and COMMIT. It sees
            # what the UPDATE would have seen: the subscriptions committed before it.
            return
        last_id = 0
        while True:
            async with self._pool.acquire() as connection, connection.transaction():
                chosen = (
                    OneDialog(change.subscription)
                    if isinstance(change, events.WatcherChanged)
                    else PresentityPage(change.username, change.domain, event, last_id, PAGE_SIZE)
                )
                page = await allocate_notifies(connection, table, chosen)
                if not page:
                    return
                view = await view_for(connection, self._settings, change, page)
            yield page, view
            if isinstance(change, events.WatcherChanged) or len(page) < PAGE_SIZE:
                return
            last_id = page[-1].id

    async def _notify(
        self, subscription: Subscription, document: bytes, published_at: float
    ) -> asyncio.Future[object]:
        notify = notify_request(self._settings, subscription, document)
        if published_at:
            notify = replace(notify, published_at=published_at)
        inbox = self._topics.edge_inbox(subscription.edge_id)
        if not await self._inboxes.exists(inbox):
            # Nobody can send it: its outcome is reported as an edge's would be (the
            # 408 policy then applies), instead of waiting for a topic that never comes.
            metrics.NOTIFY_EDGE_GONE.labels(subscription.event).inc()
            log.warning("NOTIFY for %s: edge %s is gone", subscription.to_tag, subscription.edge_id)
            outcome = events.NotifyOutcome.of(notify, 408, "Edge Gone")
            return await self._producer.send(
                self._topics.notify_outcomes,
                events.encode(outcome),
                key=outcome.presentity.encode(),
            )
        # A final NOTIFY does not delete the subscription here: the store does when the
        # edge reports its outcome, so a crash before it is sent cannot lose it.
        return await self._producer.send(inbox, events.encode(notify))
