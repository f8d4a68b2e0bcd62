"""The location table: the registrar's bindings of contacts to an address-of-record
(RFC 3261 §10.3), and the instance ids (RFC 5626) that tie a PUBLISH to its device.
Its name is fixed (schema/0003_notices_and_location.sql)."""

from __future__ import annotations

import asyncpg

from presence.tables.batches import delete_some

TABLE = "location"


async def bindings(
    connection: asyncpg.Connection, username: str, domain: str
) -> list[asyncpg.Record]:
    """Every binding of the address-of-record, expired or not: contact, callid, cseq,
    expires."""
    return await connection.fetch(
        f"""SELECT contact, callid, cseq, expires FROM {TABLE}
            WHERE username = $1 AND domain = $2""",
        username,
        domain,
    )


async def live_bindings(
    connection: asyncpg.Connection, username: str, domain: str, now: int
) -> list[asyncpg.Record]:
    """The bindings that have not expired, oldest first: contact, expires."""
    return await connection.fetch(
        f"""SELECT contact, expires FROM {TABLE}
            WHERE username = $1 AND domain = $2 AND expires > $3 ORDER BY id""",
        username,
        domain,
        now,
    )


async def live_instances(
    connection: asyncpg.Connection, username: str, domain: str, received: str, now: int
) -> list[str | None]:
    """The instance ids (None: registered without one) of the live bindings that came
    over the flow `received`."""
    rows = await connection.fetch(
        f"""SELECT instance FROM {TABLE}
            WHERE username = $1 AND domain = $2 AND received = $3 AND expires > $4""",
        username,
        domain,
        received,
        now,
    )
    return [row["instance"] for row in rows]


async def remove_binding(
    connection: asyncpg.Connection, username: str, domain: str, contact: str
) -> None:
    await connection.execute(
        f"DELETE FROM {TABLE} WHERE username = $1 AND domain = $2 AND contact = $3",
        username,
        domain,
        contact,
    )


async def store_binding(
    connection: asyncpg.Connection,
    username: str,
    domain: str,
    contact: str,
    expires: int,
    callid: str,
    cseq: int,
    q: float | None,
    received: str,
    instance: str | None,
) -> None:
    """Add the binding, or update the one of the same contact."""
    await connection.execute(
        f"""INSERT INTO {TABLE}
                (username, domain, contact, expires, callid, cseq, q, received, instance)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (username, domain, contact) DO UPDATE SET
                expires = EXCLUDED.expires, callid = EXCLUDED.callid, cseq = EXCLUDED.cseq,
                q = EXCLUDED.q, received = EXCLUDED.received, instance = EXCLUDED.instance""",
        username,
        domain,
        contact,
        expires,
        callid,
        cseq,
        q,
        received,
        instance,
    )


async def delete_expired(
    connection: asyncpg.Connection | asyncpg.Pool, now: int, limit: int
) -> int:
    """Delete up to `limit` expired bindings; how many went."""
    return await delete_some(connection, TABLE, "expires <= $1", now, limit)
