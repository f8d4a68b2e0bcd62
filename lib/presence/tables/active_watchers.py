"""The active_watchers table: one row per subscription dialog (I/O).

presence-store owns the rows' existence and state: it inserts, refreshes, re-states,
expires and deletes them. The NOTIFY sequence of a dialog (local_cseq and version) is
allocated by whoever builds the NOTIFY, the store (the one a SUBSCRIBE calls for) or
the notifier (every later one), always through `allocate_notifies`, so that a
dialog's CSeqs only grow and a higher one always carries a newer-or-equal state.
`table` is the configured name (Settings.active_watchers_table).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg

from presence.packages.watcherinfo import Watcher, watcher_event
from presence.rules.authorization import watcher_identity
from presence.subscriptions.expiry import seconds_left
from presence.subscriptions.notify import Subscription
from presence.subscriptions.state import Reason, State

Connection = asyncpg.Connection | asyncpg.Pool

# The columns a NOTIFY is built from (presence.subscriptions.notify.Subscription).
COLUMNS = ", ".join(
    [
        "id", "to_user", "to_domain", "event", "event_id", "to_tag", "from_tag", "callid",
        "local_cseq", "version", "contact", "record_route", "expires", "status", "reason",
        "local_uri", "remote_uri", "from_user", "from_domain", "flow", "edge_id",
    ]
)  # fmt: skip
# Terminated subscriptions whose final NOTIFY never reported back, expired before $1:
# a condition for the expiry timer's batched deletes.
ENDED_BEFORE = "status = 'terminated' AND expires <= $1"


async def watched(
    connection: Connection,
    table: str,
    domain: str,
    username: str,
    event: str,
) -> bool:
    """Whether any subscription not yet terminated watches `event` of the presentity:
    pending ones count (they are sent NOTIFYs without a body)."""
    return bool(
        await connection.fetchval(
            f"""SELECT EXISTS (SELECT 1 FROM {table}
                               WHERE to_domain = $1 AND to_user = $2 AND event = $3
                                 AND status <> 'terminated')""",
            domain,
            username,
            event,
        )
    )


async def count_not_terminated(
    connection: Connection, table: str, username: str, domain: str, event: str
) -> int:
    """The presentity's subscriptions to `event` not yet terminated (those a change
    of its state is sent to)."""
    return await connection.fetchval(
        f"""SELECT count(*) FROM {table}
            WHERE to_domain = $1 AND to_user = $2 AND event = $3
              AND status <> 'terminated'""",
        domain,
        username,
        event,
    )


async def count_live_of_watcher(
    connection: Connection, table: str, user: str, domain: str, now: int
) -> int:
    """The live subscriptions a watcher holds, to every presentity."""
    return await connection.fetchval(
        f"""SELECT count(*) FROM {table}
            WHERE from_domain = $1 AND from_user = $2 AND status <> 'terminated'
              AND expires > $3""",
        domain,
        user,
        now,
    )


async def count_live_of_presentity(
    connection: Connection, table: str, username: str, domain: str, event: str, now: int
) -> int:
    """The live subscriptions to a presentity's event package."""
    return await connection.fetchval(
        f"""SELECT count(*) FROM {table}
            WHERE to_domain = $1 AND to_user = $2 AND event = $3 AND status <> 'terminated'
              AND expires > $4""",
        domain,
        username,
        event,
        now,
    )


@dataclass(frozen=True)
class NewDialog:
    """A dialog a SUBSCRIBE creates, as its row starts."""

    to_user: str
    to_domain: str
    from_user: str  # the watcher's identity (authenticated, else From)
    from_domain: str
    event: str
    event_id: str | None
    to_tag: str
    from_tag: str
    callid: str
    remote_cseq: int
    contact: str
    record_route: str | None
    expires: int
    status: State
    local_uri: str
    remote_uri: str
    flow: str
    edge_id: str


async def insert(connection: asyncpg.Connection, table: str, dialog: NewDialog) -> None:
    """A new dialog's row; no NOTIFY has been allocated yet (CSeq and version 0)."""
    await connection.execute(
        f"""INSERT INTO {table} (
                to_user, to_domain, from_user, from_domain, event, event_id, to_tag, from_tag,
                callid, remote_cseq, local_cseq, contact, record_route, expires, status,
                version, local_uri, remote_uri, flow, edge_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $12, $13, $14, 0,
                    $15, $16, $17, $18)""",
        dialog.to_user,
        dialog.to_domain,
        dialog.from_user,
        dialog.from_domain,
        dialog.event,
        dialog.event_id,
        dialog.to_tag,
        dialog.from_tag,
        dialog.callid,
        dialog.remote_cseq,
        dialog.contact,
        dialog.record_route,
        dialog.expires,
        dialog.status.value,
        dialog.local_uri,
        dialog.remote_uri,
        dialog.flow,
        dialog.edge_id,
    )


