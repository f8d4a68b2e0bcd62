"""SIP requests -> bus events, and the registrar's plan, without I/O."""

import pytest

from presence.bus import events
from presence.settings import load
from presence.sip.answers import Answer
from presence.sip.parser import parse_message
from presence_store.registrar import Binding, plan_bindings
from sip_edge.requests import publish_event, register_event, strip_own_routes


def sip(method: str, uri: str, extra: str = "") -> bytes:
    return (
        f"{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKabc\r\n"
        "From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n"
        f"Call-ID: c1\r\nCSeq: 7 {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def translate(function, data: bytes):  # type: ignore[no-untyped-def]
    request = parse_message(data)
    return function(request, request_id="r1", edge_id="e1", flow="udp:10.0.0.1:5062", now=5.0)


def test_publish_names_the_presentity_from_the_request_uri() -> None:
    event = translate(
        publish_event,
        sip("PUBLISH", "sip:Alice@Example.COM", "Event: presence;id=1\r\nExpires: 60\r\n"),
    )
    assert isinstance(event, events.PublishRequest)
    assert (event.username, event.domain, event.event, event.expires) == (
        "Alice",
        "example.com",
        "presence",
        60,
    )


def test_publish_to_a_uri_without_user_is_404() -> None:
    answer = translate(publish_event, sip("PUBLISH", "sip:example.com", "Event: presence\r\n"))
    assert isinstance(answer, Answer) and answer.status == 404


def test_register_collects_contacts_with_their_parameters() -> None:
    extra = (
        "Contact: <sip:alice@10.0.0.1:5062;ob>;expires=120;q=0.5, <sip:alice@10.0.0.2>\r\n"
        "Expires: 300\r\n"
    )
    event = translate(register_event, sip("REGISTER", "sip:example.com", extra))
    assert isinstance(event, events.RegisterRequest)
    assert event.contacts == [
        ("sip:alice@10.0.0.1:5062;ob", 120, 0.5),
        ("sip:alice@10.0.0.2", None, None),
    ]
    assert (event.username, event.expires, event.cseq, event.flow) == (
        "alice",
        300,
        7,
        "udp:10.0.0.1:5062",
    )


def test_register_carries_each_contacts_instance_id() -> None:
    # linphone's REGISTER Contact; the second contact has none.
    extra = (
        "Contact: <sip:alice@10.0.0.1:5062;transport=udp>"
        ';+sip.instance="<urn:uuid:B061A339-F4FE-006F-8BD7-D10173C4E40C>", <sip:alice@10.0.0.2>\r\n'
    )
    event = translate(register_event, sip("REGISTER", "sip:example.com", extra))
    assert isinstance(event, events.RegisterRequest)
    assert event.instances == {
        "sip:alice@10.0.0.1:5062;transport=udp": "urn:uuid:b061a339-f4fe-006f-8bd7-d10173c4e40c"
    }


@pytest.mark.parametrize(
    ("contact", "instance"),
    [
        ("", None),  # linphone and baresip send no Contact in PUBLISH
        ('Contact: <sip:alice@10.0.0.1>;+sip.instance="<urn:uuid:1>"\r\n', "urn:uuid:1"),
        ("Contact: <sip:alice@10.0.0.1>\r\n", None),
    ],
)
def test_publish_carries_its_contacts_instance_id(contact: str, instance: str | None) -> None:
    event = translate(
        publish_event, sip("PUBLISH", "sip:alice@example.com", f"Event: presence\r\n{contact}")
    )
    assert isinstance(event, events.PublishRequest)
    assert event.instance == instance


def test_register_with_a_bad_contact_expires_is_400() -> None:
    extra = "Contact: <sip:alice@10.0.0.1>;expires=soon\r\n"
    answer = translate(register_event, sip("REGISTER", "sip:example.com", extra))
    assert isinstance(answer, Answer) and answer.status == 400


def test_own_route_is_removed_and_others_kept() -> None:
    request = parse_message(
        sip(
            "SUBSCRIBE",
            "sip:bob@example.com",
            "Route: <sip:127.0.0.1;lr>, <sip:proxy.example.com;lr>\r\n"
            "Route: <sip:127.0.0.1:5070;lr>\r\n",
        )
    )
    strip_own_routes(request, {("127.0.0.1", 5060)})  # type: ignore[arg-type]
    assert request.headers.get_all("Route") == [
        "<sip:proxy.example.com;lr>",
        "<sip:127.0.0.1:5070;lr>",
    ]


EXPIRY = load({"PRESENCE_MIN_EXPIRES": "60", "PRESENCE_MAX_EXPIRES": "1800"}).expiry_policy


def register(contacts: list, expires: int | None = None) -> events.RegisterRequest:  # type: ignore[type-arg]
    return events.RegisterRequest(
        "r", "e", 0.0, "alice", "example.com", contacts, expires, "c", 1, ""
    )


def test_registrar_grants_expiry_from_contact_then_header_then_default() -> None:
    plan = plan_bindings(register([("sip:a@h", 120, None), ("sip:b@h", None, 1.0)], 600), EXPIRY)
    assert plan == [Binding("sip:a@h", 120, None), Binding("sip:b@h", 600, 1.0)]
    assert plan_bindings(register([("sip:a@h", None, None)]), EXPIRY) == [
        Binding("sip:a@h", 1800, None)  # default 3600, capped at max_expires
    ]


@pytest.mark.parametrize(
    ("contacts", "expires", "status"),
    [
        ([("*", None, None)], None, 400),  # wildcard needs Expires: 0
        ([("*", None, None), ("sip:a@h", None, None)], 0, 400),  # and must be alone
        ([("sip:a@h", 10, None)], None, 423),
    ],
)
def test_registrar_refusals(contacts: list, expires: int | None, status: int) -> None:  # type: ignore[type-arg]
    plan = plan_bindings(register(contacts, expires), EXPIRY)
    assert isinstance(plan, Answer) and plan.status == status


def test_registrar_wildcard_removes_everything() -> None:
    assert plan_bindings(register([("*", None, None)], 0), EXPIRY) == [Binding("*", 0, None)]
