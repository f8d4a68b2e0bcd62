"""Kafka clients (aiokafka) configured the one way all services need them.

Latency: the request path PUBLISH -> store -> reply crosses Kafka twice, so the
producer does not linger to batch and consumers do not park fetches for the
default 500 ms.
Safety: offsets are committed by hand, after the database commit (at-least-once),
and handlers are idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

log = logging.getLogger(__name__)


class BusUnavailable(RuntimeError):
    pass


def _unavailable(bootstrap: str, error: BaseException) -> BusUnavailable:
    return BusUnavailable(
        f"cannot reach Kafka at {bootstrap}: {error} (is it running? `make run` starts one)"
    )


async def start_producer(bootstrap: str) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        request_timeout_ms=10_000,
    )
    try:
        await producer.start()
    except KafkaError as error:
        await producer.stop()
        raise _unavailable(bootstrap, error) from None
    return producer


async def start_consumer(
    bootstrap: str, topics: Iterable[str], *, group_id: str | None, client_id: str
) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
        # Rebalances finish quickly when a replica joins or dies.
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
    )
    consumer.subscribe(list(topics), listener=_LogAssignments())
    try:
        await consumer.start()
    except KafkaError as error:
        await consumer.stop()
        raise _unavailable(bootstrap, error) from None
    return consumer


class _LogAssignments(ConsumerRebalanceListener):
    """Which partitions this replica owns, in its log: the first thing an operator
    asks when replicas share work."""

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        owned = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned))
        log.info("partitions assigned: %s", owned or "none")


async def ensure_topics(bootstrap: str, partitions_by_topic: dict[str, int]) -> None:
    """Create the topics that do not exist yet (running it again is harmless)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await admin.start()
    except (KafkaConnectionError, KafkaError) as error:
        await admin.close()
        raise _unavailable(bootstrap, error) from None
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name=topic, num_partitions=count, replication_factor=1)
            for topic, count in partitions_by_topic.items()
            if topic not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another replica created it between list and create
            log.info("created topics %s", ", ".join(t.name for t in missing))
    finally:
        await admin.close()


async def bus_ready(producer: AIOKafkaProducer, timeout: float = 2.0) -> bool:
    """True when the producer's connection to the cluster answers a metadata request."""
    try:
        await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout)
    except (KafkaError, TimeoutError, OSError):
        return False
    return True
