"""The presence tables' gauges (presence.metrics): subscriptions by event package and
status, live publications by event package. Read from the database before a scrape,
at most every REFRESH_EVERY seconds (two grouped counts), so that frequent scrapes
or several store replicas do not load PostgreSQL. Every store replica reports the
same totals: aggregate them with max(), not sum()."""

from __future__ import annotations

import time

import asyncpg

from presence import metrics
from presence.settings import Settings

REFRESH_EVERY = 5.0


def watch_tables(settings: Settings, pool: asyncpg.Pool) -> None:
    refreshed_at = -REFRESH_EVERY

    async def presence_tables() -> None:
        nonlocal refreshed_at
        if time.monotonic() - refreshed_at < REFRESH_EVERY:
            return
        refreshed_at = time.monotonic()
        now = int(time.time())
        subscriptions = await pool.fetch(
            f"""SELECT event, status, count(*) AS n FROM {settings.active_watchers_table}
                WHERE expires > $1 OR status = 'terminated' GROUP BY event, status""",
            now,
        )
        publications = await pool.fetch(
            f"""SELECT event, count(*) AS n FROM {settings.presentity_table}
                WHERE expires > $1 GROUP BY event""",
            now,
        )
        metrics.SUBSCRIPTIONS.clear()
        for row in subscriptions:
            metrics.SUBSCRIPTIONS.labels(row["event"], row["status"]).set(row["n"])
        metrics.PUBLICATIONS.clear()
        for row in publications:
            metrics.PUBLICATIONS.labels(row["event"]).set(row["n"])

    metrics.on_scrape(presence_tables)
