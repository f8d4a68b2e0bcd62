"""NOTIFY delivery and TCP limits on the real stack, over real sockets: a NOTIFY
target that never completes a connect, a peer that never reads, connection caps,
keep-alive-only connections and denied NOTIFY networks. Whatever one watcher or
peer does, everyone else's requests are answered at once."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import select
import socket
import time
from collections.abc import Iterator

import asyncpg
import pytest

from presence.bus import events

from .conftest import (
    Stack,
    eventually,
    make_stack,
    metric_samples,
    running_stack,
    wait_until,
)
from .sip_client import SipClient
from .test_edge import outcome_of, send_to_inbox
from .test_subscribe import WatcherDialog, publish

pytestmark = pytest.mark.integration

CONNECT_TIMEOUT = 8.0
# Far below CONNECT_TIMEOUT: a PUBLISH that waited for the stalled connect would
# take it whole; on two shared cores a prompt answer takes well under a second.
PROMPT = 3.0


def options(client: SipClient) -> bytes:
    return client.request("OPTIONS", "sip:example.com", [])


@contextlib.contextmanager
def stalled_listener() -> Iterator[int]:
    """A loopback TCP port whose accept queue is full: connects to it hang (the
    kernel drops their SYNs) until the connecting side gives up."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 10
        while True:
            assert time.monotonic() < deadline, "could not fill the accept queue"
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
            _, writable, _ = select.select([], [filler], [], 0.5)
            if not writable:
                break  # this connect hangs: the queue is full
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.fixture(scope="module")
def delivery_stack(test_database: str) -> Iterator[Stack]:
    with running_stack(
        test_database,
        PRESENCE_FORCE_ACTIVE="1",
        PRESENCE_SIP_T1_MS="200",  # Timer F = 12.8 s, above the connect timeout
        PRESENCE_NOTIFY_CONNECT_TIMEOUT_MS=str(int(CONNECT_TIMEOUT * 1000)),
        PRESENCE_TCP_MAX_WRITE_BUFFER="8192",
    ) as stack:
        yield stack


def timed_publish(stack: Stack) -> float:
    """Seconds until a new user's PUBLISH is answered 200."""
    presentity = f"sip:other-{secrets.token_hex(3)}@example.com"
    sent = time.monotonic()
    assert publish(stack, presentity, "open").status == 200
    return time.monotonic() - sent


def test_a_notify_target_that_never_connects_delays_only_its_own_dialog(
    delivery_stack: Stack,
) -> None:
    client = SipClient(delivery_stack.sip, "udp")
    try:
        with stalled_listener() as port:
            dialog = WatcherDialog(
                client, f"sip:stalled-{secrets.token_hex(3)}@example.com", "c-st", "f-st"
            )
            route = f"<sip:127.0.0.1:{port};transport=tcp;lr>"
            assert dialog.subscribe(**{"Record-Route": route}).status == 200
            started = time.monotonic()
            # Its first NOTIFY now waits for a connect that never completes. Other
            # users publish meanwhile, one after the other, until that NOTIFY ends.
            needle = f"answered 408: subscription {dialog.to_tag} ended"
            latencies = []
            while needle not in delivery_stack.processes["presence-store"].log():
                assert time.monotonic() - started < CONNECT_TIMEOUT + 20, f"no '{needle}'"
                latencies.append(timed_publish(delivery_stack))
            took = time.monotonic() - started
    finally:
        client.close()
    assert took >= CONNECT_TIMEOUT * 0.9  # the dialog's NOTIFY did wait for its connect
    assert len(latencies) >= 3, latencies
    assert max(latencies) < PROMPT, latencies
    edge_log = delivery_stack.processes["sip-edge"].log()
    assert f"({dialog.to_tag}) -> 408 Connect Timeout" in edge_log
    outcomes = metric_samples(delivery_stack, "sip-edge", "presence_sip_notify_outcomes_total")
    assert outcomes.get('event="presence",outcome="connect_timeout"', 0) >= 1


