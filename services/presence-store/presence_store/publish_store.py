"""Applying a PUBLISH to the presentity table, inside the caller's transaction."""

from __future__ import annotations

import asyncpg

from presence.events import PresentityChanged, PublishRequest
from presence.settings import Settings
from presence_store.outcome import Outcome, Reply
from presence_store.publication import (
    CONDITIONAL_REQUEST_FAILED,
    Accepted,
    PublishKind,
    classify,
    new_entity_tag,
    success_reply,
)


async def apply_publish(
    connection: asyncpg.Connection, request: PublishRequest, settings: Settings, now: int
) -> Outcome:
    """The reply, and a change notice when the presentity's state changed."""
    reply, changed = await _apply(connection, request, settings, now)
    if not changed:
        return Outcome(reply)
    notice = PresentityChanged(
        username=request.username,
        domain=request.domain,
        event=request.event,
        cause=request.request_id,
        received_at=request.received_at,
    )
    return Outcome(reply, [notice])


async def _apply(
    connection: asyncpg.Connection, request: PublishRequest, settings: Settings, now: int
) -> tuple[Reply, bool]:
    decision = classify(request, settings)
    if isinstance(decision, Reply):
        return decision, False
    table = settings.presentity_table
    if decision.kind is PublishKind.INITIAL:
        entity_tag = new_entity_tag()
        await connection.execute(
            f"""INSERT INTO {table} (username, domain, event, etag, expires, received_time, body)
                VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            request.username,
            request.domain,
            request.event,
            entity_tag,
            now + decision.expires,
            now,
            decision.body,
        )
        return success_reply(entity_tag, decision.expires, settings), True
    return await _apply_conditional(connection, request, decision, settings, now)


async def _apply_conditional(
    connection: asyncpg.Connection,
    request: PublishRequest,
    decision: Accepted,
    settings: Settings,
    now: int,
) -> tuple[Reply, bool]:
    table = settings.presentity_table
    key = (request.username, request.domain, request.event, request.if_match)
    # Expired rows are as good as gone even before the cleaner removes them.
    row_id = await connection.fetchval(
        f"""SELECT id FROM {table}
            WHERE username = $1 AND domain = $2 AND event = $3 AND etag = $4 AND expires > $5
            FOR UPDATE""",
        *key,
        now,
    )
    if row_id is None:
        return CONDITIONAL_REQUEST_FAILED, False
    if decision.kind is PublishKind.REMOVE:
        await connection.execute(f"DELETE FROM {table} WHERE id = $1", row_id)
        return success_reply(request.if_match or "", 0, settings), True
    entity_tag = new_entity_tag()
    if decision.kind is PublishKind.REFRESH:
        # A refresh changes no state (RFC 3903 §4.2), so watchers hear nothing.
        await connection.execute(
            f"UPDATE {table} SET etag = $2, expires = $3 WHERE id = $1",
            row_id,
            entity_tag,
            now + decision.expires,
        )
        return success_reply(entity_tag, decision.expires, settings), False
    await connection.execute(
        f"UPDATE {table} SET etag = $2, expires = $3, received_time = $4, body = $5 WHERE id = $1",
        row_id,
        entity_tag,
        now + decision.expires,
        now,
        decision.body,
    )
    return success_reply(entity_tag, decision.expires, settings), True
