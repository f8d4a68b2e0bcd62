"""What a subscription's NOTIFY shows, read from the tables (I/O): the presentity's
document as the rules let each watcher see it, or the watcher list (RFC 3857), with
the CSeq allocation that goes with it (presence.tables.active_watchers). Shared by
the notifier (a change, to every subscription it concerns) and presence-store (the
NOTIFY that follows a SUBSCRIBE, built in the SUBSCRIBE's own transaction)."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from presence.bus import events
from presence.packages.registry import PACKAGES, PRESENCE, Authorization, DocumentPolicy
from presence.packages.watcherinfo import Watcher, bounded_watcherinfo_document, by_priority
from presence.pidf.document import PidfError, current_sphere
from presence.rules.authorization import Judge, watcher_identity
from presence.runtime import metrics
from presence.settings import Settings
from presence.subscriptions.notify import Subscription, build_notify
from presence.subscriptions.state import State
from presence.tables.active_watchers import OneDialog, allocate_notifies, watcher_list
from presence.tables.presentity import load_document, load_sphere, needs_sphere
from presence.tables.xcap import load_pres_rules

log = logging.getLogger(__name__)

Change = events.PresentityChanged | events.WatcherChanged | events.WatcherInfoChanged
# What each subscription of a page is sent, given the subscription.
View = Callable[[Subscription], bytes]


async def view_for(
    connection: asyncpg.Connection, settings: Settings, change: Change, page: list[Subscription]
) -> View:
    """What each subscription of `page` (all of one package) is sent for `change`."""
    watched_package = PACKAGES[page[0].event].watcher_info_of
    if watched_package:
        return await watcher_info_view(connection, settings, change, watched_package, page)
    return await state_view(connection, settings, change)


async def state_view(connection: asyncpg.Connection, settings: Settings, change: Change) -> View:
    """The presentity's document, as the rules let each watcher see it."""
    assert not isinstance(change, events.WatcherInfoChanged)
    closed = change.closed if isinstance(change, events.PresentityChanged) else []
    document = await load_document(
        connection, settings, change.username, change.domain, change.event, closed
    )
    rules = await load_pres_rules(connection, settings, change.username, change.domain)
    entity = f"sip:{change.username}@{change.domain}"
    sphere = None
    if needs_sphere(rules):
        # The sphere is a presence attribute (RFC 4480), whatever package is notified.
        if change.event == PRESENCE.name:
            sphere = current_sphere(document, max_bytes=settings.max_document_bytes)
        else:
            sphere = await load_sphere(connection, settings, change.username, change.domain)
    package = PACKAGES[change.event]
    # The rules are parsed once for the whole page, not once per watcher.
    judge = Judge(rules, settings.authorization_policy, datetime.now(UTC), sphere=sphere)

    def view(subscription: Subscription) -> bytes:
        shown = as_seen_by(settings.document_policy, subscription, document, entity, judge)
        if package.versioned is None:
            return shown
        return package.versioned(shown, subscription.version - 1)

    return view


async def watcher_info_view(
    connection: asyncpg.Connection,
    settings: Settings,
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
        full = await watcher_list(
            connection, settings.active_watchers_table, change.username, change.domain, package
        )
    partial, full = by_priority(partial), by_priority(full)
    limit = settings.max_winfo_bytes

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


def as_seen_by(
    policy: DocumentPolicy,
    subscription: Subscription,
    document: bytes,
    entity: str,
    judge: Judge,
) -> bytes:
    """The document filtered by the presentity's rules for this watcher (judged at
    the NOTIFY, so a rules change shows in the next one)."""
    package = PACKAGES[subscription.event]
    if policy.authorization.force_active or package.authorization is not Authorization.PRES_RULES:
        return document
    watcher = watcher_identity(subscription.from_user, subscription.from_domain)
    verdict = judge.verdict(watcher)
    if verdict.status != State.ACTIVE:
        return package.empty_state(entity, policy)
    try:
        return package.as_seen_by(document, entity, verdict, policy)
    except PidfError as error:
        # Only a document stored under a larger PRESENCE_MAX_DOCUMENT_BYTES gets
        # here (the store refuses a PUBLISH that would make one): the watcher is
        # told nothing is known rather than the change failing on every retry.
        metrics.DOCUMENTS_WITHHELD.labels(subscription.event).inc()
        log.error("document of %s withheld from a watcher: %s", entity, error)
        return package.empty_state(entity, policy)


def notify_request(
    settings: Settings, subscription: Subscription, document: bytes
) -> events.NotifyRequest:
    """The NOTIFY request of one subscription, for its edge."""
    notify, _ = build_notify(
        subscription,
        document=document,
        now=int(time.time()),
        contact_uri=settings.contact_uri_for(subscription.flow),
        notify_id=secrets.token_hex(12),
        retry_after=settings.probation_retry_after,
    )
    return notify


async def notify_of_dialog(
    connection: asyncpg.Connection, settings: Settings, change: events.WatcherChanged
) -> events.NotifyRequest | None:
    """The NOTIFY a dialog's own change calls for (a SUBSCRIBE accepted, refreshed or
    ended: RFC 6665 §4.2.1.1), built in the caller's transaction; None when the
    dialog is gone."""
    allocated = await allocate_notifies(
        connection, settings.active_watchers_table, OneDialog(change.subscription)
    )
    if not allocated:
        return None
    subscription = allocated[0]
    view = await view_for(connection, settings, change, [subscription])
    return notify_request(settings, subscription, view(subscription))
