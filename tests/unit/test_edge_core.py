"""The edge's SIP core (sip_edge.core) driven with a fake clock: no sockets, no Kafka,
no event loop. Times are exact: every deadline comes from `next_timer`."""

from __future__ import annotations

from dataclasses import replace

from presence import settings as settings_module
from presence.bus import events
from presence.sip.message import SipResponse
from presence.sip.parser import parse_message
from sip_edge.core import (
    Action,
    CancelDelivery,
    EdgeCore,
    Produce,
    Resolve,
    SendResponse,
    Transmit,
)
from sip_edge.policy import EdgePolicy
from sip_edge.source import Source

WALL = 1_700_000_000.0  # the wall clock the bus events carry; never read by the core
NOTIFY_TARGET = ("192.0.2.10", 5070)


def make_core(**env: str) -> EdgeCore:
    settings = settings_module.load({"PRESENCE_EDGE_ID": "e1", "PRESENCE_AUTH": "none", **env})
    return EdgeCore(EdgePolicy.of(settings))


def source(transport: str = "udp") -> Source:
    def never(data: bytes, address: tuple[str, int]) -> None:
        raise AssertionError("the core never sends by itself")

    return Source(transport, "192.0.2.5", 5062, never)


def publish(branch: str = "z9hG4bK-p1", transport: str = "UDP") -> bytes:
    body = b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com"/>'
    lines = [
        "PUBLISH sip:alice@example.com SIP/2.0",
        f"Via: SIP/2.0/{transport} 192.0.2.5:5062;branch={branch}",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=1",
        "To: <sip:alice@example.com>",
        "Call-ID: c1",
        "CSeq: 1 PUBLISH",
        "Event: presence",
        "Content-Type: application/pidf+xml",
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


def notify(notify_id: str, cseq: int, subscription: str = "d1") -> events.NotifyRequest:
    return events.NotifyRequest(
        notify_id=notify_id,
        username="alice",
        domain="example.com",
        event="presence",
        subscription=subscription,
        request_uri="sip:bob@192.0.2.10:5070",
        route_set=[],
        headers=[
            ("From", f"<sip:alice@example.com>;tag={subscription}"),
            ("To", "<sip:bob@example.com>;tag=b1"),
            ("Call-ID", "c1"),
            ("CSeq", f"{cseq} NOTIFY"),
            ("Event", "presence"),
            ("Subscription-State", "active;expires=600"),
        ],
        body="",
        flow="",
    )


def responses(actions: list[Action]) -> list[SipResponse]:
    parsed = [parse_message(a.data) for a in actions if isinstance(a, SendResponse)]
    return [message for message in parsed if isinstance(message, SipResponse)]


def statuses(actions: list[Action]) -> list[int]:
    return [response.status for response in responses(actions)]


def produced(actions: list[Action]) -> list[events.Event]:
    return [a.event for a in actions if isinstance(a, Produce)]


def transmits(actions: list[Action]) -> list[Transmit]:
    return [a for a in actions if isinstance(a, Transmit)]


def run_timers(core: EdgeCore, until: float) -> list[tuple[float, list[Action]]]:
    """Fire the core's timer at each deadline it names, up to `until`."""
    fired = []
    while (deadline := core.next_timer()) is not None and deadline <= until:
        fired.append((deadline, core.handle_timer(deadline)))
    return fired


def answer_of(transmit: Transmit, status: int, reason: str) -> bytes:
    """A watcher's response to a NOTIFY the core transmitted."""
    request = transmit.data.decode()
    head, _, _ = request.partition("\r\n\r\n")
    lines = head.split("\r\n")[1:]
    kept = [
        line for line in lines if line.split(":")[0] in ("Via", "From", "To", "Call-ID", "CSeq")
    ]
    return "\r\n".join([f"SIP/2.0 {status} {reason}", *kept, "Content-Length: 0", "", ""]).encode()


# --- server transactions -------------------------------------------------------------


def test_an_idle_core_has_no_timer() -> None:
    assert make_core().next_timer() is None


def test_a_request_goes_on_the_bus_once_and_its_retransmissions_get_the_same_response() -> None:
    core = make_core()
    first = core.receive(publish(), source(), now=10.0, wall=WALL)
    [event] = produced(first)
    assert isinstance(event, events.PublishRequest)
    assert (event.edge_id, event.received_at, event.flow) == ("e1", WALL, "udp:192.0.2.5:5062")
    assert statuses(first) == []
    # A retransmission before the store's reply: nothing sent, nothing produced.
    assert core.receive(publish(), source(), now=10.5, wall=WALL) == []
    reply = core.inbox_event(events.SipReply(event.request_id, 200, "OK"), now=11.0)
    [sent] = [a for a in reply if isinstance(a, SendResponse)]
    assert statuses(reply) == [200] and sent.address == ("192.0.2.5", 5062)
    # Retransmissions after it: the very same bytes again, never a second record.
    again = core.receive(publish(), source(), now=12.0, wall=WALL)
    assert [(a.data, a.address) for a in again if isinstance(a, SendResponse)] == [
        (sent.data, sent.address)
    ]
    assert produced(again) == []


def test_timer_j_absorbs_retransmissions_for_64_t1_over_udp() -> None:
    core = make_core(PRESENCE_SIP_T1_MS="500")
    [event] = produced(core.receive(publish(), source(), now=0.0, wall=WALL))
    core.inbox_event(events.SipReply(event.request_id, 200, "OK"), now=1.0)
    assert core.next_timer() == 1.0 + 32.0  # Timer J = 64 * T1
    assert core.handle_timer(32.9) == []
    assert statuses(core.receive(publish(), source(), now=32.9, wall=WALL)) == [200]
    assert run_timers(core, until=33.0) == [(33.0, [])]
    assert len(core.transactions) == 0 and core.next_timer() is None
    # After Timer J the same request is new again (and keeps its request id).
    [again] = produced(core.receive(publish(), source(), now=33.5, wall=WALL))
    assert again.request_id == event.request_id  # type: ignore[attr-defined]


def test_timer_j_follows_the_configured_t1() -> None:
    core = make_core(PRESENCE_SIP_T1_MS="50")
    [event] = produced(core.receive(publish(), source(), now=0.0, wall=WALL))
    core.inbox_event(events.SipReply(event.request_id, 200, "OK"), now=1.0)
    assert core.next_timer() == 1.0 + 64 * 0.05


def test_timer_j_is_zero_over_tcp() -> None:
    core = make_core()
    tcp = source("tcp")
    [event] = produced(core.receive(publish(transport="TCP"), tcp, now=0.0, wall=WALL))
    assert core.next_timer() == 0.0 + events.REPLY_DEADLINE  # no 100 over TCP
    core.inbox_event(events.SipReply(event.request_id, 200, "OK"), now=0.2)
    assert len(core.transactions) == 0 and core.next_timer() is None


def test_a_slow_udp_request_gets_100_trying_at_3_5_s_and_503_at_the_deadline() -> None:
    core = make_core()
    [event] = produced(core.receive(publish(), source(), now=0.0, wall=WALL))
    assert core.next_timer() == 3.5  # RFC 4320: once the client's Timer E reached T2
    fired = run_timers(core, until=8.0)
    assert [(when, statuses(actions)) for when, actions in fired] == [(3.5, [100]), (8.0, [503])]
    trying, store_unavailable = responses(fired[0][1] + fired[1][1])
    assert trying.headers.get("To") == "<sip:alice@example.com>"  # no tag on a 100
    assert store_unavailable.reason == "Store Unavailable"
    assert store_unavailable.headers.get("Retry-After") == "5"
    # The store's late reply finds the transaction answered: nothing more is sent.
    assert core.inbox_event(events.SipReply(event.request_id, 200, "OK"), now=9.0) == []
    # A retransmission now gets the 503 again.
    assert statuses(core.receive(publish(), source(), now=9.5, wall=WALL)) == [503]


def test_no_100_trying_over_tcp() -> None:
    core = make_core()
    core.receive(publish(transport="TCP"), source("tcp"), now=0.0, wall=WALL)
    fired = run_timers(core, until=8.0)
    assert [(when, statuses(actions)) for when, actions in fired] == [(8.0, [503])]


def test_admission_refuses_past_the_backlog_at_once_with_retry_after() -> None:
    core = make_core(PRESENCE_EDGE_MIN_BACKLOG="2")
    first = core.receive(publish("z9hG4bK-1"), source(), now=0.0, wall=WALL)
    second = core.receive(publish("z9hG4bK-2"), source(), now=0.0, wall=WALL)
    third = core.receive(publish("z9hG4bK-3"), source(), now=0.0, wall=WALL)
    assert len(produced(first)) == len(produced(second)) == 1
    assert produced(third) == []
    [refusal] = responses(third)
    assert (refusal.status, refusal.reason) == (503, "Overloaded")
    assert int(refusal.headers.get("Retry-After") or "0") in range(1, 6)
    # One reply frees a place in the backlog.
    [event] = produced(first)
    core.inbox_event(events.SipReply(event.request_id, 200, "OK"), now=0.1)
    assert len(produced(core.receive(publish("z9hG4bK-4"), source(), now=0.2, wall=WALL))) == 1


def test_kafka_down_is_503_at_once_and_a_failed_send_answers_its_request() -> None:
    core = make_core()
    [event] = produced(core.receive(publish("z9hG4bK-1"), source(), now=0.0, wall=WALL))
    failed = core.produce_failed(event.request_id, now=0.1)  # type: ignore[attr-defined]
    assert statuses(failed) == [503] and core.bus_up is False
    refused = core.receive(publish("z9hG4bK-2"), source(), now=0.2, wall=WALL)
    assert produced(refused) == [] and statuses(refused) == [503]


# --- NOTIFY client transactions --------------------------------------------------------


def test_timer_e_doubles_up_to_t2_over_udp_and_timer_f_ends_it_with_408() -> None:
    core = make_core(PRESENCE_SIP_T1_MS="500")
    sent = core.inbox_event(replace(notify("n1", 1), final=True), now=0.0, offset=7)
    [first] = transmits(sent)
    assert (first.transport, first.address, first.first) == ("udp", NOTIFY_TARGET, True)
    fired = run_timers(core, until=32.0)
    resent = [when for when, actions in fired for t in transmits(actions)]
    assert resent == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(t.data == first.data and not t.first for _, a in fired for t in transmits(a))
    when, timed_out = fired[-1]
    assert when == 32.0  # Timer F = 64 * T1
    assert CancelDelivery(first.branch) in timed_out
    [outcome] = produced(timed_out)
    assert isinstance(outcome, events.NotifyOutcome)
    assert (outcome.status, outcome.reason) == (408, "Request Timeout")
    assert core.inbox.unfinished() == 0
    # The dialog's last CSeq is remembered for 64*T1 after its end, then forgotten.
    assert core.next_timer() == 64.0 and len(core.pacer) == 1
    assert run_timers(core, until=64.0) == [(64.0, [])]
    assert len(core.pacer) == 0 and core.next_timer() is None


def test_a_provisional_response_moves_retransmissions_to_t2_and_a_final_one_ends_them() -> None:
    core = make_core()
    [first] = transmits(core.inbox_event(notify("n1", 1), now=0.0, offset=1))
    core.receive(answer_of(first, 100, "Trying"), source(), now=0.2, wall=WALL)
    fired = run_timers(core, until=9.0)
    assert [when for when, actions in fired if transmits(actions)] == [4.2, 8.2]
    done = core.receive(answer_of(first, 200, "OK"), source(), now=9.0, wall=WALL)
    assert done == []  # delivered, the subscription goes on: nothing on the bus
    assert len(core.client_transactions) == 0 and core.inbox.committable() is None


def test_a_notify_over_tcp_is_never_retransmitted_but_timer_f_still_ends_it() -> None:
    core = make_core()
    tcp_notify = replace(notify("n1", 1), flow="tcp:192.0.2.10:5070")
    [first] = transmits(core.inbox_event(tcp_notify, now=0.0, offset=1))
    assert first.transport == "tcp"
    fired = run_timers(core, until=32.0)
    assert [when for when, actions in fired] == [32.0]
    assert [(o.status, o.reason) for o in produced(fired[0][1])] == [(408, "Request Timeout")]  # type: ignore[attr-defined]


def test_a_name_is_resolved_before_the_notify_leaves() -> None:
    core = make_core()
    named = replace(notify("n1", 1), route_set=["<sip:proxy.example.com:5080;lr>"])
    [lookup] = core.inbox_event(named, now=0.0, offset=1)
    assert isinstance(lookup, Resolve) and (lookup.host, lookup.port) == ("proxy.example.com", 5080)
    # Timer E fires while the name is being looked up: nothing to resend yet.
    assert transmits(core.handle_timer(0.5)) == []
    [first] = transmits(core.resolved(lookup.branch, ("192.0.2.80", 5080), now=0.6))
    assert first.address == ("192.0.2.80", 5080) and first.first


def test_a_failed_delivery_ends_the_notify_and_releases_the_next_one() -> None:
    core = make_core()
    tcp = "tcp:192.0.2.10:5070"
    [first] = transmits(core.inbox_event(replace(notify("n1", 1), flow=tcp), now=0.0, offset=1))
    assert core.inbox_event(replace(notify("n2", 2), flow=tcp), now=0.1, offset=2) == []
    failed = core.delivery_failed(first.branch, 503, "Transport Error", "transport_error", "x", 0.2)
    [following] = transmits(failed)
    assert following.notify.notify_id == "n2"
    assert produced(failed) == []  # 503: the subscription is kept
    assert core.inbox.committable() == 2


# --- NOTIFY pacing --------------------------------------------------------------------


def test_notifies_are_paced_per_subscription() -> None:
    core = make_core(PRESENCE_NOTIFY_MIN_INTERVAL="5")
    [n1] = transmits(core.inbox_event(notify("n1", 1), now=0.0, offset=1))
    core.receive(answer_of(n1, 200, "OK"), source(), now=0.2, wall=WALL)
    # Another dialog is not held up by this one's interval.
    assert len(transmits(core.inbox_event(notify("m1", 1, "d2"), now=1.0, offset=2))) == 1
    assert core.inbox_event(notify("n2", 2), now=1.0, offset=3) == []
    assert core.inbox_event(notify("n3", 3), now=2.0, offset=4) == []  # replaces n2
    # The pacer's deadline (5.0) comes before the other dialog's Timer E (1.5).
    fired = run_timers(core, until=5.0)
    released = [(when, t.notify.notify_id) for when, a in fired for t in transmits(a) if t.first]
    assert released == [(5.0, "n3")]
    assert core.inbox.committable() == 2  # m1 (still unanswered) holds the inbox
