"""From a change event to the NOTIFYs of the subscriptions it concerns (database and bus)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime

import asyncpg
from aiokafka import AIOKafkaProducer

from notifier.edge_inboxes import EdgeInboxes
from notifier.notify_builder import Subscription, build_notify
from presence import events, metrics
from presence.active_watchers import watched
from presence.authorization import judge, watcher_identity
from presence.expiry import seconds_left
from presence.packages import PACKAGES, PRESENCE, Authorization, watcher_info_package
from presence.pidf import PidfError, current_sphere
from presence.presentity_documents import load_document, load_sphere, needs_sphere
from presence.settings import Settings
from presence.topics import Topics
from presence.watcherinfo import (
    Watcher,
    bounded_watcherinfo_document,
    by_priority,
    watcher_event,
)
from presence.xcap_documents import load_pres_rules

log = logging.getLogger(__name__)

# Subscriptions of one presentity are read and notified this many at a time, so a
# presentity with 10,000 watchers is streamed, not loaded at once.
PAGE_SIZE = 500
_COLUMNS = ", ".join(
    [
        "id", "to_user", "to_domain", "event", "event_id", "to_tag", "from_tag", "callid",
        "local_cseq", "version", "contact", "record_route", "expires", "status", "reason",
        "local_uri", "remote_uri", "from_user", "from_domain", "flow", "edge_id",
    ]
)  # fmt: skip
Change = events.PresentityChanged | events.WatcherChanged | events.WatcherInfoChanged
# What each subscription of a page is sent, given the subscription.
View = Callable[[Subscription], bytes]


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

        Both come from one transaction, CSeqs first: allocating them locks the
        subscriptions' rows, so another notifier replica working on the same change
        (around a rebalance) waits, then reads a state at least as new and allocates
        higher CSeqs. A higher CSeq therefore always carries a newer-or-equal state,
        which is what lets the edge drop stragglers."""
        table = self._settings.active_watchers_table
        if isinstance(change, events.WatcherInfoChanged):
            event = watcher_info_package(change.package)
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
                if isinstance(change, events.WatcherChanged):
                    rows = await connection.fetch(
                        f"""UPDATE {table} SET local_cseq = local_cseq + 1, version = version + 1
                            WHERE to_tag = $1 RETURNING {_COLUMNS}""",
                        change.subscription,
                    )
                else:
                    rows = await connection.fetch(
                        f"""UPDATE {table} SET local_cseq = local_cseq + 1, version = version + 1
                            WHERE id IN (SELECT id FROM {table}
                                         WHERE to_domain = $1 AND to_user = $2 AND event = $3
                                           AND status <> 'terminated'
                                           AND id > $4 ORDER BY id LIMIT $5)
                            RETURNING {_COLUMNS}""",
                        change.domain,
                        change.username,
                        event,
                        last_id,
                        PAGE_SIZE,
                    )
                if not rows:
                    return
                page = [Subscription(**row) for row in sorted(rows, key=lambda r: r["id"])]
                watched_package = PACKAGES[page[0].event].watcher_info_of
                if watched_package:
                    view = await self._watcher_info_view(connection, change, watched_package, page)
                else:
                    view = await self._state_view(connection, change)
            yield page, view
            if isinstance(change, events.WatcherChanged) or len(rows) < PAGE_SIZE:
                return
            last_id = max(r["id"] for r in rows)

    async def _state_view(self, connection: asyncpg.Connection, change: Change) -> View:
        """The presentity's document, as the rules let each watcher see it."""
        assert not isinstance(change, events.WatcherInfoChanged)
        closed = change.closed if isinstance(change, events.PresentityChanged) else []
        document = await load_document(
            connection, self._settings, change.username, change.domain, change.event, closed
        )
        rules = await load_pres_rules(connection, self._settings, change.username, change.domain)
        entity = f"sip:{change.username}@{change.domain}"
        now = datetime.now(UTC)
        sphere = None
        if needs_sphere(rules):
            # The sphere is a presence attribute (RFC 4480), whatever package is notified.
            if change.event == PRESENCE.name:
                sphere = current_sphere(document, max_bytes=self._settings.max_document_bytes)
            else:
                sphere = await load_sphere(
                    connection, self._settings, change.username, change.domain
                )
        package = PACKAGES[change.event]

        def view(subscription: Subscription) -> bytes:
            shown = self._as_seen_by(subscription, document, entity, rules, now, sphere)
            if package.versioned is None:
                return shown
            return package.versioned(shown, subscription.version - 1)

        return view

    async def _watcher_info_view(
        self,
        connection: asyncpg.Connection,
        change: Change,
        package: str,
        page: list[Subscription],
    ) -> View:
        """Watcher information (RFC 3857): full state on a subscription's own change
        and on its first NOTIFY, otherwise the watchers the change names."""
        resource = f"sip:{change.username}@{change.domain}"
        partial: list[Watcher] = []
        if isinstance(change, events.WatcherInfoChanged):
            partial = [Watcher(*watcher) for watcher in change.watchers]
        full: list[Watcher] = []
        if not partial or any(s.version == 1 for s in page):
            full = await self._watchers(connection, change.username, change.domain, package)
        partial, full = by_priority(partial), by_priority(full)
        limit = self._settings.max_winfo_bytes

        def view(subscription: Subscription) -> bytes:
            version = subscription.version - 1  # counted from 0 (RFC 3858 §4.2)
            state, watchers = ("partial", partial) if partial and version > 0 else ("full", full)
            document, omitted = bounded_watcherinfo_document(
                resource, package, version, state, watchers, limit
            )
            if omitted:
                # PRESENCE_MAX_WINFO_BYTES: never a NOTIFY (nor a bus record) without bound.
                metrics.WINFO_TRUNCATED.labels(state).inc()
                log.warning(
                    "winfo NOTIFY for %s: %d of %d watchers left out (%s state over %d bytes)",
                    resource, omitted, len(watchers), state, limit,
                )  # fmt: skip
            return document

        return view

    async def _watchers(
        self, connection: asyncpg.Connection, username: str, domain: str, package: str
    ) -> list[Watcher]:
        now = int(time.time())
        rows = await connection.fetch(
            f"""SELECT to_tag, from_user, from_domain, status, reason, watcher_event, expires
                FROM {self._settings.active_watchers_table}
                WHERE to_domain = $1 AND to_user = $2 AND event = $3
                  AND status <> 'terminated' AND expires > $4
                ORDER BY id""",
            domain,
            username,
            package,
            now,
        )
        return [
            Watcher(
                r["to_tag"],
                watcher_identity(r["from_user"], r["from_domain"]),
                r["status"],
                watcher_event(r["status"], r["reason"], r["watcher_event"]),
                seconds_left(r["expires"], now),
            )
            for r in rows
        ]

    def _as_seen_by(
        self,
        subscription: Subscription,
        document: bytes,
        entity: str,
        rules: str | None,
        now: datetime,
        sphere: str | None,
    ) -> bytes:
        """The document filtered by the presentity's rules for this watcher (judged
        now, so a rules change shows in the next NOTIFY)."""
        package = PACKAGES[subscription.event]
        if self._settings.force_active or package.authorization is not Authorization.PRES_RULES:
            return document
        watcher = watcher_identity(subscription.from_user, subscription.from_domain)
        verdict = judge(rules, watcher, self._settings, now, sphere=sphere)
        if verdict.status != "active":
            return package.empty_state(entity, self._settings)
        try:
            return package.as_seen_by(document, entity, verdict, self._settings)
        except PidfError as error:
            # Only a document stored under a larger PRESENCE_MAX_DOCUMENT_BYTES gets
            # here (the store refuses a PUBLISH that would make one): the watcher is
            # told nothing is known rather than the change failing on every retry.
            metrics.DOCUMENTS_WITHHELD.labels(subscription.event).inc()
            log.error("document of %s withheld from a watcher: %s", entity, error)
            return package.empty_state(entity, self._settings)

    async def _notify(
        self, subscription: Subscription, document: bytes, published_at: float
    ) -> asyncio.Future[object]:
        notify, _ = build_notify(
            subscription,
            document=document,
            now=int(time.time()),
            contact_uri=self._settings.contact_uri_for(subscription.flow),
            notify_id=secrets.token_hex(12),
            retry_after=self._settings.probation_retry_after,
        )
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