async def unexpired_for_update(
    connection: asyncpg.Connection, table: str, to_tag: str, now: int
) -> asyncpg.Record | None:
    """The dialog named by `to_tag` unless it expired, locked until the transaction ends:
    id, callid, from_tag, remote_cseq, from_user, from_domain, status, reason."""
    return await connection.fetchrow(
        f"""SELECT id, callid, from_tag, remote_cseq, from_user, from_domain, status, reason
            FROM {table} WHERE to_tag = $1 AND expires > $2 FOR UPDATE""",
        to_tag,
        now,
    )


async def refresh(
    connection: asyncpg.Connection,
    table: str,
    id: int,
    *,
    remote_cseq: int,
    expires: int,
    contact: str | None,
    flow: str,
    edge_id: str,
) -> None:
    """An in-dialog SUBSCRIBE's new expiry, CSeq and the way back to the watcher (the
    contact only when it sent one)."""
    await connection.execute(
        f"""UPDATE {table} SET remote_cseq = $2, expires = $3, contact = COALESCE($4, contact),
                flow = $5, edge_id = $6
            WHERE id = $1""",
        id,
        remote_cseq,
        expires,
        contact,
        flow,
        edge_id,
    )


async def live_for_update(
    connection: asyncpg.Connection,
    table: str,
    username: str,
    domain: str,
    packages: list[str],
    now: int,
) -> list[asyncpg.Record]:
    """The presentity's live subscriptions to `packages`, locked until the transaction
    ends: id, to_tag, from_user, from_domain, status, event."""
    return await connection.fetch(
        f"""SELECT id, to_tag, from_user, from_domain, status, event FROM {table}
            WHERE to_domain = $1 AND to_user = $2 AND status <> 'terminated'
              AND expires > $3 AND event = ANY($4::text[]) FOR UPDATE""",
        domain,
        username,
        now,
        packages,
    )


async def set_state(
    connection: asyncpg.Connection,
    table: str,
    id: int,
    state: State,
    reason: Reason | None,
    watcher_event: str | None = None,
) -> None:
    """A subscription's new state and reason; `watcher_event` ("approved"), when given,
    records how it got there for winfo's full state."""
    await connection.execute(
        f"""UPDATE {table}
            SET status = $2, reason = $3, watcher_event = COALESCE($4, watcher_event)
            WHERE id = $1""",
        id,
        state.value,
        None if reason is None else reason.value,
        watcher_event,
    )


async def presentity_of(connection: Connection, table: str, to_tag: str) -> tuple[str, str] | None:
    """The (username, domain) the dialog named by `to_tag` watches; None when it is gone."""
    row = await connection.fetchrow(
        f"SELECT to_user, to_domain FROM {table} WHERE to_tag = $1", to_tag
    )
    return None if row is None else (row["to_user"], row["to_domain"])


async def end_live(
    connection: asyncpg.Connection, table: str, to_tag: str, state: State, reason: Reason | None
) -> asyncpg.Record | None:
    """The dialog's new (terminated) state and reason unless it was terminated already:
    its event, from_user and from_domain; None when it was gone or ended."""
    return await connection.fetchrow(
        f"""UPDATE {table} SET status = $2, reason = $3
            WHERE to_tag = $1 AND status <> 'terminated'
            RETURNING event, from_user, from_domain""",
        to_tag,
        state.value,
        None if reason is None else reason.value,
    )


async def end_expired(
    connection: asyncpg.Connection,
    table: str,
    now: int,
    limit: int,
    state: State,
    reason: Reason | None,
) -> list[asyncpg.Record]:
    """Up to `limit` subscriptions expired by `now` and not yet terminated, given
    `state` and `reason`, the oldest first: to_user, to_domain, event, to_tag,
    from_user, from_domain of each."""
    return await connection.fetch(
        f"""UPDATE {table} SET status = $3, reason = $4
            WHERE id IN (SELECT id FROM {table}
                         WHERE expires <= $1 AND status <> 'terminated'
                         ORDER BY expires LIMIT $2)
            RETURNING to_user, to_domain, event, to_tag, from_user, from_domain""",
        now,
        limit,
        state.value,
        None if reason is None else reason.value,
    )


