"""What the store's HTTP routers (XCAP, the admin API) work with: the pool, the locks,
the producer, the cleaner, the settings. The service puts one StoreContext in its
app's state; a route asks for it as a FastAPI dependency (`context: Context`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import asyncpg
from aiokafka import AIOKafkaProducer
from fastapi import Depends, Request

from presence.bus.topics import Topics
from presence.runtime.counters import WindowCounter
from presence.runtime.locks import ShardedLocks
from presence.settings import Settings
from presence_store.cleaner import Cleaner

# The app.state attribute that holds the StoreContext.
STATE_NAME = "store"


@dataclass(frozen=True)
class StoreContext:
    settings: Settings
    pool: asyncpg.Pool
    locks: ShardedLocks
    producer: AIOKafkaProducer
    cleaner: Cleaner
    xcap_writes: WindowCounter  # each user's XCAP writes per minute (Redis)

    @property
    def topics(self) -> Topics:
        return Topics.of(self.settings)


def store_context(request: Request) -> StoreContext:
    return getattr(request.app.state, STATE_NAME)


Context = Annotated[StoreContext, Depends(store_context)]
