"""Faults on the real stack that make chaos cannot aim at precisely."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from presence import settings as settings_module
from presence.bus import events
from presence.bus.topics import Topics

from .conftest import Stack
from .sip_client import SipClient

pytestmark = pytest.mark.integration

STALE = (
    '<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
    'entity="sip:late@example.com"><tuple id="stale"><status><basic>open</basic>'
    "</status></tuple></presence>"
)
FRESH = STALE.replace('id="stale"', 'id="fresh"').encode()


async def put_on_the_bus(stack: Stack, request: events.PublishRequest) -> None:
    topics = Topics.of(settings_module.load(stack.env))
    producer = AIOKafkaProducer(bootstrap_servers=stack.env["PRESENCE_KAFKA_BOOTSTRAP"])
    await producer.start()
    try:
        await producer.send_and_wait(
            topics.requests, events.encode(request), key=request.presentity.encode()
        )
    finally:
        await producer.stop()


async def test_a_request_near_the_edges_deadline_is_not_applied(
    stack: Stack, db: asyncpg.Connection
) -> None:
    """A PUBLISH that reaches the store 7.5 s after the edge took it (a store that was
    down or busy) would commit so close to REPLY_DEADLINE that its 200 could arrive
    after the edge's own 503: the store must answer it 503 and leave the state alone."""
    stale = events.PublishRequest(
        request_id="stale-" + str(time.time()),
        edge_id=stack.env["PRESENCE_EDGE_ID"],
        received_at=time.time() - 7.5,
        username="late",
        domain="example.com",
        event="presence",
        expires=600,
        if_match=None,
        content_type="application/pidf+xml",
        body=STALE,
        flow="udp:127.0.0.1:5999",
    )
    await put_on_the_bus(stack, stale)
    # The same presentity, so the same partition: handled after the stale one.
    client = SipClient(stack.sip, "udp")
    try:
        headers = [("Event", "presence"), ("Content-Type", "application/pidf+xml")]
        request = client.request("PUBLISH", "sip:late@example.com", headers, FRESH)
        response = await asyncio.to_thread(client.transact, request)
    finally:
        client.close()
    assert response.status == 200
    bodies = await db.fetch(
        "SELECT body FROM presentity WHERE username = 'late' AND domain = 'example.com'"
    )
    assert [row["body"].encode() for row in bodies] == [FRESH]
