"""Applying a PUBLISH to the presentity table, inside the caller's transaction."""

from __future__ import annotations

import asyncpg

from presence.events import PublishRequest
from presence.settings import Settings
from presence_store.publication import (
    CONDITIONAL_REQUEST_FAILED,
    Accepted,
    PublishKind,
    Reply,
    classify,
    new_entity_tag,
    success_reply,
)


async def apply_publish(
    connection: asyncpg.Connection, request: PublishRequest, settings: Settings, now: int
) -> tuple[Reply, bool]:
    """The reply, and whether the presentity's state changed (watchers need NOTIFYs)."""
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
