"""sip-edge over real UDP and TCP sockets: checks, transactions, framing, NOTIFY sending."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import replace

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from presence.bus import events
from presence.bus.topics import Topics
from presence.sip.message import SipRequest, SipResponse
from presence.sip.parser import parse_message, serialize
from presence.sip.responses import make_response

from .conftest import Stack, make_stack
from .sip_client import SipClient
from .test_system import ALLOW_EVENTS, PIDF

pytestmark = pytest.mark.integration


def publish(client: SipClient, user: str, extra: list[tuple[str, str]] | None = None) -> bytes:
    headers = [("Event", "presence"), ("Content-Type", "application/pidf+xml"), *(extra or [])]
    return client.request("PUBLISH", f"sip:{user}@example.com", headers, PIDF)


@pytest.fixture
def udp(stack: Stack) -> Iterator[SipClient]:
    client = SipClient(stack.sip, "udp")
    yield client
    client.close()


@pytest.mark.parametrize(
    ("method", "headers", "status", "header"),
    [
        ("MESSAGE", [], 405, ("Allow", "OPTIONS, PUBLISH, SUBSCRIBE, REGISTER")),
        ("PUBLISH", [("Event", "conference")], 489, ("Allow-Events", ALLOW_EVENTS)),
        # Watcher information comes from subscriptions, never from PUBLISH (RFC 3857).
        (
            "PUBLISH",
            [("Event", "presence.winfo")],
            489,
            ("Allow-Events", ALLOW_EVENTS),
        ),
        ("PUBLISH", [("Event", "presence"), ("Require", "foo")], 420, ("Unsupported", "foo")),
        (
            "PUBLISH",
            [("Event", "presence"), ("Content-Type", "text/plain")],
            415,
            ("Accept", "application/pidf+xml"),
        ),
    ],
)
def test_refusals_carry_the_header_that_explains_them(
    udp: SipClient, method: str, headers: list[tuple[str, str]], status: int, header: tuple
) -> None:
    response = udp.transact(udp.request(method, "sip:alice@example.com", headers, b"x"))
    assert response.status == status
    assert response.headers.get(header[0]) == header[1]


def test_max_forwards_zero_is_483(udp: SipClient) -> None:
    request = publish(udp, "alice").replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    assert udp.transact(request).status == 483


async def test_retransmission_creates_one_row(stack: Stack, db: asyncpg.Connection) -> None:
    client = SipClient(stack.sip, "udp")
    user = "retrans-" + secrets.token_hex(4)
    try:
        request = publish(client, user)
        first = await asyncio.to_thread(client.transact, request)
        client.send(request)
        second = await asyncio.to_thread(client.receive)
    finally:
        client.close()
    assert first.status == 200
    assert isinstance(second, SipResponse) and serialize(second) == serialize(first)
    assert await db.fetchval("SELECT count(*) FROM presentity WHERE username = $1", user) == 1


def test_udp_without_content_length_takes_the_rest_of_the_datagram(udp: SipClient) -> None:
    request = publish(udp, "nolength-" + secrets.token_hex(3))
    head, _, body = request.partition(b"\r\n\r\n")
    head = b"\r\n".join(h for h in head.split(b"\r\n") if not h.startswith(b"Content-Length"))
    assert udp.transact(head + b"\r\n\r\n" + body).status == 200


def test_tcp_two_requests_in_one_write_and_one_split_over_many(stack: Stack) -> None:
    client = SipClient(stack.sip, "tcp")
    try:
        first = client.request("OPTIONS", "sip:example.com", [])
        second = client.request("OPTIONS", "sip:example.com", [])
        client.send(first + b"\r\n\r\n" + second)  # a keep-alive ping in between
        answers = [client.receive(), client.receive()]
        third = client.request("OPTIONS", "sip:example.com", [])
        for index in range(0, len(third), 7):
            client.send(third[index : index + 7])
            time.sleep(0.001)
        answers.append(client.receive())
    finally:
        client.close()
    assert [a.status for a in answers if isinstance(a, SipResponse)] == [200, 200, 200]
    call_ids = [a.headers.get("Call-ID") for a in answers]
    assert call_ids == [
        parse_message(m, datagram=False).headers.get("Call-ID") for m in (first, second, third)
    ]


def test_tcp_keep_alive_ping_gets_a_pong(stack: Stack) -> None:
    with socket.create_connection(stack.sip, timeout=5) as connection:
        connection.sendall(b"\r\n\r\n")
        assert connection.recv(16) == b"\r\n"


def test_tcp_oversized_message_closes_the_connection(stack: Stack) -> None:
    with socket.create_connection(stack.sip, timeout=5) as connection:
        connection.sendall(b"OPTIONS sip:example.com SIP/2.0\r\nX-Filler: " + b"a" * 70_000)
        assert connection.recv(16) == b""  # closed by the edge, not waiting forever


# --- edge-only stacks: behaviour that needs settings of its own ------------------


@pytest.fixture(scope="module")
def lone_edge(test_database: str) -> Iterator[Stack]:
    """sip-edge without presence-store, with a short T1, one served domain and a
    minimum expiry."""
    stack = make_stack(
        test_database,
        PRESENCE_SIP_T1_MS="50",
        PRESENCE_DOMAINS="example.com",
        PRESENCE_MIN_EXPIRES="60",
    )
    try:
        stack.start("sip-edge")
        yield stack
    finally:
        stack.close()


def test_domain_not_served_is_404(lone_edge: Stack) -> None:
    client = SipClient(lone_edge.sip, "udp")
    try:
        request = client.request("PUBLISH", "sip:alice@elsewhere.org", [("Event", "presence")])
        assert client.transact(request).status == 404
    finally:
        client.close()


def test_expiry_below_the_minimum_is_423_with_min_expires(lone_edge: Stack) -> None:
    client = SipClient(lone_edge.sip, "udp")
    try:
        response = client.transact(publish(client, "brief", [("Expires", "10")]))
    finally:
        client.close()
    assert response.status == 423
    assert response.headers.get("Min-Expires") == "60"


def test_idle_tcp_connection_is_closed(test_database: str) -> None:
    stack = make_stack(test_database, PRESENCE_TCP_IDLE_TIMEOUT="1")
    try:
        stack.start("sip-edge")
        with socket.create_connection(stack.sip, timeout=10) as connection:
            started = time.monotonic()
            assert connection.recv(16) == b""  # closed by the edge
            assert time.monotonic() - started < 8
    finally:
        stack.close()


def test_slow_store_gets_100_trying_then_503(lone_edge: Stack) -> None:
    client = SipClient(lone_edge.sip, "udp", timeout=15)
    try:
        client.send(publish(client, "nobody-home"))
        provisional = client.receive()
        final = client.receive()
    finally:
        client.close()
    assert isinstance(provisional, SipResponse) and provisional.status == 100
    assert isinstance(final, SipResponse) and final.status == 503
    assert final.headers.get("Retry-After") == "5"


class Watcher:
    """A watcher's socket that receives NOTIFYs (UDP, or a TCP listener)."""

    def __init__(self, transport: str) -> None:
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.bind(("127.0.0.1", 0))
        if transport == "tcp":
            self.sock.listen(1)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