def big_notify(port: int) -> events.NotifyRequest:
    """A NOTIFY of a dialog of its own, routed over TCP to `port`, 40 KB long."""
    subscription = "10" + secrets.token_hex(4)
    note = "x" * 40_000
    body = (
        '<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
        f'entity="sip:big@example.com"><tuple id="t"><status><basic>open</basic></status>'
        f"</tuple><note>{note}</note></presence>"
    )
    return events.NotifyRequest(
        notify_id="n-" + secrets.token_hex(6),
        username="big",
        domain="example.com",
        event="presence",
        subscription=subscription,
        request_uri="sip:reader@127.0.0.1",
        route_set=[f"<sip:127.0.0.1:{port};transport=tcp;lr>"],
        headers=[
            ("From", f"<sip:big@example.com>;tag={subscription}"),
            ("To", "<sip:reader@example.com>;tag=r1"),
            ("Call-ID", secrets.token_hex(6)),
            ("CSeq", "2 NOTIFY"),
            ("Event", "presence"),
            ("Subscription-State", "active;expires=60"),
            ("Content-Type", "application/pidf+xml"),
        ],
        body=body,
        flow="",
    )


async def test_a_peer_that_never_reads_loses_its_connection_at_the_buffer_cap(
    delivery_stack: Stack,
) -> None:
    # The peer accepts (the kernel completes the handshake) and never reads; its
    # receive buffer is small so that the edge's unsent bytes grow soon.
    peer = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    peer.bind(("127.0.0.1", 0))
    peer.listen(8)
    port = peer.getsockname()[1]
    try:
        notifies = [big_notify(port) for _ in range(6)]
        await send_to_inbox(delivery_stack, *notifies)
        # Another user publishes meanwhile: answered at once.
        latency, *results = await asyncio.gather(
            asyncio.to_thread(timed_publish, delivery_stack),
            *(outcome_of(delivery_stack, n.notify_id, timeout=40) for n in notifies),
        )
        assert latency < PROMPT
    finally:
        peer.close()
    reasons = [(outcome.status, outcome.reason) for outcome in results]
    assert (408, "Peer Not Reading") in reasons, reasons
    # A NOTIFY that came after the close went on a new connection, and times out.
    assert set(reasons) <= {(408, "Peer Not Reading"), (408, "Request Timeout")}, reasons
    closed = metric_samples(delivery_stack, "sip-edge", "presence_sip_tcp_closed_total")
    assert closed.get('reason="write_buffer_full"', 0) >= 1


async def test_a_dialog_whose_edge_is_gone_ends_without_holding_other_notifies(
    delivery_stack: Stack,
) -> None:
    # A dialog held by an edge that no longer runs (its inbox topic does not exist):
    # its NOTIFY is reported 408 Edge Gone at once and the dialog ends, instead of the
    # notifier waiting for the topic (10 s a try) while other changes queue behind.
    client = SipClient(delivery_stack.sip, "udp")
    gone = WatcherDialog(
        client, f"sip:gone-{secrets.token_hex(3)}@example.com", "c-" + secrets.token_hex(6),
        "f-" + secrets.token_hex(4),
    )  # fmt: skip
    other_client = SipClient(delivery_stack.sip, "udp")
    other = WatcherDialog(
        other_client, f"sip:kept-{secrets.token_hex(3)}@example.com",
        "c-" + secrets.token_hex(6), "f-" + secrets.token_hex(4),
    )  # fmt: skip
    db = await asyncpg.connect(delivery_stack.db_url)
    try:
        assert gone.subscribe().status == 200
        gone.next_notify()
        await db.execute(
            "UPDATE active_watchers SET edge_id = $1 WHERE to_tag = $2",
            "gone-" + secrets.token_hex(4),
            gone.to_tag,
        )
        assert (
            await asyncio.to_thread(publish, delivery_stack, gone.presentity, "open")
        ).status == 200
        # Another watcher's dialog, made right after: its NOTIFYs are not held up.
        started = time.monotonic()
        assert (await asyncio.to_thread(other.subscribe)).status == 200
        await asyncio.to_thread(other.next_notify_within, PROMPT)
        assert (
            await asyncio.to_thread(publish, delivery_stack, other.presentity, "open")
        ).status == 200
        notify = await asyncio.to_thread(other.next_notify_within, PROMPT)
        assert b"<basic>open</basic>" in notify.body
        assert time.monotonic() - started < 2 * PROMPT

        await eventually(
            lambda: db.fetchval(
                "SELECT count(*) FROM active_watchers WHERE to_tag = $1", gone.to_tag
            ),
            lambda count: count == 0,
            "the dialog of the gone edge ends",
            timeout=PROMPT,
        )
    finally:
        await db.close()
        client.close()
        other_client.close()
    gone_total = metric_samples(delivery_stack, "notifier", "presence_notifier_edge_gone_total")
    assert gone_total.get('event="presence"', 0) >= 1