async def delete(connection: asyncpg.Connection, table: str, to_tag: str) -> asyncpg.Record | None:
    """Delete the dialog; its from_user, from_domain and status, None when it was gone."""
    return await connection.fetchrow(
        f"DELETE FROM {table} WHERE to_tag = $1 RETURNING from_user, from_domain, status",
        to_tag,
    )


@dataclass(frozen=True)
class OneDialog:
    """The dialog named by its To-tag, whatever its state (its own NOTIFY)."""

    to_tag: str


@dataclass(frozen=True)
class PresentityPage:
    """The presentity's subscriptions to `event` not yet terminated, after `after_id`
    in id order, `limit` of them (a fan-out page)."""

    username: str
    domain: str
    event: str
    after_id: int
    limit: int


async def allocate_notifies(
    connection: asyncpg.Connection, table: str, chosen: OneDialog | PresentityPage
) -> list[Subscription]:
    """The next CSeq and version of each chosen subscription, with its row, by id;
    none for a dialog that is gone. Allocating locks the rows until the transaction
    ends, so another allocation for the same dialogs waits, then reads a state at
    least as new and allocates higher CSeqs: a dialog's CSeqs only grow, and a higher
    one always carries a newer-or-equal state (which lets the edge drop stragglers)."""
    allocate = f"UPDATE {table} SET local_cseq = local_cseq + 1, version = version + 1"
    if isinstance(chosen, OneDialog):
        rows = await connection.fetch(
            f"{allocate} WHERE to_tag = $1 RETURNING {COLUMNS}", chosen.to_tag
        )
    else:
        rows = await connection.fetch(
            f"""{allocate}
                WHERE id IN (SELECT id FROM {table}
                             WHERE to_domain = $1 AND to_user = $2 AND event = $3
                               AND status <> 'terminated'
                               AND id > $4 ORDER BY id LIMIT $5)
                RETURNING {COLUMNS}""",
            chosen.domain,
            chosen.username,
            chosen.event,
            chosen.after_id,
            chosen.limit,
        )
    return [Subscription(**row) for row in sorted(rows, key=lambda r: r["id"])]


async def watcher_list(
    connection: asyncpg.Connection, table: str, username: str, domain: str, package: str
) -> list[Watcher]:
    """The presentity's live subscriptions to `package`, oldest first, as watcher
    information shows them (RFC 3857: status, how it got there, seconds left)."""
    now = int(time.time())
    rows = await connection.fetch(
        f"""SELECT to_tag, from_user, from_domain, status, reason, watcher_event, expires
            FROM {table}
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


async def page_of_presentity(
    connection: Connection,
    table: str,
    username: str,
    domain: str,
    event: str,
    limit: int,
    offset: int,
) -> list[asyncpg.Record]:
    """The presentity's subscriptions to `event`, in every state, by id (an operator's
    listing): to_tag, from_user, from_domain, remote_uri, status, reason, expires,
    contact, flow, edge_id, local_cseq."""
    return await connection.fetch(
        f"""SELECT to_tag, from_user, from_domain, remote_uri, status, reason, expires,
                   contact, flow, edge_id, local_cseq
            FROM {table}
            WHERE to_domain = $1 AND to_user = $2 AND event = $3
            ORDER BY id LIMIT $4 OFFSET $5""",
        domain,
        username,
        event,
        limit,
        offset,
    )


async def page_of_watcher(
    connection: Connection, table: str, user: str, domain: str, limit: int, offset: int
) -> list[asyncpg.Record]:
    """A watcher's subscriptions, in every state, by id (an operator's listing; no
    index serves it, operators ask it rarely): to_user, to_domain, event, to_tag,
    status, reason, expires, edge_id."""
    return await connection.fetch(
        f"""SELECT to_user, to_domain, event, to_tag, status, reason, expires, edge_id
            FROM {table}
            WHERE from_user = $1 AND from_domain = $2
            ORDER BY id LIMIT $3 OFFSET $4""",
        user,
        domain,
        limit,
        offset,
    )


async def counts_by_event_and_status(
    connection: Connection, table: str, now: int
) -> list[asyncpg.Record]:
    """How many subscriptions each (event, status) has: the live ones, and the
    terminated ones whose final NOTIFY is still out (event, status, n)."""
    return await connection.fetch(
        f"""SELECT event, status, count(*) AS n FROM {table}
            WHERE expires > $1 OR status = 'terminated' GROUP BY event, status""",
        now,
    )