async def send_to_inbox(stack: Stack, *notifies: events.NotifyRequest) -> None:
    """Put NOTIFY requests on the edge's inbox as the notifier does (in one batch)."""
    producer = AIOKafkaProducer(bootstrap_servers=stack.env["PRESENCE_KAFKA_BOOTSTRAP"])
    await producer.start()
    try:
        topics = Topics(stack.env["PRESENCE_KAFKA_NAMESPACE"])
        inbox = topics.edge_inbox(stack.env["PRESENCE_EDGE_ID"])
        for notify in notifies:
            await producer.send(inbox, events.encode(notify))
        await producer.flush()
    finally:
        await producer.stop()


async def outcome_of(stack: Stack, notify_id: str, timeout: float) -> events.NotifyOutcome:
    topics = Topics(stack.env["PRESENCE_KAFKA_NAMESPACE"])
    consumer = AIOKafkaConsumer(
        topics.notify_outcomes,
        bootstrap_servers=stack.env["PRESENCE_KAFKA_BOOTSTRAP"],
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        async with asyncio.timeout(timeout):
            async for record in consumer:
                outcome = events.decode(record.value or b"")
                if isinstance(outcome, events.NotifyOutcome) and outcome.notify_id == notify_id:
                    return outcome
    finally:
        await consumer.stop()
    raise AssertionError("unreachable")


def notify_for(port: int, flow: str = "", transport: str = "udp") -> events.NotifyRequest:
    return events.NotifyRequest(
        notify_id="n-" + secrets.token_hex(6),
        username="alice",
        domain="example.com",
        event="presence",
        subscription="10" + secrets.token_hex(4),
        request_uri=f"sip:bob@127.0.0.1:{port};transport={transport}",
        route_set=[],
        headers=[
            ("From", "<sip:alice@example.com>;tag=10x"),
            ("To", "<sip:bob@example.com>;tag=b1"),
            ("Call-ID", secrets.token_hex(6)),
            ("CSeq", "2 NOTIFY"),
            ("Event", "presence"),
            ("Subscription-State", "active;expires=60"),
        ],
        body="",
        flow=flow,
    )


async def test_unanswered_udp_notify_is_retransmitted_then_times_out(lone_edge: Stack) -> None:
    watcher = Watcher("udp")
    notify = notify_for(watcher.port)
    try:
        await send_to_inbox(lone_edge, notify)
        watcher.sock.settimeout(5)
        arrivals, copies = [], []
        for _ in range(4):
            copies.append(await asyncio.to_thread(watcher.sock.recv, 65535))
            arrivals.append(time.monotonic())
        outcome = await outcome_of(lone_edge, notify.notify_id, timeout=15)
    finally:
        watcher.close()
    first = parse_message(copies[0])
    assert isinstance(first, SipRequest) and first.method == "NOTIFY"
    assert all(copy == copies[0] for copy in copies)  # retransmissions, not new requests
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # Timer E with T1 = 50 ms doubles: 50, 100, 200 ms (the event loop's scheduling
    # and the watcher's reading jitter by milliseconds, so only the doubling and the
    # total are checked).
    assert gaps[2] > gaps[0], gaps
    assert sum(gaps) >= 0.3, gaps
    assert (outcome.status, outcome.subscription) == (408, notify.subscription)


async def test_answered_notify_reports_the_final_status(lone_edge: Stack) -> None:
    watcher = Watcher("udp")
    notify = notify_for(watcher.port)
    try:
        await send_to_inbox(lone_edge, notify)
        watcher.sock.settimeout(5)
        data, edge_address = await asyncio.to_thread(watcher.sock.recvfrom, 65535)
        request = parse_message(data)
        assert isinstance(request, SipRequest)
        watcher.sock.sendto(serialize(make_response(request, 481)), edge_address)
        outcome = await outcome_of(lone_edge, notify.notify_id, timeout=10)
    finally:
        watcher.close()
    assert outcome.status == 481


async def test_notify_reuses_the_watchers_tcp_connection(lone_edge: Stack) -> None:
    client = SipClient(lone_edge.sip, "tcp")
    try:
        # The watcher's own connection to the edge (as when it sent its SUBSCRIBE).
        assert client.transact(client.request("OPTIONS", "sip:example.com", [])).status == 200
        notify = notify_for(9, flow=f"tcp:127.0.0.1:{client.local_port}", transport="tcp")
        # A final NOTIFY: only outcomes that end a subscription go on the bus.
        notify = replace(notify, final=True)
        await send_to_inbox(lone_edge, notify)
        request = await asyncio.to_thread(client.receive)
        assert isinstance(request, SipRequest) and request.method == "NOTIFY"
        client.send(serialize(make_response(request, 200)))
        outcome = await outcome_of(lone_edge, notify.notify_id, timeout=10)
    finally:
        client.close()
    assert outcome.status == 200
