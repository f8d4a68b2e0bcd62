"""The presentity table (one row per publication, RFC 3903): a presentity's document
of one event package as the package combines its publications (presence.packages.
registry), for the notifier (NOTIFY bodies) and the store (caps, the sphere that
pres-rules may test); the store's writes (PUBLISH, the cleaner) and the operator's
views (admin API, gauges). `table` is the configured PRESENCE_PRESENTITY_TABLE."""

from __future__ import annotations

import time
from collections.abc import Sequence

import asyncpg

from presence.packages.registry import PACKAGES
from presence.pidf.aggregation import Publication
from presence.pidf.document import current_sphere
from presence.settings import Settings


async def load_document(
    connection: asyncpg.Connection,
    settings: Settings,
    username: str,
    domain: str,
    event: str,
    closed: Sequence[str] = (),
) -> bytes:
    """The live publications as the package combines them, with the `closed` bodies
    (publications that just ended) shown ended once where the package can say so."""
    rows = await connection.fetch(
        f"""SELECT etag, received_time, body, device FROM {settings.presentity_table}
            WHERE username = $1 AND domain = $2 AND event = $3 AND expires > $4
            ORDER BY received_time, id""",
        username,
        domain,
        event,
        int(time.time()),
    )
    publications = [
        Publication(r["etag"], r["received_time"], r["body"], r["device"]) for r in rows
    ]
    ended = [Publication("", 0, body) for body in closed]
    return PACKAGES[event].state(
        f"sip:{username}@{domain}", publications, ended, settings.document_policy
    )


def needs_sphere(rules: str | None) -> bool:
    """Whether judging with these rules needs the presentity's sphere (a cheap test
    that spares the document read for the many rule sets without one)."""
    return rules is not None and "sphere" in rules


async def load_sphere(
    connection: asyncpg.Connection, settings: Settings, username: str, domain: str
) -> str | None:
    document = await load_document(connection, settings, username, domain, "presence")
    return current_sphere(document, max_bytes=settings.max_document_bytes)


async def count_live(
    connection: asyncpg.Connection,
    table: str,
    username: str,
    domain: str,
    event: str,
    now: int,
) -> int:
    """The presentity's publications of `event` that have not expired."""
    return await connection.fetchval(
        f"""SELECT count(*) FROM {table}
            WHERE username = $1 AND domain = $2 AND event = $3 AND expires > $4""",
        username,
        domain,
        event,
        now,
    )


async def delete_same_device(
    connection: asyncpg.Connection,
    table: str,
    username: str,
    domain: str,
    event: str,
    now: int,
    device: str,
    marks: list[str],
) -> None:
    """Remove the live publications of `device` that share a mark (a tuple id or a
    contact) with `marks`."""
    await connection.execute(
        f"""DELETE FROM {table}
            WHERE username = $1 AND domain = $2 AND event = $3 AND expires > $4
              AND device = $5 AND device_marks && $6::text[]""",
        username,
        domain,
        event,
        now,
        device,
        marks,
    )


