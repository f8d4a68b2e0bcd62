"""aiokafka against the real Apache Kafka broker that `scripts/kafka.sh start` runs.

Proves the client features the services rely on: acks=all produce with keys and
headers, consumer groups sharing partitions with manually committed offsets that
survive a restart, and the low-latency producer/consumer settings of the request path.
Every test makes its own uniquely named topics and deletes them afterwards.
"""

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

pytestmark = pytest.mark.integration

BOOTSTRAP = f"127.0.0.1:{os.environ.get('PRESENCE_KAFKA_PORT', '19092')}"
DEADLINE_S = 30.0  # upper bound for any single wait; the happy path takes far less

TopicFactory = Callable[[int], Awaitable[str]]


def _unique(prefix: str) -> str:
    return f"presence-compat-{prefix}-{uuid.uuid4().hex[:12]}"


async def _until(
    predicate: Callable[[], Awaitable[bool]], what: str, deadline_s: float = DEADLINE_S
) -> None:
    """Re-evaluate `predicate` (which itself polls, so never busy-spins) until true."""

    async def loop() -> None:
        while not await predicate():
            pass

    try:
        await asyncio.wait_for(loop(), deadline_s)
    except TimeoutError:
        pytest.fail(f"timed out after {deadline_s}s waiting for {what}")


async def _collect(
    consumer: AIOKafkaConsumer, count: int, deadline_s: float = DEADLINE_S
) -> list[ConsumerRecord]:
    """Fetch until `count` records arrived (fails on deadline, returns extras if any)."""
    records: list[ConsumerRecord] = []

    async def fetched_enough() -> bool:
        batches = await consumer.getmany(timeout_ms=200)
        for batch in batches.values():
            records.extend(batch)
        return len(records) >= count

    await _until(fetched_enough, f"{count} records", deadline_s)
    return records


def _check_errors(response: object, action: str) -> None:
    # CreateTopics answers with `topic_errors`, DeleteTopics with `topic_error_codes`.
    per_topic = getattr(response, "topic_errors", None)
    if per_topic is None:
        per_topic = response.topic_error_codes  # type: ignore[attr-defined]
    for topic_error in per_topic:
        name, code = topic_error[0], topic_error[1]
        assert code == 0, f"{action} {name}: error code {code} ({topic_error})"


@pytest.fixture
async def admin() -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP, request_timeout_ms=10_000)
    try:
        await asyncio.wait_for(client.start(), 15)
    except Exception as exc:
        await client.close()
        pytest.fail(f"no Kafka broker at {BOOTSTRAP} ({exc!r}): run `scripts/kafka.sh start`")
    yield client
    await client.close()


@pytest.fixture
async def new_topic(admin: AIOKafkaAdminClient) -> AsyncIterator[TopicFactory]:
    """Create uniquely named topics (with leaders elected); delete them all afterwards."""
    created: list[str] = []

    async def make(partitions: int) -> str:
        name = _unique(f"p{partitions}")
        response = await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)]
        )
        _check_errors(response, "create topic")
        created.append(name)

        async def has_leaders() -> bool:
            (topic,) = await admin.describe_topics([name])
            ok = (
                topic["error_code"] == 0
                and len(topic["partitions"]) == partitions
                and all(p["leader"] >= 0 for p in topic["partitions"])
            )
            if not ok:
                await asyncio.sleep(0.05)  # poll interval
            return ok

        await _until(has_leaders, f"leaders for {name}")
        return name

    yield make
    if created:
        _check_errors(await admin.delete_topics(created), "delete topic")


def _consumer(**overrides: object) -> AIOKafkaConsumer:
    settings: dict[str, object] = {
        "bootstrap_servers": BOOTSTRAP,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "fetch_max_wait_ms": 50,
        "heartbeat_interval_ms": 300,
        "session_timeout_ms": 10_000,
        "metadata_max_age_ms": 1_000,
    }
    settings.update(overrides)
    return AIOKafkaConsumer(**settings)


async def test_produce_acks_all_and_consume_exact_messages(new_topic: TopicFactory) -> None:
    topic = await new_topic(1)
    sent = [
        (
            f"user-{i}".encode(),
            f'{{"presence": "online", "seq": {i}}}'.encode(),
            [("trace-id", uuid.uuid4().bytes), ("seq", str(i).encode()), ("empty", b"")],
        )
        for i in range(20)
    ]
    sent.append((None, b"no key, no headers", []))

    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value=value, key=key, headers=headers)
            for key, value, headers in sent
        ]
        metadata = await asyncio.wait_for(asyncio.gather(*futures), DEADLINE_S)
    finally:
        await producer.stop()
    assert [m.offset for m in metadata] == list(range(len(sent)))
    assert {m.topic for m in metadata} == {topic}

    consumer = _consumer(group_id=None)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        records = await _collect(consumer, len(sent))
    finally:
        await consumer.stop()

    assert len(records) == len(sent)
    assert [r.offset for r in records] == list(range(len(sent)))
    for record, (key, value, headers) in zip(records, sent, strict=True):
        assert record.key == key
        assert record.value == value
        assert list(record.headers) == headers
        assert record.timestamp > 0


