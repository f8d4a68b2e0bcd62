"""The XCAP table (PRESENCE_XCAP_TABLE): each user's XCAP documents (pres-rules,
resource-lists), one per doc_type; read by store and notifier, written by the store's
XCAP server."""

from __future__ import annotations

import asyncpg

from presence.settings import Settings
from presence.xcap.usages import PRES_RULES

# The XCAP table's doc_type of pres-rules documents (Kamailio's PRES_RULES).
PRES_RULES_DOC_TYPE = PRES_RULES.doc_type


async def load_pres_rules(
    connection: asyncpg.Connection | asyncpg.Pool, settings: Settings, username: str, domain: str
) -> str | None:
    return await load_document(connection, settings, username, domain, PRES_RULES_DOC_TYPE)


async def load_document(
    connection: asyncpg.Connection | asyncpg.Pool,
    settings: Settings,
    username: str,
    domain: str,
    doc_type: int,
) -> str | None:
    """The user's document of one doc_type (presence.xcap.usages), None when none."""
    return await connection.fetchval(
        f"""SELECT xcap FROM {settings.xcap_table}
            WHERE username = $1 AND domain = $2 AND doc_type = $3""",
        username,
        domain,
        doc_type,
    )


async def store_document(
    connection: asyncpg.Connection,
    table: str,
    username: str,
    domain: str,
    doc_type: int,
    document: str | None,
) -> None:
    """Replace the user's document of one doc_type; None deletes it."""
    await connection.execute(
        f"DELETE FROM {table} WHERE username = $1 AND domain = $2 AND doc_type = $3",
        username,
        domain,
        doc_type,
    )
    if document is not None:
        await connection.execute(
            f"""INSERT INTO {table} (username, domain, xcap, doc_type)
                VALUES ($1, $2, $3, $4)""",
            username,
            domain,
            document,
            doc_type,
        )
