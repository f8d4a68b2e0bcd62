"""Kafka clients (aiokafka) configured the one way all services need them.

Latency: the request path PUBLISH -> store -> reply crosses Kafka twice, so the
producer does not linger: aiokafka keeps one produce request in flight per broker,
and what is sent while it flies leaves together in the next one, so batches grow
with the load by themselves (up to PRODUCER_BATCH_BYTES per partition) and a lone
record leaves at once. A consumer's fetch is answered as soon as any of its
partitions has a record; the fetch wait bounds how long an idle fetch is parked at
the broker (see DEFAULT_FETCH_WAIT_MS).
Safety: offsets are committed by hand, after the database commit (at-least-once),
and handlers are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    TopicAlreadyExistsError,
)

from presence.bus import events, isolation
from presence.runtime import failures, metrics
from presence.runtime.logs import correlated, from_kafka_headers, kafka_headers

log = logging.getLogger(__name__)


class BusUnavailable(RuntimeError):
    pass


def _unavailable(bootstrap: str, error: BaseException) -> BusUnavailable:
    return BusUnavailable(
        f"cannot reach Kafka at {bootstrap}: {error} (is it running? `make run` starts one)"
    )


class CorrelatingProducer(AIOKafkaProducer):
    """A producer whose records carry the current correlation id in a header
    (presence.runtime.logs), so the consumer logs its work under the same id."""

    async def send(  # type: ignore[override]
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[object]:
        if headers is None:
            headers = kafka_headers() or None
        return await super().send(topic, value, key, partition, timestamp_ms, headers)


# Per partition and produce request: at the default 16 KB a burst of replies or
# NOTIFY requests needed several round trips; 256 KB carries a burst in one.
PRODUCER_BATCH_BYTES = 256 * 1024
# How long an idle fetch parks at the broker (PRESENCE_KAFKA_FETCH_WAIT_MS). Each
# return of an empty fetch costs the consumer a request, a response and a wake-up
# (at 20 ms, 50 a second per consumer). New data answers a parked fetch at once, so
# the wait adds nothing to a record of a partition in that fetch. But aiokafka sends
# the next fetch as soon as one returns, leaving out the partitions whose records
# the consumer has not taken yet; a record arriving on such a partition waits until
# that fetch returns: when a record arrives on another partition, or after this wait.
# At low rates that is one record in (partitions) waiting up to this long.
DEFAULT_FETCH_WAIT_MS = 100


async def start_producer(bootstrap: str) -> AIOKafkaProducer:
    producer = CorrelatingProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        max_batch_size=PRODUCER_BATCH_BYTES,
        request_timeout_ms=10_000,
    )
    try:
        await producer.start()
    except KafkaError as error:
        await producer.stop()
        raise _unavailable(bootstrap, error) from None
    return producer


async def start_consumer(
    bootstrap: str,
    topics: Iterable[str],
    *,
    group_id: str | None,
    client_id: str,
    assign: bool = False,
    fetch_wait_ms: int = DEFAULT_FETCH_WAIT_MS,
) -> AIOKafkaConsumer:
    """A consumer of `topics` in group `group_id`. With `assign`, it reads partition 0
    of each topic without joining the group (it still commits there): for a topic
    only this process reads (an edge inbox), so that a restart after a crash does not
    wait for the dead member's session to time out."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_wait_ms,
        # Rebalances finish quickly when a replica joins or dies.
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
    )
    if assign:
        consumer.assign([TopicPartition(topic, 0) for topic in topics])
    else:
        listener = _LogAssignments()
        consumer.subscribe(list(topics), listener=listener)
        _LISTENERS[consumer] = listener
    try:
        await consumer.start()
    except KafkaError as error:
        await consumer.stop()
        raise _unavailable(bootstrap, error) from None
    return consumer


