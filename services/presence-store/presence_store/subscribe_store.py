"""Applying a SUBSCRIBE to active_watchers (and watchers), in the caller's transaction."""

from __future__ import annotations

import asyncpg

from presence.events import SubscribeRequest, WatcherChanged
from presence.settings import Settings
from presence.sip.message import parse_uri
from presence_store.outcome import Outcome, Reply
from presence_store.subscription import grant_expires, initial_status, new_to_tag


async def apply_subscribe(
    connection: asyncpg.Connection, request: SubscribeRequest, settings: Settings, now: int
) -> Outcome:
    granted = grant_expires(request, settings)
    if isinstance(granted, Reply):
        return Outcome(granted)
    if request.to_tag is None:
        to_tag = await _create(connection, request, settings, now, granted)
    else:
        refused = await _refresh(connection, request, settings, now, granted)
        if refused is not None:
            return Outcome(refused)
        to_tag = request.to_tag
    reply = Reply(200, "OK", [("Expires", str(granted)), ("Contact", f"<{settings.contact_uri}>")])
    # The NOTIFY that follows every accepted SUBSCRIBE (RFC 6665 §4.2.1.1); with
    # Expires 0 it is the final one, carrying the state (a fetch, §4.4.3).
    notice = WatcherChanged(
        username=request.username,
        domain=request.domain,
        event=request.event,
        subscription=to_tag,
        cause=request.request_id,
        received_at=request.received_at,
    )
    return Outcome(reply, [notice], to_tag=to_tag)


async def _create(
    connection: asyncpg.Connection,
    request: SubscribeRequest,
    settings: Settings,
    now: int,
    granted: int,
) -> str:
    watcher = parse_uri(request.from_uri)
    to_tag = new_to_tag(settings)
    status = initial_status(settings)
    await connection.execute(
        f"""INSERT INTO {settings.active_watchers_table} (
                to_user, to_domain, from_user, from_domain, event, event_id, to_tag, from_tag,
                callid, remote_cseq, local_cseq, contact, record_route, expires, status,
                version, local_uri, remote_uri, flow, edge_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $12, $13, $14, 0,
                    $15, $16, $17, $18)""",
        request.username,
        request.domain,
        watcher.user or "",
        watcher.host.lower(),
        request.event,
        request.event_id,
        to_tag,
        request.from_tag,
        request.call_id,
        request.cseq,
        request.contact,
        ", ".join(request.record_route) or None,
        now + granted,
        status,
        request.to_uri,
        request.from_uri,
        request.flow,
        request.edge_id,
    )
    await connection.execute(
        f"""INSERT INTO {settings.watchers_table}
                (p_user, p_domain, w_user, w_domain, subs_status, inserted_time)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (p_user, p_domain, w_user, w_domain) DO NOTHING""",
        request.username,
        request.domain,
        watcher.user or "",
        watcher.host.lower(),
        status,
        now,
    )
    return to_tag


async def _refresh(
    connection: asyncpg.Connection,
    request: SubscribeRequest,
    settings: Settings,
    now: int,
    granted: int,
) -> Reply | None:
    """Refresh or end an existing dialog; a Reply when the request is refused."""
    table = settings.active_watchers_table
    row = await connection.fetchrow(
        f"""SELECT id, callid, from_tag, remote_cseq FROM {table}
            WHERE to_tag = $1 AND expires > $2 FOR UPDATE""",
        request.to_tag,
        now,
    )
    if row is None or (row["callid"], row["from_tag"]) != (request.call_id, request.from_tag):
        return Reply(481, "Subscription Does Not Exist")
    if request.cseq <= row["remote_cseq"]:
        # RFC 3261 §12.2.2: a lower (or repeated) CSeq within a dialog is refused.
        return Reply(500, "CSeq Out Of Order")
    await connection.execute(
        f"""UPDATE {table} SET remote_cseq = $2, expires = $3, contact = COALESCE($4, contact),
                flow = $5, edge_id = $6
            WHERE id = $1""",
        row["id"],
        request.cseq,
        now + granted,
        request.contact,
        request.flow,
        request.edge_id,
    )
    return None
