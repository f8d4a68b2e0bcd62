"""Reading a presentity's document of one event package from the presentity table
(its publications as the package combines them, presence.packages.registry), for the
notifier (NOTIFY bodies) and the store (caps, the sphere that pres-rules may test)."""

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