class _LogAssignments(ConsumerRebalanceListener):
    """Which partitions this replica owns, in its log: the first thing an operator
    asks when replicas share work. Before partitions move away, `before_revoke`
    runs (the offset committer's flush), so that the next owner starts where this
    one finished instead of handling its last records again."""

    def __init__(self) -> None:
        self.before_revoke: list[Callable[[], Awaitable[None]]] = []

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        for hook in self.before_revoke:
            await hook()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        owned = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned))
        log.info("partitions assigned: %s", owned or "none")


# The rebalance listener of each group consumer started here (start_consumer).
_LISTENERS: weakref.WeakKeyDictionary[AIOKafkaConsumer, _LogAssignments] = (
    weakref.WeakKeyDictionary()
)


async def ensure_topics(
    bootstrap: str,
    partitions_by_topic: dict[str, int],
    configs: dict[str, dict[str, str]] | None = None,
) -> None:
    """Create the topics that do not exist yet (running it again is harmless), with
    the topic `configs` given (e.g. retention.ms) where it creates them."""
    configs = configs or {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await admin.start()
    except (KafkaConnectionError, KafkaError) as error:
        await admin.close()
        raise _unavailable(bootstrap, error) from None
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=topic,
                num_partitions=count,
                replication_factor=1,
                topic_configs=configs.get(topic, {}),
            )
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


FIRST_RETRY_PAUSE = 0.5
LAST_RETRY_PAUSE = 5.0
EventHandler = Callable[[events.Event], Awaitable[list[asyncio.Future[object]]]]
# The final answer a service owes for a record it gave up on (the store: the SIP
# reply to a request); returns the pending sends, like an EventHandler.
GiveUp = Callable[[events.Event, str], Awaitable[list[asyncio.Future[object]]]]


async def _nothing_owed(event: events.Event, error: str) -> list[asyncio.Future[object]]:
    return []


def dead_letter_of(
    record: ConsumerRecord[bytes, bytes], *, service: str, error: str, attempts: int
) -> events.DeadLetter:
    """The dead-letter record of a consumed record given up on now (presence.bus.isolation)."""
    return isolation.dead_letter(
        service=service,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        error=error,
        attempts=attempts,
        failed_at=time.time(),
        correlation_id=from_kafka_headers(record.headers) or "",
    )


@dataclass
class DeadLetters:
    """Where a consumer loop puts the records it gives up on, and what it checks first."""

    producer: AIOKafkaProducer
    topic: str  # presence.bus.topics.Topics.dead_letters
    service: str  # named in each dead letter and in the metrics
    # True while every dependency answers: a record failure met while one does not is
    # taken for an outage (the batch waits), never dead-lettered.
    ready: Callable[[], Awaitable[bool]]
    give_up: GiveUp = _nothing_owed
    # How often a record is handled before it is given up (PRESENCE_RECORD_ATTEMPTS).
    attempts: int = isolation.RECORD_ATTEMPTS

    async def put(self, record: ConsumerRecord[bytes, bytes], error: str, attempts: int) -> None:
        """Put the record on the dead-letters topic and wait for Kafka's acknowledgement."""
        letter = dead_letter_of(record, service=self.service, error=error, attempts=attempts)
        sent = await self.producer.send(self.topic, events.encode(letter), key=record.key)
        await sent
        metrics.DEAD_LETTERS.labels(self.service, record.topic).inc()
        log.error(
            "dead-lettered %s[%s]@%s after %d attempt(s): %s",
            record.topic,
            record.partition,
            record.offset,
            attempts,
            error,
        )


