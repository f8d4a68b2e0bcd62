"""Whatever the edge accepts, the store can store: random requests (hypothesis) go
through the edge's own parsing, checks and translation, and every one it would put
on the bus is applied by the store's storage code to the real PostgreSQL schema (in
a transaction that is rolled back). An exception here is a request that would have
failed a store batch."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from presence import settings as settings_module
from presence.bus import events
from presence.sip.answers import Answer
from presence.sip.message import SipParseError
from presence.sip.parser import parse_message
from presence_store.publish_store import apply_publish
from presence_store.registrar import apply_register
from presence_store.subscribe_store import apply_subscribe
from sip_edge.checks import check_request, input_defect
from sip_edge.policy import RequestRules
from sip_edge.requests import publish_event, register_event, subscribe_event

from .conftest import base_env

pytestmark = pytest.mark.integration

TRANSLATE = {"PUBLISH": publish_event, "SUBSCRIBE": subscribe_event, "REGISTER": register_event}
APPLY = {
    events.PublishRequest: apply_publish,
    events.SubscribeRequest: apply_subscribe,
    events.RegisterRequest: apply_register,
}

# Pieces of user parts and other fields: plain, escaped (a NUL, UTF-8, invalid UTF-8),
# raw non-ASCII and control characters, separators.
_PIECES = ["a", "Z", "9", "-", ".", "_", "%00", "%41", "%c3%a9", "%ff", "%0a", "é", "☃",
           "\x00", "\x01", "\t", " ", ";", "?", "&", "=", "+", '"', "<", ">", "@",
           ":", ","]  # fmt: skip
_SAFE = ["a", "Z", "9", "-", ".", "_", "!", "~", "*", "%00", "%41", "%c3%a9", "%0a", "%7f"]
_FIELD = st.one_of(
    # What the grammar allows, with escapes that decode to a NUL, UTF-8, controls.
    st.lists(st.sampled_from(_SAFE), min_size=1, max_size=8).map("".join),
    st.lists(st.sampled_from(_SAFE), min_size=1, max_size=8).map("".join),
    # Long ones, near and past the column limits.
    st.tuples(st.sampled_from("axZ9"), st.integers(1, 1100)).map(lambda t: t[0] * t[1]),
    st.tuples(st.sampled_from("axZ9"), st.integers(60, 260)).map(lambda t: t[0] * t[1]),
    # Anything.
    st.lists(st.sampled_from(_PIECES), min_size=1, max_size=8).map("".join),
    st.text(max_size=20),
)
# A request mostly of what the grammar allows (so that many reach the store), or wild.
_GRAMMATICAL = st.one_of(
    st.lists(st.sampled_from(_SAFE[:9] * 4 + _SAFE[9:]), min_size=1, max_size=8).map("".join),
    st.lists(st.sampled_from(_SAFE[:9]), min_size=1, max_size=8).map("".join),
    st.tuples(st.sampled_from("axZ9"), st.integers(1, 70)).map(lambda t: t[0] * t[1]),
    st.tuples(st.sampled_from("axZ9"), st.integers(60, 260)).map(lambda t: t[0] * t[1]),
)
_HOST = st.one_of(
    st.just("example.com"),
    st.tuples(st.sampled_from("abc"), st.integers(1, 200)).map(lambda t: t[0] * t[1] + ".com"),
    st.sampled_from(["[::1]", "192.0.2.1", "EXAMPLE.com", "a_b.example.com", "x..y", "é.com"]),
)


# Expires values: good ones, and an out-of-range, a negative, an Arabic-Indic digit.
EXPIRES = ["0", "60", "4294967295", "4294967296", "-1", "\u0661"]


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["PUBLISH", "SUBSCRIBE", "REGISTER"]))
    field = draw(st.sampled_from([_GRAMMATICAL, _GRAMMATICAL, _GRAMMATICAL, _FIELD]))
    user, host, tag, call_id = draw(field), draw(_HOST), draw(field), draw(field)
    event_id = draw(field)
    to_tag = draw(st.one_of(st.none(), field))
    contact = draw(field)
    uri = f"sip:{user}@{host}"
    lines = [
        f"{method} {uri} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1",
        f"From: <sip:{draw(field)}@{host}>;tag={tag}",
        f"To: <{uri}>" + (f";tag={to_tag}" if to_tag is not None else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {draw(st.integers(0, 2**31))} {method}",
        f"Contact: <sip:{contact}@192.0.2.1>;expires={draw(st.sampled_from(['0', '60', 'x']))}",
        f"Expires: {draw(st.sampled_from(EXPIRES))}",
    ]
    if method != "REGISTER":
        lines.append(f"Event: presence;id={event_id}")
    if draw(st.booleans()):
        lines.append(f"Record-Route: <sip:{draw(field)}@192.0.2.9;lr>")
    body = b""
    if method == "PUBLISH":
        if draw(st.booleans()):
            lines.append(f"SIP-If-Match: {draw(field)}")
        entity = f"sip:{user}@{host}"
        tuple_id = draw(field)
        body = (
            f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{entity}">'
            f'<tuple id="{tuple_id}"><status><basic>open</basic></status>'
            f"<contact>{draw(field)}</contact></tuple></presence>"
        ).encode()
        lines.append("Content-Type: application/pidf+xml")
    lines += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    running = asyncio.new_event_loop()
    yield running
    running.close()


@pytest.fixture(scope="module")
def connection(test_database: str, loop: asyncio.AbstractEventLoop) -> Iterator[asyncpg.Connection]:
    opened = loop.run_until_complete(asyncpg.connect(test_database))
    yield opened
    loop.run_until_complete(opened.close())


class _Rollback(Exception):
    pass


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=requests())
def test_what_the_edge_accepts_the_store_can_store(
    data: bytes, connection: asyncpg.Connection, loop: asyncio.AbstractEventLoop
) -> None:
    config = settings_module.load(base_env())
    rules = RequestRules.of(config)
    try:
        request = parse_message(data)
    except SipParseError as error:
        event(f"refused by the parser: {error.reason}")
        return
    if input_defect(request) is not None or check_request(request, rules) is not None:
        event("refused by the edge's checks")
        return
    bus_event = TRANSLATE[request.method](
        request, request_id="r-" + str(hash(data)), edge_id="e", flow="udp:192.0.2.1:5060",
        now=0.0,
    )  # fmt: skip
    if isinstance(bus_event, Answer):
        event("answered by the edge")
        return
    event(f"stored: {request.method}")

    async def store() -> None:
        try:
            async with connection.transaction():
                await APPLY[type(bus_event)](connection, bus_event, config, 1_000_000)
                raise _Rollback
        except _Rollback:
            pass

    loop.run_until_complete(store())
