"""Reading XCAP documents (pres-rules) from the XCAP table, for store and notifier."""

from __future__ import annotations

import asyncpg

from presence.settings import Settings

# The XCAP table's doc_type of pres-rules documents (Kamailio's PRES_RULES).
PRES_RULES_DOC_TYPE = 2


async def load_pres_rules(
    connection: asyncpg.Connection | asyncpg.Pool, settings: Settings, username: str, domain: str
) -> str | None:
    return await connection.fetchval(
        f"""SELECT xcap FROM {settings.xcap_table}
            WHERE username = $1 AND domain = $2 AND doc_type = $3""",
        username,
        domain,
        PRES_RULES_DOC_TYPE,
    )