class OffsetCommitter:
    """Commits the offsets of handled batches beside the consumer loop.

    The loop hands over a batch's next offsets once its records are handled and
    what they produced is acknowledged (`handled`): the offsets are never ahead of
    the database. A commit is one round trip to the broker; made here, it is off the
    loop's path, and at most one is in flight: offsets handed over meanwhile leave
    together in the next, no sooner than `interval` after the last one. A crash
    loses at most the commits not made yet: those records are delivered again and
    the handlers are idempotent. `flush` commits what is pending at once (at stop,
    and before a rebalance moves partitions away).
    """

    def __init__(self, consumer: AIOKafkaConsumer, interval: float) -> None:
        self._consumer = consumer
        self._interval = interval
        self._pending: dict[TopicPartition, int] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one commit in flight: the loop's or a flush's

    def handled(self, offsets: dict[TopicPartition, int]) -> None:
        for partition, offset in offsets.items():
            if offset > self._pending.get(partition, -1):
                self._pending[partition] = offset
        self._wake.set()

    async def run(self) -> None:
        pause = FIRST_RETRY_PAUSE
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                pause = FIRST_RETRY_PAUSE
                await asyncio.sleep(self._interval)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the broker or coordinator away: later
                log.warning("offset commit failed (%s); trying again in %.1f s", error, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, LAST_RETRY_PAUSE)
                self._wake.set()

    async def flush(self) -> None:
        """Commit the pending offsets of the partitions still owned; on failure they
        stay pending (unless a newer offset came meanwhile)."""
        async with self._lock:
            owned = self._consumer.assignment()
            offsets = {tp: o for tp, o in self._pending.items() if tp in owned}
            self._pending.clear()
            if not offsets:
                return
            try:
                await self._consumer.commit(offsets)
            except BaseException:
                for partition, offset in offsets.items():
                    self._pending.setdefault(partition, offset)
                raise


async def consume_in_batches(
    consumer: AIOKafkaConsumer,
    handle: EventHandler,
    *,
    concurrency: int,
    stopping: asyncio.Event,
    dead_letters: DeadLetters,
    max_records: int = 500,
    commit_interval: float = 0.0,
) -> None:
    """The consumer loop of presence-store and notifier, at least once and in key order.

    Records of one key (one presentity) are handled one after the other, in offset
    order; records of different keys run concurrently, up to `concurrency`, so that
    database and broker round trips overlap. Each handler returns the futures of the
    records it produced; the offsets of a batch are committed only after every
    handler finished (its database transaction committed) and every produced record
    was acknowledged, so a crash at any point redelivers, never loses. The commit
    itself is made beside the loop (OffsetCommitter, at most one every
    `commit_interval` seconds), so the next batch does not wait for its round trip.
    When `stopping` is set, the batch in hand is finished and committed, then it
    returns.

    A batch that meets an outage (PostgreSQL, Redis or Kafka unreachable:
    presence.runtime.failures.classify) is handled again from its first record after a
    growing pause (0.5 s doubling to 5 s), so the service rides out an outage of a
    dependency instead of exiting; the handlers are idempotent, so what the failed
    attempt did apply is answered, not redone.

    A record that fails for any other reason costs only itself: it is tried again
    (`dead_letters.attempts` in all, short pauses), then given up: put on the dead-letters
    topic (acknowledged before the batch's offsets are committed), answered through
    `dead_letters.give_up`, counted; the records after it, of its key too, go on in
    order. An undecodable record is dead-lettered at once.
    """
    slots = asyncio.Semaphore(concurrency)
    # Records of the batch in hand already dead-lettered: a batch handled again after
    # an outage does not dead-letter them twice (it still gives their answer).
    given_up: set[tuple[str, int, int]] = set()

    async def handle_record(record: ConsumerRecord[bytes, bytes]) -> list[asyncio.Future[object]]:
        where = (record.topic, record.partition, record.offset)
        try:
            event = events.decode(record.value or b"")
        except events.EventDecodeError as error:
            if where not in given_up:
                await dead_letters.put(record, f"undecodable: {error}", attempts=1)
                given_up.add(where)
            return []
        metrics.BUS_EVENTS.labels(event.TYPE).inc()
        # The id of the SIP transaction that caused the record (its header),
        # else the request's own id: logs and produced records carry it.
        correlation_id = from_kafka_headers(record.headers) or getattr(event, "request_id", "")
        with correlated(correlation_id):
            if where in given_up:
                return await answer(record, event, "dead-lettered")
            attempts = isolation.Attempts(limit=dead_letters.attempts)
            while True:
                try:
                    return await handle(event)
                except Exception as error:
                    if failures.classify(error) is failures.Failure.OUTAGE:
                        raise
                    retry_in = attempts.failed(error)
                    if retry_in is None and not await dead_letters.ready():
                        raise  # a dependency is down after all: the batch waits for it
                if retry_in is not None:
                    log.warning(
                        "%s[%s]@%s failed (%s); trying it again in %.1f s",
                        record.topic, record.partition, record.offset, attempts.errors[-1],
                        retry_in,
                    )  # fmt: skip
                    metrics.RECORD_RETRIES.labels(dead_letters.service, record.topic).inc()
                    await asyncio.sleep(retry_in)
                    continue
                await dead_letters.put(record, attempts.errors[-1], attempts.made)
                given_up.add(where)
                return await answer(record, event, attempts.errors[-1])

    async def answer(
        record: ConsumerRecord[bytes, bytes], event: events.Event, error: str
    ) -> list[asyncio.Future[object]]:
        """The final answer owed for a record given up on; one that cannot be given
        for a reason of its own is logged, not retried (an outage is)."""
        try:
            return await dead_letters.give_up(event, error)
        except Exception as failure:
            if failures.classify(failure) is failures.Failure.OUTAGE:
                raise
            log.error(
                "no final answer for %s[%s]@%s: %s",
                record.topic, record.partition, record.offset, isolation.describe(failure),
            )  # fmt: skip
            return []

    async def handle_key(
        records: list[ConsumerRecord[bytes, bytes]],
    ) -> list[asyncio.Future[object]]:
        produced: list[asyncio.Future[object]] = []
        async with slots:
            for record in records:
                produced += await handle_record(record)
        return produced

    committer = OffsetCommitter(consumer, commit_interval)
    listener = _LISTENERS.get(consumer)
    if listener is not None:
        listener.before_revoke.append(committer.flush)
    committing = asyncio.create_task(committer.run())
    try:
        await _consume_loop(consumer, handle_key, committer, stopping, given_up, max_records)
    finally:
        committing.cancel()
        if listener is not None:
            listener.before_revoke.remove(committer.flush)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(committer.flush(), 5)


