"""Which edge inboxes exist, so that a NOTIFY for a dialog whose edge is gone (its id
no longer runs: scaled down, renamed, or the dialog was made against another
deployment's broker) is answered at once instead of holding the notifier's batch.

Sending to a topic that does not exist makes aiokafka wait for it to appear for
request_timeout_ms (10 s) before it gives up; every NOTIFY of such a dialog would
cost the whole batch that long. The producer's metadata already lists the inboxes
it has sent to; a topic it does not know is looked up in the broker's full
metadata, and a missing one is remembered as missing for a few seconds (an edge
creates its inbox before it accepts a SIP request, so no dialog names an edge whose
inbox is yet to come).
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

# How long a topic found missing is taken as missing without asking the broker again.
MISSING_FOR_SECONDS = 5.0
# The longest wait for the broker's metadata; beyond it the send decides as before.
LOOKUP_TIMEOUT = 2.0


class EdgeInboxes:
    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._missing: dict[str, float] = {}  # topic -> when it was found missing
        self._lookup: asyncio.Task[set[str]] | None = None

    async def exists(self, topic: str) -> bool:
        """Whether the broker has `topic`; True when it cannot tell in time."""
        if topic in self._producer.client.cluster.topics():
            return True
        found_missing = self._missing.get(topic)
        if found_missing is not None and time.monotonic() - found_missing < MISSING_FOR_SECONDS:
            return False
        try:
            topics = await asyncio.wait_for(asyncio.shield(self._all_topics()), LOOKUP_TIMEOUT)
        except (TimeoutError, KafkaError):
            return True
        if topic in topics:
            self._missing.pop(topic, None)
            return True
        self._missing[topic] = time.monotonic()
        return False

    def _all_topics(self) -> asyncio.Task[set[str]]:
        # Concurrent misses (many NOTIFYs for one gone edge) share one request.
        if self._lookup is None or self._lookup.done():
            self._lookup = asyncio.ensure_future(self._fetch())
        return self._lookup

    async def _fetch(self) -> set[str]:
        metadata = await self._producer.client.fetch_all_metadata()
        return set(metadata.topics())