async def insert(
    connection: asyncpg.Connection,
    table: str,
    username: str,
    domain: str,
    event: str,
    entity_tag: str,
    expires: int,
    received_time: int,
    body: str,
    marks: list[str],
    device: str,
) -> None:
    await connection.execute(
        f"""INSERT INTO {table}
                (username, domain, event, etag, expires, received_time, body, device_marks,
                 device)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        username,
        domain,
        event,
        entity_tag,
        expires,
        received_time,
        body,
        marks,
        device,
    )


async def lock_matching(
    connection: asyncpg.Connection,
    table: str,
    username: str,
    domain: str,
    event: str,
    entity_tag: str | None,
    now: int,
) -> int | None:
    """The id of the live publication `entity_tag` names, locked until the transaction
    ends; None when none. The tag a refresh or modify replaced still names it until
    prev_etag_expires."""
    return await connection.fetchval(
        f"""SELECT id FROM {table}
            WHERE username = $1 AND domain = $2 AND event = $3 AND expires > $5
              AND (etag = $4 OR (prev_etag = $4 AND prev_etag_expires > $5))
            FOR UPDATE""",
        username,
        domain,
        event,
        entity_tag,
        now,
    )


async def delete_returning_body(connection: asyncpg.Connection, table: str, row_id: int) -> str:
    return await connection.fetchval(f"DELETE FROM {table} WHERE id = $1 RETURNING body", row_id)


async def refresh(
    connection: asyncpg.Connection,
    table: str,
    row_id: int,
    entity_tag: str,
    expires: int,
    previous_tag_until: int,
) -> None:
    """A new entity tag and expiry; the old tag is kept as prev_etag."""
    await connection.execute(
        f"""UPDATE {table} SET prev_etag = etag, prev_etag_expires = $4,
                etag = $2, expires = $3
            WHERE id = $1""",
        row_id,
        entity_tag,
        expires,
        previous_tag_until,
    )


async def modify(
    connection: asyncpg.Connection,
    table: str,
    row_id: int,
    entity_tag: str,
    expires: int,
    received_time: int,
    body: str,
    previous_tag_until: int,
    marks: list[str],
) -> None:
    """A new document, entity tag and expiry; the old tag is kept as prev_etag."""
    await connection.execute(
        f"""UPDATE {table} SET prev_etag = etag, prev_etag_expires = $6,
                etag = $2, expires = $3, received_time = $4, body = $5, device_marks = $7
            WHERE id = $1""",
        row_id,
        entity_tag,
        expires,
        received_time,
        body,
        previous_tag_until,
        marks,
    )


async def expired(
    connection: asyncpg.Connection | asyncpg.Pool, table: str, now: int, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` expired publications, oldest expiry first: id, username, domain,
    event, body."""
    return await connection.fetch(
        f"""SELECT id, username, domain, event, body FROM {table}
            WHERE expires <= $1 ORDER BY expires LIMIT $2""",
        now,
        limit,
    )


async def delete_still_expired(
    connection: asyncpg.Connection | asyncpg.Pool, table: str, ids: list[int], now: int
) -> None:
    """Delete these publications, those only that are still expired (a refresh may
    have raced in)."""
    await connection.execute(
        f"DELETE FROM {table} WHERE id = ANY($1::bigint[]) AND expires <= $2", ids, now
    )


async def live_counts(
    connection: asyncpg.Connection | asyncpg.Pool, table: str, now: int
) -> list[asyncpg.Record]:
    """The live publications of each event package: event, n."""
    return await connection.fetch(
        f"""SELECT event, count(*) AS n FROM {table}
            WHERE expires > $1 GROUP BY event""",
        now,
    )


async def publications(
    connection: asyncpg.Connection | asyncpg.Pool,
    table: str,
    username: str,
    domain: str,
    event: str,
) -> list[asyncpg.Record]:
    """The presentity's publications of `event`, expired or not, oldest first: etag,
    expires, received_time, device_marks, device."""
    return await connection.fetch(
        f"""SELECT etag, expires, received_time, device_marks, device FROM {table}
            WHERE username = $1 AND domain = $2 AND event = $3
            ORDER BY received_time, id""",
        username,
        domain,
        event,
    )


async def page_presentities(
    connection: asyncpg.Connection | asyncpg.Pool,
    table: str,
    active_watchers_table: str,
    domain: str | None,
    event: str | None,
    limit: int,
    offset: int,
) -> list[asyncpg.Record]:
    """One page of the presentities with publications, by domain, user and event
    (optionally of one domain and one event): username, domain, event, publications
    (their number), expires (the latest), watchers (the subscriptions not terminated)."""
    return await connection.fetch(
        f"""SELECT p.username, p.domain, p.event, p.publications, p.expires,
                   (SELECT count(*) FROM {active_watchers_table} w
                    WHERE w.to_domain = p.domain AND w.to_user = p.username
                      AND w.event = p.event AND w.status <> 'terminated') AS watchers
            FROM (SELECT username, domain, event, count(*) AS publications,
                         max(expires) AS expires
                  FROM {table}
                  WHERE ($1::text IS NULL OR domain = $1)
                    AND ($2::text IS NULL OR event = $2)
                  GROUP BY domain, username, event
                  ORDER BY domain, username, event
                  LIMIT $3 OFFSET $4) p
            ORDER BY p.domain, p.username, p.event""",
        domain,
        event,
        limit,
        offset,
    )
