"""SIGTERM: each service stops accepting work, finishes what is
in flight, commits its Kafka offsets, closes its connections and exits 0 within a
bounded time -- checked on the real stack, with work in flight when the signal
comes."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from presence import settings as settings_module
from presence.bus.topics import Topics
from presence.sip.message import SipResponse

from .conftest import Stack, make_stack, paused, wait_until
from .sip_client import SipClient

pytestmark = pytest.mark.integration

STOP_WITHIN = 15.0
PIDF = (
    '<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
    'entity="sip:{user}@example.com"><tuple id="t"><status><basic>open</basic>'
    "</status></tuple></presence>"
)


def publish_request(client: SipClient, user: str) -> bytes:
    headers = [("Event", "presence"), ("Content-Type", "application/pidf+xml")]
    body = PIDF.format(user=user).encode()
    return client.request("PUBLISH", f"sip:{user}@example.com", headers, body)


def stop_in_time(stack: Stack, name: str) -> None:
    started = time.monotonic()
    code = stack.stop(name)
    took = time.monotonic() - started
    assert code == 0, f"{name} exited {code}"
    assert took < STOP_WITHIN, f"{name} took {took:.1f} s to stop"


async def lag(stack: Stack, group: str, topic: str) -> int:
    """Records of `topic` that `group` has not committed: 0 after a clean stop."""
    bootstrap = stack.env["PRESENCE_KAFKA_BOOTSTRAP"]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        partitions = [
            TopicPartition(topic, p) for p in range(int(stack.env["PRESENCE_KAFKA_PARTITIONS"]))
        ]
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
        await admin.close()
    return sum(
        end - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0)
        for tp, end in ends.items()
    )


def test_sigterm_edge_answers_the_request_in_flight_and_refuses_new_ones(
    test_database: str,
) -> None:
    """The store is paused (SIGSTOP) so that a PUBLISH is surely in flight at the edge
    when SIGTERM comes; its 200 must still reach the client through the UDP socket."""
    stack = make_stack(test_database, PRESENCE_FORCE_ACTIVE="1")
    client = SipClient(stack.sip, "udp", timeout=12)
    late = SipClient(stack.sip, "udp", timeout=5)
    try:
        stack.start_all()
        with paused(stack, "presence-store"):
            client.send(publish_request(client, "term-edge"))
            trying = client.receive(8)  # RFC 4320: 100 after 3.5 s: the edge holds it
            assert isinstance(trying, SipResponse) and trying.status == 100
            edge = stack.processes["sip-edge"]
            edge.process.send_signal(signal.SIGTERM)
            wait_until(lambda: "stopping:" in edge.log(), 10, "the edge to begin stopping")
            refused = late.transact(publish_request(late, "term-edge-late"))
            assert refused.status == 503 and refused.headers.get("Retry-After")
        response = client.receive(12)
        assert isinstance(response, SipResponse) and response.status == 200, response
        stop_in_time(stack, "sip-edge")
    finally:
        client.close()
        late.close()
        stack.close()


def test_sigterm_store_and_notifier_commit_what_they_handled(test_database: str) -> None:
    stack = make_stack(test_database, PRESENCE_FORCE_ACTIVE="1")
    topics = Topics.of(settings_module.load(stack.env))
    try:
        stack.start_all()
        client = SipClient(stack.sip, "udp", timeout=15)
        try:
            statuses = [
                client.transact(publish_request(client, f"term-{i}")).status for i in range(10)
            ]
        finally:
            client.close()
        assert statuses == [200] * 10
        stop_in_time(stack, "sip-edge")
        stop_in_time(stack, "notifier")
        stop_in_time(stack, "presence-store")
        # Everything they handled is committed: a restart would redo nothing.
        assert asyncio.run(lag(stack, topics.group("presence-store"), topics.requests)) == 0
        assert asyncio.run(lag(stack, topics.group("notifier"), topics.changes)) == 0
    finally:
        stack.close()
