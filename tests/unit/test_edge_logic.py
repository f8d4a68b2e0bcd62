"""The edge's pure decisions: local answers, server transactions, response routing."""

import pytest

from presence.settings import load
from presence.sip.grammar import parse_via
from presence.sip.parser import parse_message
from presence.sip.routing import response_address, stamp_via
from sip_edge.checks import check_request, options_answer
from sip_edge.policy import EdgeTimers, RequestRules
from sip_edge.transactions import TransactionTable, transaction_key

TIMERS = EdgeTimers(t1=0.5)
TIMER_J_UDP = TIMERS.timer_j_udp  # 32 s


def request(
    method: str = "PUBLISH", extra: str = "Event: presence\r\n", body: bytes = b""
) -> bytes:
    return (
        f"{method} sip:alice@example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKabc\r\n"
        "From: <sip:bob@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n"
        f"Call-ID: c1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def check(data: bytes, **settings: str) -> tuple[int, list[tuple[str, str]]] | None:
    message = parse_message(data)
    environment = {f"PRESENCE_{name.upper()}": value for name, value in settings.items()}
    answer = check_request(message, RequestRules.of(load(environment)))  # type: ignore[arg-type]
    return None if answer is None else (answer.status, answer.headers)


def test_options_answer_lists_methods_types_and_packages() -> None:
    headers = dict(options_answer(RequestRules.of(load({}))).headers)
    assert headers == {
        "Allow": "OPTIONS, PUBLISH, SUBSCRIBE, REGISTER",
        "Accept": (
            "application/dialog-info+xml, application/pidf+xml, application/simple-message-summary"
        ),
        "Allow-Events": "presence, presence.winfo, dialog, message-summary",
    }


def test_valid_publish_passes() -> None:
    assert check(request()) is None


def test_unknown_method_is_405_with_allow() -> None:
    allow = "OPTIONS, PUBLISH, SUBSCRIBE, REGISTER"
    assert check(request("MESSAGE")) == (405, [("Allow", allow)])


def test_register_is_405_when_the_registrar_is_off() -> None:
    assert check(request("REGISTER"), registrar="0") == (
        405,
        [("Allow", "OPTIONS, PUBLISH, SUBSCRIBE")],
    )


def test_unknown_required_extension_is_420_naming_it() -> None:
    data = request(extra="Event: presence\r\nRequire: 100rel, foo\r\n")
    assert check(data) == (420, [("Unsupported", "100rel, foo")])


def test_domain_not_served_is_404() -> None:
    result = check(request(), domains="example.org")
    assert result is not None and result[0] == 404
    assert check(request(), domains="example.org, EXAMPLE.com") is None


def test_non_sip_uri_scheme_is_416() -> None:
    data = request().replace(b"PUBLISH sip:alice@example.com", b"PUBLISH tel:+15551234")
    assert check(data) == (416, [])


def test_unknown_package_is_489_with_allow_events() -> None:
    result = check(request(extra="Event: conference\r\n"))
    assert result is not None and result[0] == 489
    assert ("Allow-Events", "presence, presence.winfo, dialog, message-summary") in result[1]


def test_disabled_package_is_489_and_left_out_of_options() -> None:
    subscribe = request(method="SUBSCRIBE", extra="Event: presence.winfo\r\n")
    result = check(subscribe, event_packages="presence")
    assert result == (489, [("Allow-Events", "presence")])
    headers = dict(
        options_answer(RequestRules.of(load({"PRESENCE_EVENT_PACKAGES": "presence"}))).headers
    )
    assert headers["Allow-Events"] == "presence"


def test_publish_of_watcher_info_is_489() -> None:
    # presence.winfo is served to subscribers, but its state comes from subscriptions.
    result = check(request(extra="Event: presence.winfo\r\n"))
    assert result is not None and result[0] == 489
    subscribe = request(method="SUBSCRIBE", extra="Event: presence.winfo\r\n", body=b"")
    assert check(subscribe) is None


def test_max_forwards_zero_is_483() -> None:
    data = request().replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    assert check(data) == (483, [])


def test_short_expiry_is_423_with_min_expires() -> None:
    assert check(request(extra="Event: presence\r\nExpires: 5\r\n"), min_expires="60") == (
        423,
        [("Min-Expires", "60")],
    )


def test_unsupported_body_type_is_415_with_accept() -> None:
    data = request(extra="Event: presence\r\nContent-Type: text/plain\r\n", body=b"hi")
    assert check(data) == (415, [("Accept", "application/pidf+xml")])


def test_retransmission_is_found_and_timer_j_ends_it() -> None:
    table = TransactionTable[None](TIMERS)
    key = transaction_key(
        "z9hG4bKx", "10.0.0.1:5062", "PUBLISH", call_id="c", cseq="1", from_tag="t"
    )
    transaction = table.start(key, "r1", now=0.0, context=None)
    assert table.find(key) is transaction
    table.respond(transaction, b"SIP/2.0 200 OK", final=True, reliable=False, now=1.0)
    assert table.expire(1.0 + TIMER_J_UDP - 0.1, give_up_after=8) == []
    assert table.find(key) is transaction
    table.expire(1.0 + TIMER_J_UDP, give_up_after=8)
    assert table.find(key) is None and table.by_request_id("r1") is None


def test_reliable_transport_ends_the_transaction_at_once() -> None:
    table = TransactionTable[None](TIMERS)
    transaction = table.start(("k",), "r1", now=0.0, context=None)
    table.respond(transaction, b"x", final=True, reliable=True, now=0.0)
    table.expire(0.0, give_up_after=8)
    assert len(table) == 0


def test_unanswered_transaction_is_reported_once_overdue() -> None:
    table = TransactionTable[None](TIMERS)
    transaction = table.start(("k",), "r1", now=0.0, context=None)
    assert table.expire(7.9, give_up_after=8) == []
    assert table.expire(8.0, give_up_after=8) == [transaction]


def test_pre_rfc3261_branch_falls_back_to_dialog_identifiers() -> None:
    old = transaction_key("1234", "h:5060", "PUBLISH", call_id="c", cseq="1", from_tag="t")
    assert old[0] == "2543" and "c" in old


@pytest.mark.parametrize(
    ("via", "expected_via", "address"),
    [
        # rport asked: filled in, and the response goes back to the source port.
        ("SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK1;rport", "rport=40000", ("192.0.2.7", 40000)),
        # sent-by differs from the source: received added, port from sent-by.
        ("SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK1", "received=192.0.2.7", ("192.0.2.7", 5062)),
        # no port in sent-by: the transport's default.
        (
            "SIP/2.0/UDP phone.example.com;branch=z9hG4bK1",
            "received=192.0.2.7",
            ("192.0.2.7", 5060),
        ),
    ],
)
def test_response_routing(via: str, expected_via: str, address: tuple[str, int]) -> None:
    parsed = parse_via(via)
    assert stamp_via(parsed, "192.0.2.7", 40000)
    assert expected_via in str(parsed)
    assert response_address(parsed, "192.0.2.7", 40000) == address


def test_via_matching_the_source_is_left_alone() -> None:
    parsed = parse_via("SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1")
    assert not stamp_via(parsed, "192.0.2.7", 5060)
    assert "received" not in str(parsed)


def test_sweep_finds_what_is_due_among_many_in_any_answer_order() -> None:
    """The indexes behind expire/unanswered_since agree with a plain scan of the table."""
    table = TransactionTable[None](TIMERS)
    started = [table.start((f"k{i}",), f"r{i}", now=i * 0.01, context=None) for i in range(2000)]
    # Every third gets a 100 only, every fifth a reliable final, every seventh a UDP final,
    # answered in reverse order of start.
    for i in reversed(range(2000)):
        if i % 5 == 0:
            table.respond(started[i], b"200", final=True, reliable=True, now=20.0)
        elif i % 7 == 0:
            table.respond(started[i], b"200", final=True, reliable=False, now=20.0)
        elif i % 3 == 0:
            table.respond(started[i], b"100", final=False, reliable=False, now=20.0)
    for now in (20.0, 25.0, 40.0, 20.0 + TIMER_J_UDP, 60.0):  # a monotonic clock
        overdue = table.expire(now, give_up_after=8)
        assert overdue == [t for t in started if not t.final and now - t.started_at >= 8]
        silent = table.unanswered_since(now - 15)
        assert silent == [
            t for t in started if t.last_response is None and t.started_at <= now - 15
        ]
        expected_alive = [t for t in started if t.ends_at is None or t.ends_at > now]
        assert len(table) == len(expected_alive)
        assert all(table.find(t.key) is t for t in expected_alive)
        assert table.unanswered() == sum(1 for t in started if not t.final)


def test_a_second_final_response_restarts_timer_j() -> None:
    table = TransactionTable[None](TIMERS)
    transaction = table.start(("k",), "r1", now=0.0, context=None)
    table.respond(transaction, b"503", final=True, reliable=False, now=1.0)
    table.respond(transaction, b"200", final=True, reliable=False, now=2.0)
    table.expire(1.0 + TIMER_J_UDP, give_up_after=8)
    assert table.find(("k",)) is transaction
    table.expire(2.0 + TIMER_J_UDP, give_up_after=8)
    assert table.find(("k",)) is None and table.unanswered() == 0


def test_a_key_started_again_after_timer_j_is_a_new_transaction() -> None:
    table = TransactionTable[None](TIMERS)
    first = table.start(("k",), "r1", now=0.0, context=None)
    table.respond(first, b"200", final=True, reliable=True, now=0.5)
    table.expire(1.0, give_up_after=8)
    second = table.start(("k",), "r1", now=2.0, context=None)
    assert table.find(("k",)) is second and table.unanswered() == 1
    assert table.expire(10.0, give_up_after=8) == [second]
    assert table.unanswered_since(5.0) == [second]
