"""The credentials table: SIP digest users, one row per user of a realm (its domain),
with the HA1 of each algorithm and never the password (RFC 3261 §22, RFC 8760). Its
name is fixed (schema/0008_credentials.sql)."""

from __future__ import annotations

import asyncpg

TABLE = "credentials"


async def store_ha1(
    connection: asyncpg.Connection | asyncpg.Pool,
    username: str,
    realm: str,
    ha1_md5: str,
    ha1_sha256: str,
    updated_at: int,
) -> bool:
    """Add the user or replace their HA1s; True when the user is new."""
    created = await connection.fetchval(
        f"""INSERT INTO {TABLE} (username, domain, ha1_md5, ha1_sha256, updated_at)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (username, domain) DO UPDATE
                SET ha1_md5 = EXCLUDED.ha1_md5, ha1_sha256 = EXCLUDED.ha1_sha256,
                    updated_at = EXCLUDED.updated_at
            RETURNING (xmax = 0)""",
        username,
        realm,
        ha1_md5,
        ha1_sha256,
        updated_at,
    )
    return bool(created)


async def remove(connection: asyncpg.Connection | asyncpg.Pool, username: str, realm: str) -> bool:
    """Remove the user; False when there was none."""
    status = await connection.execute(
        f"DELETE FROM {TABLE} WHERE username = $1 AND domain = $2", username, realm
    )
    return status != "DELETE 0"


async def page(
    connection: asyncpg.Connection | asyncpg.Pool, realm: str | None, limit: int, offset: int
) -> list[tuple[str, str, int]]:
    """(username, domain, updated_at) in name order (of one realm, or all), a page at a
    time."""
    rows = await connection.fetch(
        f"""SELECT username, domain, updated_at FROM {TABLE}
            WHERE $1::text IS NULL OR domain = $1
            ORDER BY domain, username LIMIT $2 OFFSET $3""",
        realm,
        limit,
        offset,
    )
    return [(row["username"], row["domain"], row["updated_at"]) for row in rows]


async def load_ha1(
    connection: asyncpg.Connection | asyncpg.Pool, username: str, realm: str
) -> tuple[str, str] | None:
    """The user's (MD5, SHA-256) HA1s; None when there is no such user."""
    row = await connection.fetchrow(
        f"SELECT ha1_md5, ha1_sha256 FROM {TABLE} WHERE username = $1 AND domain = $2",
        username,
        realm,
    )
    return None if row is None else (row["ha1_md5"], row["ha1_sha256"])
