"""The clean_period timer: what expired is removed, and watchers hear about it.

Every clean_period seconds exactly one store replica, the holder of a Redis lease
(another takes over within a lease if it dies), works through what expired:

- publications: their presentity's watchers get a NOTIFY in which the expired
  device's tuples show closed once; the change event is acknowledged by Kafka
  before the rows are deleted, so a crash in between repeats it, never loses it;
- subscriptions: marked terminated (reason timeout) in the same transaction that
  emits their final NOTIFY; the store deletes each when the edge reports that
  NOTIFY's outcome, or here once it is long overdue;
- registrar bindings and idempotency records past their use, and pending
  watcher decisions older than pending_watcher_days.

Expiry compares the stored absolute Unix times with this replica's wall clock
(time.time(); the replicas' clocks are assumed NTP-synchronized). Work is done in
batches of BATCH rows, each its own short transaction, so a backlog of 100,000
rows after downtime does not hold locks or starve request handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable

import asyncpg
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from presence.bus import events
from presence.bus.topics import Topics
from presence.packages.watcherinfo import Watcher
from presence.rules.authorization import watcher_identity
from presence.runtime import metrics
from presence.runtime.logs import correlated, new_correlation_id
from presence.settings import Settings
from presence.subscriptions.state import State, Trigger, transition
from presence.tables import active_watchers, batches, location, presentity, processed_requests
from presence.tables.watchers import PENDING_DUE
from presence_store.subscribe_store import watcher_info_notices

log = logging.getLogger(__name__)

BATCH = 500
# Terminated subscriptions whose final NOTIFY never reported back are deleted this
# long after they expired (Timer F is 32 s).
TERMINATED_GRACE = 300
# Idempotency records outlive any Kafka redelivery by far.
PROCESSED_REQUESTS_KEPT = 3600
# What expiry does to a live subscription, pending or active alike.
EXPIRED = transition(State.ACTIVE, Trigger.EXPIRY)

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""
_RESIGN = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class Cleaner:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        redis: Redis,
        producer: AIOKafkaProducer,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._producer = producer
        self._topics = Topics.of(settings)
        self._lease_key = self._topics.lock_prefix + "cleaner"
        self._identity = secrets.token_hex(8)
        self._renew = redis.register_script(_RENEW)
        self._resign = redis.register_script(_RESIGN)
        self.leader = False
        self._running = asyncio.Lock()

    async def run(self, stopping: asyncio.Event) -> None:
        period = self._settings.clean_period
        while not stopping.is_set():
            try:
                await self.run_once()
            except Exception:  # a timer must outlive any one failure (a dependency down)
                log.exception("cleaner: run failed; trying again in %ss", period)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), period)

    async def run_once(self) -> dict[str, int]:
        """Clean if this replica holds (or can take) the lease; counts of what went.
        The change events of one run share a correlation id ("expiry-…")."""
        async with self._running:  # the timer and the admin API's "cleanup now"
            with correlated(new_correlation_id("expiry")):
                return await self._run_once()

    async def _run_once(self) -> dict[str, int]:
        lease_ms = 3 * self._settings.clean_period * 1000
        leader = bool(await self._renew(keys=[self._lease_key], args=[self._identity, lease_ms]))
        if leader != self.leader:
            log.info("cleaner: %s", "leading" if leader else "another replica leads")
            self.leader = leader
        if not leader:
            return {}
        now = int(time.time())
        counts = {
            "publications": await self._expire_publications(now),
            "subscriptions": await self._expire_subscriptions(now),
            "bindings": await self._in_batches(
                lambda limit: location.delete_expired(self._pool, now, limit)
            ),
            "pending_watchers": await self._forget_pending_watchers(now),
            "processed_requests": await self._in_batches(
                lambda limit: processed_requests.delete_older(
                    self._pool, now - PROCESSED_REQUESTS_KEPT, limit
                )
            ),
        }
        if any(counts.values()):
            log.info("cleaner: removed %s", ", ".join(f"{v} {k}" for k, v in counts.items()))
        for kind, count in counts.items():
            metrics.CLEANER_REMOVED.labels(kind).inc(count)
        return counts

    async def _expire_publications(self, now: int) -> int:
        table = self._settings.presentity_table
        total = 0
        while True:
            rows = await presentity.expired(self._pool, table, now, BATCH)
            if not rows:
                return total
            closed: dict[tuple[str, str, str], list[str]] = defaultdict(list)
            for row in rows:
                closed[(row["username"], row["domain"], row["event"])].append(row["body"])
            sends = [
                await self._producer.send(
                    self._topics.changes,
                    events.encode(
                        events.PresentityChanged(
                            username, domain, event, "expiry", time.time(), bodies
                        )
                    ),
                    key=f"{username}@{domain}".encode(),
                )
                for (username, domain, event), bodies in closed.items()
            ]
            await asyncio.gather(*sends)
            await presentity.delete_still_expired(
                self._pool, table, [row["id"] for row in rows], now
            )
            total += len(rows)
            await asyncio.sleep(0)  # let request handling in between batches

    async def _expire_subscriptions(self, now: int) -> int:
        table = self._settings.active_watchers_table
        ended, winfo = EXPIRED, EXPIRED.effects.winfo
        assert ended.state is not None and winfo is not None and EXPIRED.effects.notify
        total = 0
        while True:
            async with self._pool.acquire() as connection, connection.transaction():
                rows = await active_watchers.end_expired(
                    connection, table, now, BATCH, ended.state, ended.reason
                )
                # Each one's own final NOTIFY, then what winfo subscribers are told.
                notices: list[events.Event] = [
                    events.WatcherChanged(
                        row["to_user"], row["to_domain"], row["event"], row["to_tag"],
                        "expiry", time.time(),
                    )
                    for row in rows
                ]  # fmt: skip
                timed_out: dict[tuple[str, str, str], list[Watcher]] = defaultdict(list)
                for row in rows:
                    timed_out[(row["to_user"], row["to_domain"], row["event"])].append(
                        Watcher(
                            row["to_tag"],
                            watcher_identity(row["from_user"], row["from_domain"]),
                            winfo.status,
                            winfo.event,
                        )
                    )
                for (username, domain, event), watchers in timed_out.items():
                    notices += watcher_info_notices(
                        username, domain, event, watchers, "expiry", time.time()
                    )
                sends = [
                    await self._producer.send(
                        self._topics.changes,
                        events.encode(notice),
                        key=notice.presentity.encode(),
                    )
                    for notice in notices
                ]
                # Committed only once the final NOTIFYs are on their way.
                await asyncio.gather(*sends)
            total += len(rows)
            if len(rows) < BATCH:
                break
            await asyncio.sleep(0)
        # Terminated long ago, final NOTIFY never reported back (Trigger.OVERDUE): the
        # rows go, nobody is told again.
        await self._delete_in_batches(table, active_watchers.ENDED_BEFORE, now - TERMINATED_GRACE)
        return total

    async def _in_batches(self, delete: Callable[[int], Awaitable[int]]) -> int:
        """Call delete(BATCH) (it deletes up to BATCH rows and says how many) until
        fewer go; how many went in all."""
        total = 0
        while True:
            deleted = await delete(BATCH)
            total += deleted
            if deleted < BATCH:
                return total
            await asyncio.sleep(0)

    async def _delete_in_batches(self, table: str, condition: str, bound: int) -> int:
        return await self._in_batches(
            lambda limit: batches.delete_some(self._pool, table, condition, bound, limit)
        )

    async def _forget_pending_watchers(self, now: int) -> int:
        """Pending decisions the user never made, after pending_watcher_days; a
        watcher that subscribes again is recorded (and shown to winfo) anew."""
        days = self._settings.pending_watcher_days
        if not days:
            return 0
        return await self._delete_in_batches(
            self._settings.watchers_table,
            PENDING_DUE,
            now - days * 86400,
        )

    async def resign(self) -> None:
        """Give the lease up at shutdown, so another replica takes over at once."""
        with contextlib.suppress(OSError, ConnectionError):
            await self._resign(keys=[self._lease_key], args=[self._identity])
