"""Two presence-store replicas working on one presentity at once.

Kafka keys keep one presentity's requests on one partition, hence on one replica,
except around a rebalance: the replica that lost a partition may still be applying
a batch the new owner starts again from the last committed offset. Here that is
made the rule: every request is put on a partition of each replica, so both apply
the same requests of the same presentity concurrently, and only the Redis-sharded
locks (with their fencing) and the idempotency records keep the state right.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Iterator

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from presence.bus import events
from presence.bus.topics import Topics
from presence.runtime.kafka import ensure_topics

from .conftest import Stack, make_stack, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 4


@pytest.fixture
def two_stores(test_database: str) -> Iterator[Stack]:
    stack = make_stack(test_database, PRESENCE_KAFKA_PARTITIONS=str(PARTITIONS))
    try:
        stack.start("presence-store")
        stack.start("presence-store", replica="-b")

        def both_own_request_partitions() -> bool:
            owned = [owned_request_partitions(p.log()) for p in stack.processes.values()]
            return all(owned) and set().union(*owned) == set(range(PARTITIONS))

        wait_until(both_own_request_partitions, 30, "both replicas to own partitions")
        stack.owned = [  # type: ignore[attr-defined]
            owned_request_partitions(p.log()) for p in stack.processes.values()
        ]
        yield stack
    finally:
        stack.close()


def owned_request_partitions(log: str) -> set[int]:
    """The sip.requests partitions a replica's log says it owns now."""
    lines = [line for line in log.splitlines() if "partitions assigned:" in line]
    if not lines:
        return set()
    return {int(p) for p in re.findall(r"sip\.requests\[(\d+)\]", lines[-1])}


def publication(request_id: str, user: str, tuple_id: str, note: str) -> events.PublishRequest:
    body = (
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:{user}@example.com">'
        f'<tuple id="{tuple_id}"><status><basic>open</basic></status></tuple>'
        f"<note>{note}</note></presence>"
    )
    return events.PublishRequest(
        request_id=request_id,
        edge_id="hammer",
        received_at=time.time(),
        username=user,
        domain="example.com",
        event="presence",
        expires=600,
        if_match=None,
        content_type="application/pidf+xml",
        body=body,
        flow="udp:127.0.0.1:9",
    )


async def test_two_replicas_hammering_one_presentity(two_stores: Stack) -> None:
    topics = Topics(two_stores.env["PRESENCE_KAFKA_NAMESPACE"])
    bootstrap = two_stores.env["PRESENCE_KAFKA_BOOTSTRAP"]
    await ensure_topics(bootstrap, {topics.edge_inbox("hammer"): 1})
    user = "hammer-" + secrets.token_hex(3)
    # 60 republications of one device (same tuple id: each replaces the last) and one
    # publication each of 20 other devices, each on a partition of either replica.
    requests = []
    for round_number in range(60):
        requests.append(publication(secrets.token_hex(8), user, "phone", f"r{round_number}"))
        if round_number % 3 == 0:
            device = f"device-{round_number // 3}"
            requests.append(publication(secrets.token_hex(8), user, device, "x"))
    first_replica, second_replica = (min(owned) for owned in two_stores.owned)  # type: ignore[attr-defined]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        sends = [
            await producer.send(topics.requests, events.encode(r), partition=partition)
            for r in requests
            for partition in (first_replica, second_replica)
        ]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topics.edge_inbox("hammer"), bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    replies: dict[str, list[events.SipReply]] = {}
    try:
        async with asyncio.timeout(60):
            async for record in consumer:
                reply = events.decode(record.value or b"")
                assert isinstance(reply, events.SipReply)
                replies.setdefault(reply.request_id, []).append(reply)
                if sum(map(len, replies.values())) == 2 * len(requests):
                    break
    finally:
        await consumer.stop()
    # Every request answered twice (once per delivery), the same way, with 200.
    assert len(replies) == len(requests)
    for pair in replies.values():
        assert len(pair) == 2 and pair[0] == pair[1] and pair[0].status == 200

    connection = await asyncpg.connect(two_stores.db_url)
    try:
        bodies = [
            row["body"]
            for row in await connection.fetch(
                "SELECT body FROM presentity WHERE username = $1", user
            )
        ]
    finally:
        await connection.close()
    phone = [body for body in bodies if 'id="phone"' in body]
    others = [body for body in bodies if 'id="phone"' not in body]
    assert len(phone) == 1  # never two valid entity tags for one device's publication
    assert len(others) == 20  # no other device's publication lost
    # Neither replica died on a conflict (a duplicate idempotency record, say), and
    # both did part of the work (the test proves nothing otherwise).
    assert all(process.process.poll() is None for process in two_stores.processes.values())
    logs = [process.log() for process in two_stores.processes.values()]
    assert all(f"publish {user}@example.com" in log for log in logs)
