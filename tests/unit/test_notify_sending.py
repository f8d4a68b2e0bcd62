"""NOTIFY client transactions (RFC 3261 §17.1.2) and next-hop choice, without I/O."""

import itertools

import pytest

from presence.bus.events import NotifyRequest
from presence.sip.parser import parse_message, serialize
from sip_edge.client_transactions import ClientTransactions
from sip_edge.notify import Hop, build_notify, next_hop, parse_flow
from sip_edge.policy import EdgeTimers

TIMERS = EdgeTimers(t1=0.5)
T2 = TIMERS.t2


def notify_request(**changes: object) -> NotifyRequest:
    values: dict[str, object] = dict(
        notify_id="n1",
        username="alice",
        domain="example.com",
        event="presence",
        subscription="10abc",
        request_uri="sip:bob@192.0.2.10:5070",
        route_set=[],
        headers=[
            ("From", "<sip:alice@example.com>;tag=10abc"),
            ("To", "<sip:bob@example.com>;tag=b1"),
            ("Call-ID", "c1"),
            ("CSeq", "7 NOTIFY"),
            ("Event", "presence"),
            ("Subscription-State", "active;expires=600"),
            ("Contact", "<sip:127.0.0.1:5060>"),
        ],
        body="",
        flow="",
    )
    values.update(changes)
    return NotifyRequest(**values)  # type: ignore[arg-type]


def retransmission_times(transactions: ClientTransactions, until: float) -> list[float]:
    times, now = [], 0.0
    while now <= until:
        retransmit, _ = transactions.due(now)
        times += [now] * len(retransmit)
        now = round(now + 0.125, 3)
    return times


def test_udp_timer_e_doubles_up_to_t2_and_timer_f_ends_it() -> None:
    transactions = ClientTransactions[None](TIMERS)
    transactions.start("b1", "n1", b"NOTIFY", reliable=False, now=0.0, context=None)
    # Retransmissions at 0.5, 1.5, 3.5, then every T2 = 4 s: 7.5, 11.5, ...
    times = retransmission_times(transactions, 31.875)
    assert times[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert all(later - earlier == T2 for earlier, later in itertools.pairwise(times[3:]))
    _, timed_out = transactions.due(32.0)
    assert [t.notify_id for t in timed_out] == ["n1"]
    assert len(transactions) == 0


def test_tcp_is_never_retransmitted_but_still_times_out() -> None:
    transactions = ClientTransactions[None](TIMERS)
    transactions.start("b1", "n1", b"NOTIFY", reliable=True, now=0.0, context=None)
    assert retransmission_times(transactions, 31.9) == []
    assert [t.branch for t in transactions.due(32.0)[1]] == ["b1"]


def test_final_response_ends_the_transaction() -> None:
    transactions = ClientTransactions[None](TIMERS)
    transactions.start("b1", "n1", b"NOTIFY", reliable=False, now=0.0, context=None)
    assert transactions.response("b1", 200, now=0.2) is not None
    assert transactions.get("b1") is None
    assert transactions.due(40.0) == ([], [])
    assert transactions.response("b1", 200, now=0.3) is None  # a retransmitted 200


def test_provisional_response_moves_retransmissions_to_t2() -> None:
    transactions = ClientTransactions[None](TIMERS)
    transactions.start("b1", "n1", b"NOTIFY", reliable=False, now=0.0, context=None)
    transactions.response("b1", 100, now=0.1)
    assert retransmission_times(transactions, 9.0) == [4.125, 8.125]


def test_next_hop_prefers_the_route_set() -> None:
    notify = notify_request(
        route_set=["<sip:proxy.example.com:5080;lr;transport=tcp>", "<sip:p2.example.com;lr>"],
        flow="udp:198.51.100.1:40000",
    )
    assert next_hop(notify) == Hop("tcp", "proxy.example.com", 5080)


def test_next_hop_without_routes_is_the_subscribe_flow() -> None:
    assert next_hop(notify_request(flow="tcp:198.51.100.1:40000")) == Hop(
        "tcp", "198.51.100.1", 40000
    )


def test_next_hop_without_flow_is_the_remote_target() -> None:
    assert next_hop(notify_request()) == Hop("udp", "192.0.2.10", 5070)
    ipv6 = notify_request(request_uri="sip:bob@[2001:db8::1]")
    assert next_hop(ipv6) == Hop("udp", "2001:db8::1", 5060)


@pytest.mark.parametrize("transport", ["tls", "ws", "wss"])
def test_secure_and_websocket_flows_are_next_hops(transport: str) -> None:
    assert next_hop(notify_request(flow=f"{transport}:198.51.100.1:40000")) == Hop(
        transport, "198.51.100.1", 40000
    )


def test_sips_and_tls_targets_go_over_tls() -> None:
    sips = notify_request(route_set=["<sips:proxy.example.com;lr>"])
    assert next_hop(sips) == Hop("tls", "proxy.example.com", 5061)
    tagged = notify_request(request_uri="sip:bob@192.0.2.10:5071;transport=TLS")
    assert next_hop(tagged) == Hop("tls", "192.0.2.10", 5071)
    # A browser's Contact: reachable over its flow only (no flow here: the edge has
    # no connection to it and fails the NOTIFY at once).
    browser = notify_request(request_uri="sips:x@df7jal23ls0d.invalid;transport=ws")
    assert next_hop(browser) == Hop("wss", "df7jal23ls0d.invalid", 443)


@pytest.mark.parametrize("flow", ["", "sctp:1.2.3.4:5", "udp:1.2.3.4", "udp:1.2.3.4:x"])
def test_unusable_flows_are_ignored(flow: str) -> None:
    assert parse_flow(flow) is None


def test_built_notify_is_a_valid_in_dialog_request() -> None:
    notify = notify_request(
        route_set=["<sip:proxy.example.com;lr>"],
        body='<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="x"/>',
        headers=[*notify_request().headers, ("Content-Type", "application/pidf+xml")],
    )
    via = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKn1;rport"
    parsed = parse_message(serialize(build_notify(notify, via)))
    assert parsed.method == "NOTIFY"  # type: ignore[union-attr]
    assert parsed.uri == "sip:bob@192.0.2.10:5070"  # type: ignore[union-attr]
    assert parsed.headers.get("Route") == "<sip:proxy.example.com;lr>"
    assert parsed.headers.get("CSeq") == "7 NOTIFY"
    assert parsed.headers.get("Max-Forwards") == "70"
    assert parsed.body == notify.body.encode()
