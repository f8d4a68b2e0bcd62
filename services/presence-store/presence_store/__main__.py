"""presence-store: owns the presence tables, applies PUBLISH, SUBSCRIBE and REGISTER.

Run: python -m presence_store
"""

from __future__ import annotations

import asyncio

from presence.bus.topics import Topics
from presence.runtime import service
from presence.runtime.backend import Backend
from presence.runtime.counters import WindowCounter
from presence.runtime.locks import ShardedLocks
from presence.settings import Settings, SettingsError
from presence_store import admin, xcap
from presence_store.authentication import Authenticator
from presence_store.cleaner import Cleaner
from presence_store.context import STATE_NAME, StoreContext
from presence_store.gauges import watch_tables
from presence_store.handlers import RequestHandler
from presence_store.webclient import webclient_router


async def body(settings: Settings, stopping: asyncio.Event) -> None:
    try:
        settings.check_authentication()  # the store checks digest responses
    except SettingsError as error:
        raise service.StartupError(str(error)) from None
    topics = Topics.of(settings)
    backend = await Backend.open(
        settings,
        topics=[topics.requests, topics.notify_outcomes],
        group=topics.group("presence-store"),
        client_id="presence-store",
    )
    redis = backend.redis
    assert redis is not None  # opened with Redis: the presentity locks live there
    locks = ShardedLocks(redis, settings.lock_set_size, prefix=topics.lock_prefix)
    authenticator = Authenticator(settings, redis)
    handler = RequestHandler(settings, backend.pool, locks, backend.producer, authenticator)
    cleaner = Cleaner(settings, backend.pool, redis, backend.producer)
    watch_tables(settings, backend.pool)
    context = StoreContext(
        settings, backend.pool, locks, backend.producer, cleaner, WindowCounter(redis)
    )
    xcap.log_startup_warnings(settings)
    admin.log_startup_warnings(settings)
    try:
        await backend.serve(
            "presence-store",
            settings,
            stopping,
            http_port=settings.store_http_port,
            port_variable="PRESENCE_STORE_HTTP_PORT",
            https_port=settings.store_https_port,
            workers=[
                # Concurrency beyond the lock shards would only queue on the locks.
                backend.consume(
                    "presence-store",
                    settings,
                    handler.handle,
                    concurrency=settings.lock_set_size,
                    stopping=stopping,
                    give_up=handler.give_up,
                ),
                cleaner.run(stopping),
            ],
            routers=(xcap.router, admin.router, webclient_router(settings)),
            state={STATE_NAME: context},
        )
    finally:
        await cleaner.resign()
        await backend.close()


def main() -> None:
    service.run("presence-store", body)


if __name__ == "__main__":
    main()
