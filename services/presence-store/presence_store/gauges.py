"""The presence tables' gauges (presence.runtime.metrics): subscriptions by event package and
status, live publications by event package. Read from the database before a scrape,
at most every REFRESH_EVERY seconds (two grouped counts), so that frequent scrapes
or several store replicas do not load PostgreSQL. The counts read every row (about
80 ms per 100,000 rows of each table on a busy 2-core machine), so the pause also
grows with what the last count took: they take at most MAX_SHARE of the time, and
with millions of rows the gauges are older instead of dearer. Every store replica
reports the same totals: aggregate them with max(), not sum()."""

from __future__ import annotations

import time

import asyncpg

from presence.runtime import metrics
from presence.settings import Settings
from presence.tables import active_watchers, presentity

REFRESH_EVERY = 5.0
MAX_SHARE = 0.01


def refresh_pause(count_seconds: float) -> float:
    """Seconds until the next count, given what the last one took."""
    return max(REFRESH_EVERY, count_seconds / MAX_SHARE)


def watch_tables(settings: Settings, pool: asyncpg.Pool) -> None:
    refreshed_at = -REFRESH_EVERY
    pause = REFRESH_EVERY

    async def presence_tables() -> None:
        nonlocal refreshed_at, pause
        if time.monotonic() - refreshed_at < pause:
            return
        refreshed_at = time.monotonic()
        now = int(time.time())
        subscriptions = await active_watchers.counts_by_event_and_status(
            pool, settings.active_watchers_table, now
        )
        publications = await presentity.live_counts(pool, settings.presentity_table, now)
        pause = refresh_pause(time.monotonic() - refreshed_at)
        metrics.SUBSCRIPTIONS.clear()
        for row in subscriptions:
            metrics.SUBSCRIPTIONS.labels(row["event"], row["status"]).set(row["n"])
        metrics.PUBLICATIONS.clear()
        for row in publications:
            metrics.PUBLICATIONS.labels(row["event"]).set(row["n"])

    metrics.on_scrape(presence_tables)
