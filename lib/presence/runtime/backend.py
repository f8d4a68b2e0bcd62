"""The connections a bus-consuming service (presence-store, notifier) works with, and
its life from start to shutdown: one piece of code for both services."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import APIRouter
from redis.asyncio import Redis

from presence.bus.topics import Topics, ensure_shared_topics
from presence.runtime import metrics, service
from presence.runtime.cache import connect_redis, redis_ready
from presence.runtime.db import create_pool, database_ready
from presence.runtime.health import make_health_app
from presence.runtime.http_limits import CredentialsOverHttps
from presence.runtime.kafka import (
    DeadLetters,
    EventHandler,
    GiveUp,
    bus_ready,
    consume_in_batches,
    start_consumer,
    start_producer,
)
from presence.runtime.tls import TlsConfigError, server_context
from presence.settings import Settings

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 10.0


@dataclass
class Backend:
    pool: asyncpg.Pool
    # None for a service that takes no presentity lock (the notifier): its readiness
    # then does not depend on Redis either.
    redis: Redis | None
    producer: AIOKafkaProducer
    consumer: AIOKafkaConsumer

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        topics: list[str],
        group: str,
        client_id: str,
        use_redis: bool = True,
    ) -> Backend:
        # In the order a user would check them; each failure is one line.
        pool = await create_pool(settings.db_url)
        redis = await connect_redis(settings.redis_url) if use_redis else None
        await ensure_shared_topics(settings)
        producer = await start_producer(settings.kafka_bootstrap)
        consumer = await start_consumer(
            settings.kafka_bootstrap,
            topics,
            group_id=group,
            client_id=client_id,
            fetch_wait_ms=settings.kafka_fetch_wait_ms,
        )
        metrics.watch_pool(pool)
        metrics.watch_consumer(consumer)
        return cls(pool, redis, producer, consumer)

    async def ready(self) -> bool:
        """Whether the dependencies all answer now (what /health/ready asks)."""
        checks = await asyncio.gather(*(check() for check in self._checks().values()))
        return all(checks)

    def _checks(self) -> dict[str, Callable[[], Awaitable[bool]]]:
        checks: dict[str, Callable[[], Awaitable[bool]]] = {
            "kafka": lambda: bus_ready(self.producer),
            "postgresql": lambda: database_ready(self.pool),
        }
        if self.redis is not None:
            redis = self.redis
            checks["redis"] = lambda: redis_ready(redis)
        return checks

    def consume(
        self,
        service: str,
        settings: Settings,
        handle: EventHandler,
        *,
        concurrency: int,
        stopping: asyncio.Event,
        give_up: GiveUp | None = None,
    ) -> Coroutine[Any, Any, None]:
        """The service's consumer loop (presence.runtime.kafka.consume_in_batches), giving up
        on a record that fails for good onto the dead-letters topic."""
        dead_letters = DeadLetters(
            self.producer, Topics.of(settings).dead_letters, service, self.ready
        )
        if give_up is not None:
            dead_letters.give_up = give_up
        dead_letters.attempts = settings.record_attempts
        return consume_in_batches(
            self.consumer,
            handle,
            concurrency=concurrency,
            stopping=stopping,
            dead_letters=dead_letters,
            commit_interval=settings.kafka_commit_interval_ms / 1000,
        )

    async def close(self) -> None:
        await self.consumer.stop()
        await self.producer.stop()
        await self.pool.close()
        if self.redis is not None:
            await self.redis.aclose()

    async def serve(
        self,
        name: str,
        settings: Settings,
        stopping: asyncio.Event,
        *,
        http_port: int,
        port_variable: str,
        workers: list[Coroutine[Any, Any, None]],
        routers: tuple[APIRouter, ...] = (),
        state: dict[str, Any] | None = None,
        https_port: int = 0,
    ) -> None:
        """Run the workers and the health endpoints until SIGTERM; a worker that
        crashes ends the service loudly (its orchestrator restarts it). `state` goes
        to the app's state, where the routers' dependencies find it."""
        app = make_health_app(name, self._checks())
        for key, value in (state or {}).items():
            setattr(app.state, key, value)
        for router in routers:
            app.include_router(router)
        # The port first: if it is taken, nothing has started that would need stopping.
        servers = []
        try:
            https = bool(https_port and settings.tls_enabled)
            plain = CredentialsOverHttps(app, https_port) if https else app
            servers.append(
                await service.serve_http(plain, settings.http_host, http_port, port_variable)
            )
            if https:
                # The same endpoints over TLS (XCAP passwords, the admin token).
                tls = server_context(settings)
                servers.append(
                    await service.serve_http(
                        app, settings.http_host, https_port, "PRESENCE_STORE_HTTPS_PORT", tls
                    )
                )
                log.info("HTTPS on %s:%s", settings.http_host, https_port)
        except (service.StartupError, TlsConfigError) as error:
            for server in servers:
                server.should_exit = True
            for worker in workers:
                worker.close()
            raise service.StartupError(str(error)) from None
        tasks = [asyncio.create_task(worker) for worker in workers]
        log.info("%s running", name)
        stop = asyncio.create_task(stopping.wait())
        done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
        crashed = [task for task in done if task is not stop]
        log.info("stopping")
        for server in servers:
            server.should_exit = True
        # Consumers finish and commit the batch in hand (they watch `stopping`); what
        # is still running after the grace period (timers, a stuck batch) is cancelled.
        await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE)
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        stop.cancel()
        for task in crashed:
            task.result()