async def _consume_loop(
    consumer: AIOKafkaConsumer,
    handle_key: Callable[
        [list[ConsumerRecord[bytes, bytes]]], Awaitable[list[asyncio.Future[object]]]
    ],
    committer: OffsetCommitter,
    stopping: asyncio.Event,
    given_up: set[tuple[str, int, int]],
    max_records: int,
) -> None:
    pause = FIRST_RETRY_PAUSE
    while not stopping.is_set():
        batch = await consumer.getmany(timeout_ms=500, max_records=max_records)
        if not batch:
            continue
        by_key: dict[tuple[str, int, bytes | None], list[ConsumerRecord[bytes, bytes]]] = {}
        for partition, records in batch.items():
            for record in records:
                by_key.setdefault((partition.topic, partition.partition, record.key), []).append(
                    record
                )
        try:
            async with asyncio.TaskGroup() as group:
                handled = [group.create_task(handle_key(records)) for records in by_key.values()]
            produced = [future for task in handled for future in task.result()]
            await asyncio.gather(*produced)
            committer.handled({tp: records[-1].offset + 1 for tp, records in batch.items()})
            pause = FIRST_RETRY_PAUSE
            given_up.clear()
        except Exception as error:  # a dependency is down: handle the batch again later
            log.warning("batch failed (%s); handling it again in %.1f s", error, pause)
            for partition, records in batch.items():
                with contextlib.suppress(IllegalStateError):  # moved away in a rebalance
                    consumer.seek(partition, records[0].offset)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), pause)
            pause = min(pause * 2, LAST_RETRY_PAUSE)
