"""Applying a PUBLISH to the presentity table, inside the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from presence.bus.events import PresentityChanged, PublishRequest
from presence.pidf.device import publishing_device
from presence.runtime import metrics
from presence.settings import Settings
from presence.sip.answers import Answer
from presence.subscriptions.expiry import expires_at
from presence.tables import location, presentity
from presence.tables.active_watchers import watched
from presence_store.outcome import Outcome
from presence_store.publication import (
    CONDITIONAL_REQUEST_FAILED,
    Accepted,
    PublishKind,
    classify,
    new_entity_tag,
    success_reply,
)

# Beyond PRESENCE_MAX_PUBLICATIONS the new publication is refused, never the oldest
# replaced: replacing would silently show another device (often a real one, the
# flood's victim) offline; a refusal tells the one client that adds too many.
TOO_MANY_PUBLICATIONS = Answer(403, "Too Many Publications")
# A merged document the notifier could not parse (PRESENCE_MAX_DOCUMENT_BYTES) would
# leave every watcher without NOTIFY; the PUBLISH that would make it is refused.
DOCUMENT_TOO_LARGE = Answer(413, "Aggregated Document Too Large")


class _OverCap(Exception):
    def __init__(self, reply: Answer, cap: str) -> None:
        super().__init__(cap)
        self.reply = reply
        self.cap = cap


@dataclass(frozen=True)
class Applied:
    reply: Answer
    changed: bool = False
    # Bodies of publications this request removed: their tuples are shown closed once.
    closed: list[str] = field(default_factory=list)


async def apply_publish(
    connection: asyncpg.Connection, request: PublishRequest, settings: Settings, now: int
) -> Outcome:
    """The reply, and a change notice when the presentity's state changed and
    someone watches it.

    Without a watcher the notice would make the notifier look and find nobody: a bus
    record, a fetch and a query per PUBLISH, for most PUBLISHes under load. Asked
    under the presentity's lock, the answer holds until the commit: a SUBSCRIBE for
    this presentity takes the same lock, so it is applied after this PUBLISH and
    its first NOTIFY shows this state."""
    applied = await _apply(connection, request, settings, now)
    if not applied.changed or not await watched(
        connection, settings.active_watchers_table, request.domain, request.username, request.event
    ):
        return Outcome(applied.reply)
    notice = PresentityChanged(
        username=request.username,
        domain=request.domain,
        event=request.event,
        cause=request.request_id,
        received_at=request.received_at,
        closed=applied.closed,
    )
    return Outcome(applied.reply, [notice])


async def _apply(
    connection: asyncpg.Connection, request: PublishRequest, settings: Settings, now: int
) -> Applied:
    decision = classify(request, settings.expiry_policy)
    if isinstance(decision, Answer):
        return Applied(decision)
    if decision.kind in (PublishKind.REFRESH, PublishKind.REMOVE):
        # Neither adds a publication nor grows the document: never refused by a cap.
        return await _apply_conditional(connection, request, decision, settings, now)
    # A new or modified document is applied in a savepoint and undone when the result
    # passes a cap: counted after the same-device replacement, so a device that
    # re-publishes at the cap replaces its own publication instead of being refused.
    try:
        async with connection.transaction():
            if decision.kind is PublishKind.INITIAL:
                applied = await _apply_initial(connection, request, decision, settings, now)
            else:
                applied = await _apply_conditional(connection, request, decision, settings, now)
            if applied.changed:
                await _check_caps(connection, request, decision, settings, now)
    except _OverCap as over:
        metrics.CAP_REFUSALS.labels(over.cap).inc()
        return Applied(over.reply)
    return applied


async def _check_caps(
    connection: asyncpg.Connection,
    request: PublishRequest,
    decision: Accepted,
    settings: Settings,
    now: int,
) -> None:
    """Raise _OverCap when the presentity's state, with this request applied, has more
    publications or a larger aggregated document than the settings allow."""
    if decision.kind is PublishKind.INITIAL:
        live = await presentity.count_live(
            connection,
            settings.presentity_table,
            request.username,
            request.domain,
            request.event,
            now,
        )
        if live > settings.max_publications:
            raise _OverCap(TOO_MANY_PUBLICATIONS, "publications")
    document = await presentity.load_document(
        connection, settings, request.username, request.domain, request.event
    )
    if len(document) > settings.max_document_bytes:
        raise _OverCap(DOCUMENT_TOO_LARGE, "document_size")


async def _apply_initial(
    connection: asyncpg.Connection,
    request: PublishRequest,
    decision: Accepted,
    settings: Settings,
    now: int,
) -> Applied:
    table = settings.presentity_table
    device = await _device_of(connection, request, now)
    if settings.replace_same_device and decision.marks:
        # A device that lost its entity tag (a 412, a restart) publishes afresh: its old
        # publication would otherwise show in every NOTIFY until it expires. Only its
        # own: the same device (presence.pidf.device) and a shared tuple id or contact.
        await presentity.delete_same_device(
            connection,
            table,
            request.username,
            request.domain,
            request.event,
            now,
            device,
            sorted(decision.marks),
        )
    entity_tag = new_entity_tag()
    await presentity.insert(
        connection,
        table,
        request.username,
        request.domain,
        request.event,
        entity_tag,
        expires_at(now, decision.expires),
        now,
        decision.body,
        sorted(decision.marks),
        device,
    )
    return Applied(
        success_reply(entity_tag, decision.expires, settings.expiry_policy), changed=True
    )


async def _device_of(connection: asyncpg.Connection, request: PublishRequest, now: int) -> str:
    """The publishing device (presence.pidf.device.publishing_device), with the instance
    ids its UA registered for this address-of-record over the same flow."""
    registered: list[str | None] = []
    if request.instance is None:
        registered = await location.live_instances(
            connection, request.username, request.domain, request.flow, now
        )
    return publishing_device(request.instance, registered, request.flow, request.request_id)


async def _apply_conditional(
    connection: asyncpg.Connection,
    request: PublishRequest,
    decision: Accepted,
    settings: Settings,
    now: int,
) -> Applied:
    table = settings.presentity_table
    # Expired rows are as good as gone even before the cleaner removes them. The tag
    # the last refresh or modify replaced still matches during the grace period.
    row_id = await presentity.lock_matching(
        connection,
        table,
        request.username,
        request.domain,
        request.event,
        request.if_match,
        now,
    )
    if row_id is None:
        return Applied(CONDITIONAL_REQUEST_FAILED)
    if decision.kind is PublishKind.REMOVE:
        body = await presentity.delete_returning_body(connection, table, row_id)
        return Applied(
            success_reply(request.if_match or "", 0, settings.expiry_policy), True, [body]
        )
    entity_tag = new_entity_tag()
    grace_until = now + settings.etag_grace if settings.etag_grace else 0
    if decision.kind is PublishKind.REFRESH:
        # A refresh changes no state (RFC 3903 §4.2), so watchers hear nothing.
        await presentity.refresh(
            connection,
            table,
            row_id,
            entity_tag,
            expires_at(now, decision.expires),
            grace_until,
        )
        return Applied(success_reply(entity_tag, decision.expires, settings.expiry_policy))
    await presentity.modify(
        connection,
        table,
        row_id,
        entity_tag,
        expires_at(now, decision.expires),
        now,
        decision.body,
        grace_until,
        sorted(decision.marks),
    )
    return Applied(
        success_reply(entity_tag, decision.expires, settings.expiry_policy), changed=True
    )