async def test_consumer_group_shares_partitions_and_resumes_from_commit(
    new_topic: TopicFactory, admin: AIOKafkaAdminClient
) -> None:
    topic = await new_topic(4)
    group = _unique("group")
    partitions = {TopicPartition(topic, p) for p in range(4)}

    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=0)
    await producer.start()
    consumers: list[AIOKafkaConsumer] = []  # stopped in `finally` (stop() is idempotent)

    async def produce(phase: str, per_partition: int) -> set[bytes]:
        values = []
        for p in range(4):
            for i in range(per_partition):
                value = f"{phase}-p{p}-{i}".encode()
                await producer.send_and_wait(topic, value, key=f"k{p}".encode(), partition=p)
                values.append(value)
        return set(values)

    try:
        first = _consumer(group_id=group)
        second = _consumer(group_id=group)
        members = (first, second)
        consumers.extend(members)
        for consumer in members:
            await consumer.start()
            consumer.subscribe([topic])

        # Both members keep polling (as real consumers do) while the group rebalances.
        async def split_between_both() -> bool:
            await asyncio.gather(*(c.getmany(timeout_ms=100) for c in members))
            a, b = first.assignment(), second.assignment()
            return bool(a) and bool(b) and not (a & b) and (a | b) == partitions

        await _until(split_between_both, "the two members to share the 4 partitions")
        assignment = {id(c): set(c.assignment()) for c in members}

        phase1 = await produce("phase1", 2)

        got: dict[int, list[ConsumerRecord]] = {id(c): [] for c in members}

        async def consumed_phase1() -> bool:
            results = await asyncio.gather(*(c.getmany(timeout_ms=200) for c in members))
            for consumer, batches in zip(members, results, strict=True):
                for tp, batch in batches.items():
                    assert tp in assignment[id(consumer)], f"{tp} is not assigned here"
                    got[id(consumer)].extend(batch)
            return sum(map(len, got.values())) >= len(phase1)

        await _until(consumed_phase1, "the group to consume phase 1")
        assert all(got.values()), "each member must have received messages"
        assert {r.value for rs in got.values() for r in rs} == phase1
        assert assignment == {id(c): set(c.assignment()) for c in members}, "no rebalance"

        # Commit by hand what each member processed: the next offset per partition.
        for consumer in members:
            last: dict[TopicPartition, int] = {}
            for record in got[id(consumer)]:
                tp = TopicPartition(record.topic, record.partition)
                last[tp] = max(last.get(tp, -1), record.offset)
            await consumer.commit({tp: offset + 1 for tp, offset in last.items()})
            for tp in last:
                assert await consumer.committed(tp) == 2
        for consumer in members:
            await consumer.stop()

        committed = await admin.list_consumer_group_offsets(group)
        assert {tp: meta.offset for tp, meta in committed.items()} == dict.fromkeys(partitions, 2)

        phase2 = await produce("phase2", 3)

        # A restarted member resumes after the commit, not from the start of the log.
        restarted = _consumer(group_id=group)
        consumers.append(restarted)
        await restarted.start()
        restarted.subscribe([topic])
        records = await _collect(restarted, len(phase2))
    finally:
        for consumer in consumers:
            await consumer.stop()
        await producer.stop()

    assert {r.value for r in records} == phase2, "phase-1 messages were consumed again"
    assert len(records) == len(phase2)
    assert min(r.offset for r in records) == 2


async def test_low_latency_settings_round_trip_fast(new_topic: TopicFactory) -> None:
    topic = await new_topic(1)
    tp = TopicPartition(topic, 0)

    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=0, request_timeout_ms=5_000
    )
    consumer = _consumer(group_id=None, fetch_max_wait_ms=10, fetch_min_bytes=1)
    await producer.start()
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        assert await consumer.position(tp) == 0

        assert await consumer.getmany(tp, timeout_ms=50) == {}

        round_trips = []
        for i in range(30):
            value = f"ping-{i}".encode()
            started = time.perf_counter()
            meta = await asyncio.wait_for(producer.send_and_wait(topic, value), 5)
            record = await asyncio.wait_for(consumer.getone(tp), 5)
            round_trips.append(time.perf_counter() - started)
            assert (record.offset, record.value) == (meta.offset, value)
    finally:
        await consumer.stop()
        await producer.stop()

    median = statistics.median(round_trips)
    # Loopback broker: typically a few milliseconds. The bounds are generous so a
    # loaded CI machine passes, yet a batching delay of hundreds of ms would not.
    assert median < 0.1, f"median produce->consume round trip {median * 1000:.1f} ms"
    assert max(round_trips) < 1.0, f"slowest round trip {max(round_trips) * 1000:.1f} ms"
