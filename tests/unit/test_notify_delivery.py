"""NOTIFY delivery without servers: slot limits, denied networks, the choice of an
address, the resolver's bounds, and the edge handing NOTIFYs off its inbox loop."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from dataclasses import replace

import pytest

from presence import settings as settings_module
from presence.bus import events
from presence.sip.parser import parse_message
from sip_edge import resolver as resolver_module
from sip_edge.edge import Edge
from sip_edge.limits import SlotLimiter
from sip_edge.notify_targets import choose_address, denied_target, is_denied, notify_targets
from sip_edge.resolver import Resolver, ResolveTimeout
from sip_edge.transport import ConnectTimeout, TcpConnections, TcpLimits, WriteBufferFull

NETWORKS = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("169.254.169.254/32"),
    ipaddress.ip_network("fd00::/8"),
)


# --- SlotLimiter ---------------------------------------------------------------


def test_slot_limiter_caps_per_key_and_in_total() -> None:
    limiter = SlotLimiter(total=3, per_key=2)
    assert limiter.acquire("a") and limiter.acquire("a")
    assert limiter.refusal("a") == "per_key"
    assert not limiter.acquire("a")
    assert limiter.acquire("b")
    assert limiter.refusal("c") == "total"
    assert not limiter.acquire("c")
    assert len(limiter) == 3 and limiter.used("a") == 2
    limiter.release("a")
    assert limiter.acquire("c")  # a freed slot serves any key
    assert limiter.used("c") == 1


def test_slot_limiter_release_without_slot_is_an_error() -> None:
    limiter = SlotLimiter(total=1, per_key=1)
    with pytest.raises(KeyError):
        limiter.release("x")
    limiter.acquire("x")
    limiter.release("x")
    assert len(limiter) == 0 and limiter.used("x") == 0
    with pytest.raises(ValueError):
        SlotLimiter(total=0, per_key=1)


# --- denied networks -------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "denied"),
    [
        ("10.1.2.3", True),
        ("169.254.169.254", True),
        ("169.254.169.253", False),
        ("192.0.2.1", False),
        ("[fd00::1]", True),
        ("fd00::1", True),
        ("[::ffff:10.0.0.1]", True),  # IPv4-mapped: the IPv4 network applies
        ("2001:db8::1", False),
        ("intranet.example.com", False),  # names are checked once resolved
        ("fe80::1%eth0", False),
    ],
)
def test_is_denied_matches_ip_literals(host: str, denied: bool) -> None:
    assert is_denied(host, NETWORKS) is denied


def test_nothing_is_denied_without_networks() -> None:
    assert not is_denied("10.0.0.1", ())


def subscribe(*headers: str) -> object:
    lines = [
        "SUBSCRIBE sip:alice@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bK-1",
        "From: <sip:bob@example.com>;tag=1",
        "To: <sip:alice@example.com>",
        "Call-ID: c1",
        "CSeq: 1 SUBSCRIBE",
        "Event: presence",
        *headers,
        "Content-Length: 0",
        "",
        "",
    ]
    return parse_message("\r\n".join(lines).encode())


def test_notify_targets_are_the_first_record_route_and_the_contact() -> None:
    request = subscribe(
        "Record-Route: <sip:10.0.0.7;lr;transport=tcp>, <sip:192.0.2.99;lr>",
        "Contact: <sip:bob@192.0.2.5:5062>",
    )
    assert notify_targets(request) == ["10.0.0.7", "192.0.2.5"]  # type: ignore[arg-type]
    assert denied_target(request, NETWORKS) == "10.0.0.7"  # type: ignore[arg-type]
    assert denied_target(request, ()) is None  # type: ignore[arg-type]


def test_a_contact_in_a_denied_network_is_denied() -> None:
    request = subscribe("Contact: <sip:bob@169.254.169.254:80>")
    assert denied_target(request, NETWORKS) == "169.254.169.254"  # type: ignore[arg-type]
    fine = subscribe("Contact: <sip:bob@bob-pc.example.com>")
    assert denied_target(fine, NETWORKS) is None  # type: ignore[arg-type]


def test_choose_address_keeps_the_resolvers_order() -> None:
    infos = [
        (socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("2001:db8::1", 5060, 0, 0)),
        (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("192.0.2.1", 5060)),
    ]
    assert choose_address(infos) == ("2001:db8::1", 5060)
    assert choose_address(infos[1:]) == ("192.0.2.1", 5060)
    with pytest.raises(OSError):
        choose_address([])


# --- Resolver ----------------------------------------------------------------------


async def test_resolver_makes_identical_lookups_once_and_bounds_their_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    calls: list[str] = []

    def slow_getaddrinfo(host: str, port: int, *args: object) -> list[tuple[object, ...]]:
        calls.append(host)
        release.wait(5)
        return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("192.0.2.8", port))]

    monkeypatch.setattr(resolver_module.socket, "getaddrinfo", slow_getaddrinfo)
    resolver = Resolver(workers=2, timeout=0.2)
    try:
        results = await asyncio.gather(
            *(resolver.resolve("proxy.example.com", 5060) for _ in range(5)),
            return_exceptions=True,
        )
        assert all(isinstance(result, ResolveTimeout) for result in results)
        assert calls == ["proxy.example.com"]  # one lookup for the five callers
        release.set()
        assert await resolver.resolve("192.0.2.9", 5070) == ("192.0.2.9", 5070)  # no lookup
        assert await resolver.resolve("[2001:db8::2]", 5060) == ("2001:db8::2", 5060)
    finally:
        release.set()
        resolver.close()


async def test_resolver_reports_a_name_that_does_not_resolve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing(host: str, *args: object) -> list[tuple[object, ...]]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(resolver_module.socket, "getaddrinfo", failing)
    resolver = Resolver(workers=1, timeout=1)
    try:
        with pytest.raises(OSError, match=r"cannot resolve nowhere\.invalid"):
            await resolver.resolve("nowhere.invalid", 5060)
    finally:
        resolver.close()


# --- the edge: the inbox only hands NOTIFYs off ------------------------------------


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> object:
        self.sent.append((topic, value))
        return None


class HangingTcp:
    """A TCP transport whose connects never complete until told how they end."""

    def __init__(self, transport: str = "tcp") -> None:
        self.transport = transport
        self.outcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.addresses: list[tuple[str, int]] = []
        self.server_names: list[str | None] = []

    async def send(
        self, data: bytes, address: tuple[str, int], server_name: str | None = None
    ) -> None:
        self.addresses.append(address)
        self.server_names.append(server_name)
        await asyncio.shield(self.outcome)


def make_edge(**env: str) -> tuple[Edge, FakeProducer]:
    producer = FakeProducer()
    settings = settings_module.load({"PRESENCE_EDGE_ID": "e1", "PRESENCE_AUTH": "none", **env})
    edge = Edge(settings, producer)  # type: ignore[arg-type]
    return edge, producer


def notify(notify_id: str, route: str, subscription: str = "10a") -> events.NotifyRequest:
    return events.NotifyRequest(
        notify_id=notify_id,
        username="alice",
        domain="example.com",
        event="presence",
        subscription=subscription,
        request_uri="sip:bob@192.0.2.10:5070",
        route_set=[route],
        headers=[
            ("From", f"<sip:alice@example.com>;tag={subscription}"),
            ("To", "<sip:bob@example.com>;tag=b1"),
            ("Call-ID", "c1"),
            ("CSeq", "1 NOTIFY"),
            ("Event", "presence"),
            ("Subscription-State", "active;expires=600"),
        ],
        body="",
        flow="udp:192.0.2.10:5070",
    )


def outcomes(producer: FakeProducer) -> list[tuple[int, str]]:
    decoded = [events.decode(value) for _, value in producer.sent]
    return [(e.status, e.reason) for e in decoded if isinstance(e, events.NotifyOutcome)]


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_the_inbox_does_not_wait_for_a_connect_and_timer_f_ends_it_as_408() -> None:
    edge, producer = make_edge(PRESENCE_SIP_T1_MS="10")  # Timer F = 0.64 s
    edge.tcp = HangingTcp()  # type: ignore[assignment]
    handled = asyncio.create_task(
        edge.on_inbox_event(notify("n1", "<sip:192.0.2.50:5090;transport=tcp;lr>"), offset=1)
    )
    await asyncio.wait_for(handled, 0.5)  # the inbox goes on at once
    await settle()
    assert edge.tcp.addresses == [("192.0.2.50", 5090)]  # type: ignore[attr-defined]
    assert outcomes(producer) == []
    deadline = asyncio.get_running_loop().time() + 5
    while not outcomes(producer):  # the edge's own timer fires Timer F
        assert asyncio.get_running_loop().time() < deadline, "Timer F never fired"
        await asyncio.sleep(0.02)
    assert outcomes(producer) == [(408, "Request Timeout")]
    assert edge.inbox.unfinished() == 0


class FakeUdp:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        self.sent.append((data, address))


async def test_one_timer_armed_for_the_cores_next_deadline_retransmits_over_udp() -> None:
    edge, producer = make_edge(PRESENCE_SIP_T1_MS="10")  # Timer E from 10 ms, F at 0.64 s
    udp = FakeUdp()
    edge.udp = udp  # type: ignore[assignment]
    over_udp = replace(notify("n1", ""), route_set=[])
    await edge.on_inbox_event(over_udp, offset=1)
    assert udp.sent == [(udp.sent[0][0], ("192.0.2.10", 5070))]
    assert edge._timer_at == edge.core.next_timer()  # Timer E: 10 ms from now
    await asyncio.sleep(0.2)  # 10, 30, 70, 150 ms: doubling, no polling
    assert 4 <= len(udp.sent) <= 5
    assert all(data == udp.sent[0][0] for data, _ in udp.sent)
    deadline = asyncio.get_running_loop().time() + 5
    while not outcomes(producer):
        assert asyncio.get_running_loop().time() < deadline, "Timer F never fired"
        await asyncio.sleep(0.02)
    assert outcomes(producer) == [(408, "Request Timeout")]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectTimeout("no connection"), (408, "Connect Timeout")),
        (WriteBufferFull("does not read"), (408, "Peer Not Reading")),
        (ConnectionRefusedError("refused"), (503, "Transport Error")),
    ],
)
async def test_tcp_failures_end_the_notify(error: Exception, expected: tuple[int, str]) -> None:
    edge, producer = make_edge()
    tcp = HangingTcp()
    edge.tcp = tcp  # type: ignore[assignment]
    # A final NOTIFY: its outcome goes on the bus whatever it is.
    final = replace(notify("n1", "<sip:192.0.2.50;transport=tcp;lr>"), final=True)
    await edge.on_inbox_event(final, offset=1)
    await settle()
    tcp.outcome.set_exception(error)
    await settle()
    assert outcomes(producer) == [expected]


async def test_a_name_resolving_into_a_denied_network_ends_the_notify() -> None:
    edge, producer = make_edge(PRESENCE_NOTIFY_DENY_NETWORKS="127.0.0.0/8,::1")
    tcp = HangingTcp()
    edge.tcp = tcp  # type: ignore[assignment]
    await edge.on_inbox_event(notify("n1", "<sip:localhost:5090;transport=tcp;lr>"), offset=1)
    for _ in range(100):
        if outcomes(producer):
            break
        await asyncio.sleep(0.01)
    assert outcomes(producer) == [(408, "Notify Target Denied")]
    assert tcp.addresses == []


async def test_a_sips_route_goes_over_tls_verified_by_its_name() -> None:
    edge, producer = make_edge()
    tls = HangingTcp("tls")
    edge.tls = tls  # type: ignore[assignment]
    await edge.on_inbox_event(notify("n1", "<sips:localhost:5071;lr>"), offset=1)
    for _ in range(100):
        if tls.addresses:
            break
        await asyncio.sleep(0.01)
    assert tls.addresses[0][1] == 5071 and tls.server_names == ["localhost"]
    tls.outcome.set_result(None)
    await settle()
    assert outcomes(producer) == []  # sent; its answer is awaited


async def test_a_websocket_watcher_without_its_connection_fails_fast_with_430() -> None:
    edge, producer = make_edge()
    edge.ws = TcpConnections(lambda data, source: None, TcpLimits(), transport="ws", websocket=True)
    gone = replace(notify("n1", ""), route_set=[], flow="ws:192.0.2.10:53211")
    await edge.on_inbox_event(gone, offset=1)
    for _ in range(100):
        if outcomes(producer):
            break
        await asyncio.sleep(0.01)
    assert outcomes(producer) == [(430, "Flow Failed")]
    assert edge.inbox.unfinished() == 0


@pytest.mark.parametrize(
    ("status", "final", "timeout_ends", "on_bus"),
    [
        (200, False, True, False),  # delivered, the subscription goes on: nothing to do
        (503, False, True, False),  # failed for now: the subscription is kept
        (200, True, True, True),  # the final NOTIFY is done: the dialog goes
        (481, False, True, True),  # the watcher forgot the dialog
        (430, False, True, True),  # its WebSocket is gone
        (408, False, True, True),  # no answer at all...
        (408, False, False, False),  # ...unless PRESENCE_NOTIFY_TIMEOUT_ENDS_SUBSCRIPTION=0
    ],
)
async def test_only_outcomes_that_end_a_subscription_go_on_the_bus(
    status: int, final: bool, timeout_ends: bool, on_bus: bool
) -> None:
    edge, producer = make_edge(
        PRESENCE_NOTIFY_TIMEOUT_ENDS_SUBSCRIPTION="1" if timeout_ends else "0"
    )
    sent = replace(notify("n1", ""), final=final)
    edge.core._report_outcome(sent, status, "Whatever", now=0.0)
    edge._run(edge.core._take_actions())
    await settle()
    assert outcomes(producer) == ([(status, "Whatever")] if on_bus else [])