# --- connection caps and denied networks ------------------------------------------

DENIED = "127.0.0.100/32,127.0.0.1/32,::1/128"


@pytest.fixture(scope="module")
def limits_stack(test_database: str) -> Iterator[Stack]:
    with running_stack(
        test_database,
        PRESENCE_FORCE_ACTIVE="1",
        PRESENCE_TCP_MAX_CONNECTIONS="5",
        PRESENCE_TCP_MAX_CONNECTIONS_PER_ADDRESS="3",
        PRESENCE_NOTIFY_DENY_NETWORKS=DENIED,
    ) as stack:
        yield stack


def tcp_from(stack: Stack, host: str) -> socket.socket:
    connection = socket.create_connection(stack.sip, timeout=10, source_address=(host, 0))
    return connection


def answers_options(connection: socket.socket) -> bool:
    """Whether the edge answers an OPTIONS on the connection (False: it closed it)."""
    port = connection.getsockname()[1]
    request = (
        f"OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bK"
        f"{secrets.token_hex(6)}\r\nFrom: <sip:t@example.com>;tag=1\r\nTo: <sip:example.com>\r\n"
        "Call-ID: " + secrets.token_hex(6) + "\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    try:
        connection.sendall(request.encode())
        data = connection.recv(65535)
    except ConnectionError:
        return False
    return data.startswith(b"SIP/2.0 200")


def open_connections(stack: Stack) -> float:
    return metric_samples(stack, "sip-edge", "presence_sip_tcp_connections").get("", -1)


def test_tcp_connections_are_capped_per_address_and_in_total(limits_stack: Stack) -> None:
    opened: list[socket.socket] = []
    try:
        for _ in range(3):
            opened.append(tcp_from(limits_stack, "127.0.0.1"))
            assert answers_options(opened[-1])
        fourth = tcp_from(limits_stack, "127.0.0.1")  # the kernel accepts, the edge closes
        opened.append(fourth)
        assert not answers_options(fourth)
        for _ in range(2):
            opened.append(tcp_from(limits_stack, "127.0.0.2"))
            assert answers_options(opened[-1])
        sixth = tcp_from(limits_stack, "127.0.0.3")  # a new address, but 5 are open
        opened.append(sixth)
        assert not answers_options(sixth)
        # A closed connection frees its slot.
        opened[0].close()
        wait_until(lambda: open_connections(limits_stack) == 4, 10, "the edge to see the close")
        again = tcp_from(limits_stack, "127.0.0.1")
        opened.append(again)
        assert answers_options(again)
    finally:
        for connection in opened:
            connection.close()
    refused = metric_samples(limits_stack, "sip-edge", "presence_sip_tcp_refused_total")
    assert refused.get('direction="inbound",limit="per_key"', 0) >= 1, refused
    assert refused.get('direction="inbound",limit="total"', 0) >= 1, refused


def subscribe(client: SipClient, contact: str, record_route: str | None = None) -> bytes:
    headers = [("Event", "presence"), ("Expires", "600"), ("Contact", contact)]
    if record_route:
        headers.append(("Record-Route", record_route))
    presentity = f"sip:target-{secrets.token_hex(3)}@example.com"
    return client.request("SUBSCRIBE", presentity, headers, from_uri="sip:w@example.com")


@pytest.mark.parametrize(
    ("contact", "record_route"),
    [
        ("<sip:w@127.0.0.100:5060>", None),
        ("<sip:w@127.0.0.2:5060>", "<sip:127.0.0.100;lr;transport=tcp>"),
        ("<sip:w@[::1]:5060>", None),
    ],
)
def test_subscribe_naming_a_denied_notify_target_is_403(
    limits_stack: Stack, contact: str, record_route: str | None
) -> None:
    client = SipClient(limits_stack.sip, "udp")
    try:
        response = client.transact(subscribe(client, contact, record_route))
    finally:
        client.close()
    assert (response.status, response.reason) == (403, "Notify Target Denied")


def test_the_flow_and_allowed_targets_are_not_denied(limits_stack: Stack) -> None:
    # The SUBSCRIBE comes from 127.0.0.1 (denied): its NOTIFYs go back on that
    # flow, which is where it came from, so it is not checked.
    client = SipClient(limits_stack.sip, "udp")
    try:
        response = client.transact(subscribe(client, "<sip:w@127.0.0.2:5060>"))
        assert response.status == 200
        notify = client.next_request()
        assert notify.method == "NOTIFY"
        client.answer(notify)
    finally:
        client.close()


def test_a_name_that_resolves_into_a_denied_network_ends_the_dialog(limits_stack: Stack) -> None:
    client = SipClient(limits_stack.sip, "udp")
    target = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target.bind(("127.0.0.1", 0))
    port = target.getsockname()[1]
    try:
        request = subscribe(client, f"<sip:w@localhost:{port}>", f"<sip:localhost:{port};lr>")
        response = client.transact(request)  # a name: checked when it is resolved
        assert response.status == 200
        to_tag = response.headers.get("To").split("tag=")[1]
        needle = f"answered 408: subscription {to_tag} ended"
        wait_until(lambda: needle in limits_stack.processes["presence-store"].log(), 20, needle)
        target.setblocking(False)
        with pytest.raises(BlockingIOError):
            target.recv(65535)  # nothing was sent there
    finally:
        target.close()
        client.close()
    assert f"({to_tag}) -> 408 Notify Target Denied" in limits_stack.processes["sip-edge"].log()
    denied = metric_samples(limits_stack, "sip-edge", "presence_sip_notify_targets_denied_total")
    assert denied.get('stage="notify"', 0) >= 1


# --- keep-alive-only connections --------------------------------------------------


def test_keep_alives_alone_do_not_keep_a_connection_forever(test_database: str) -> None:
    stack_env = {"PRESENCE_TCP_KEEPALIVE_ONLY_TIMEOUT": "2"}
    with running_stack(test_database, **stack_env) as stack:
        pinging = tcp_from(stack, "127.0.0.1")
        talking = tcp_from(stack, "127.0.0.1")
        try:
            assert answers_options(pinging) and answers_options(talking)
            started = time.monotonic()
            closed_after = None
            while closed_after is None:
                elapsed = time.monotonic() - started
                assert elapsed < 15, "a keep-alive-only connection stayed open"
                # The client's pace: a ping and an OPTIONS every 0.3 s.
                time.sleep(0.3)
                assert answers_options(talking), "a connection with SIP traffic was closed"
                try:
                    pinging.sendall(b"\r\n\r\n")
                    pong = pinging.recv(16)
                except ConnectionError:
                    pong = b""
                if pong == b"":
                    closed_after = time.monotonic() - started
                else:
                    assert pong == b"\r\n"
        finally:
            pinging.close()
            talking.close()
        assert 1.5 <= closed_after, closed_after
        closed = metric_samples(stack, "sip-edge", "presence_sip_tcp_closed_total")
        assert closed.get('reason="keepalive_only"', 0) >= 1


# --- reflection: what a spoofed request makes the edge send ------------------------

# T1 = 500 ms (the default): an unanswered UDP NOTIFY leaves at 0, 0.5, 1.5, 3.5,
# 7.5, 11.5 ... 31.5 s, 11 copies before Timer F (64*T1) ends it.
COPIES_AT_DEFAULT_T1 = 11


def small_subscribe(client: SipClient, presentity: str) -> bytes:
    """As small a SUBSCRIBE as the edge takes: what a reflecting attacker sends."""
    port = client.local_port
    return (
        f"SUBSCRIBE {presentity} SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK1\r\n"
        f"f: <sip:v@x>;tag=1\r\nt: <{presentity}>\r\ni: {secrets.token_hex(4)}\r\n"
        f"CSeq: 1 SUBSCRIBE\r\no: presence\r\nm: <sip:v@127.0.0.1:{port}>\r\nl: 0\r\n\r\n"
    ).encode()


def reflected_bytes(stack: Stack, presentity: str) -> tuple[int, int, int]:
    """(request, 200 response, one NOTIFY) sizes for a SUBSCRIBE the victim never
    answers (a test socket stands in for the victim whose address was spoofed)."""
    victim = SipClient(stack.sip, "udp")
    try:
        request = small_subscribe(victim, presentity)
        victim.send(request)
        sizes = []
        while len(sizes) < 3:  # the 200, the NOTIFY, its first retransmission
            data = victim.receive_raw(timeout=10)
            sizes.append(len(data))
    finally:
        victim.close()
    response, notify, retransmitted = sorted(sizes)  # the 200 is the smallest
    assert retransmitted == notify  # the NOTIFY is retransmitted as long as unanswered
    return len(request), response, notify


def test_reflection_amplification_of_a_spoofed_subscribe(delivery_stack: Stack) -> None:
    small = f"sip:small-{secrets.token_hex(3)}@example.com"
    assert publish(delivery_stack, small, "open").status == 200
    large = f"sip:large-{secrets.token_hex(3)}@example.com"
    note = "n" * 60_000
    body = (
        '<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
        f'entity="{large}"><tuple id="t"><status><basic>open</basic></status></tuple>'
        f"<note>{note}</note></presence>"
    ).encode()
    client = SipClient(delivery_stack.sip, "udp")
    try:
        headers = [("Event", "presence"), ("Content-Type", "application/pidf+xml")]
        assert client.transact(client.request("PUBLISH", large, headers, body)).status == 200
    finally:
        client.close()
    for name, presentity in (("small document", small), ("60 KB document", large)):
        request, response, notify = reflected_bytes(delivery_stack, presentity)
        first = (response + notify) / request
        total = (response + COPIES_AT_DEFAULT_T1 * notify) / request
        print(
            f"\nreflection, {name}: SUBSCRIBE {request} B -> 200 {response} B + NOTIFY "
            f"{notify} B: x{first:.1f} at once, x{total:.1f} with the NOTIFY's "
            f"{COPIES_AT_DEFAULT_T1} copies at T1=500 ms"
        )
        assert first > 1  # what docs/security/notify-delivery.md reports


def test_amplification_of_the_digest_challenge(test_database: str) -> None:
    stack = make_stack(
        test_database, PRESENCE_AUTH="digest", PRESENCE_AUTH_SECRET=secrets.token_hex(16)
    )
    try:
        stack.start("sip-edge")
        client = SipClient(stack.sip, "udp")
        try:
            request = small_subscribe(client, "sip:alice@example.com")
            client.send(request)
            answer = client.receive_raw(timeout=10)
        finally:
            client.close()
    finally:
        stack.close()
    assert answer.startswith(b"SIP/2.0 401")
    print(
        f"\n401 challenge: SUBSCRIBE {len(request)} B -> 401 {len(answer)} B: "
        f"x{len(answer) / len(request):.1f}"
    )
    assert len(answer) / len(request) < 3  # one datagram, never retransmitted
