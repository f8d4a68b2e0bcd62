"""Property tests: generated messages survive serialize -> parse unchanged."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from presence.sip.message import Headers, SipMessage, SipRequest, SipResponse
from presence.sip.parser import parse_message, serialize

TOKEN = string.ascii_letters + string.digits + "-.!%*_+`'~"
tokens = st.text(TOKEN, min_size=1, max_size=12)
methods = st.sampled_from(["INVITE", "SUBSCRIBE", "NOTIFY", "PUBLISH", "OPTIONS"]) | tokens.filter(
    lambda t: not t.upper().startswith("SIP/")
)
labels = st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=10)
hosts = st.lists(labels, min_size=1, max_size=4).map(".".join) | st.ip_addresses(v=4).map(str)
users = st.text(string.ascii_letters + string.digits + "-_.!~*'()&=+$,;?/", min_size=1, max_size=10)
ports = st.none() | st.integers(1, 65535)
param_names = st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=8)
uri_values = st.text(string.ascii_letters + string.digits + "-_.!~*'()", min_size=1, max_size=8)
params = st.dictionaries(param_names, st.none() | uri_values, max_size=3)


@st.composite
def uris(draw: st.DrawFn) -> str:
    user = draw(st.none() | users)
    port = draw(ports)
    text = f"{draw(st.sampled_from(['sip', 'sips']))}:"
    text += f"{user}@" if user else ""
    text += draw(hosts) + (f":{port}" if port else "")
    for name, value in draw(params).items():
        text += f";{name}" if value is None else f";{name}={value}"
    return text


def with_params(base: str, values: dict[str, str | None]) -> str:
    return base + "".join(f";{k}" if v is None else f";{k}={v}" for k, v in values.items())


# Values of unknown headers: printable UTF-8 without CR/LF, not starting or ending in LWS.
values = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from(" \t"), max_size=30
).map(lambda s: s.strip(" \t"))
extension_names = st.text(TOKEN, min_size=2, max_size=15).map(lambda n: "X-" + n)
bodies = st.binary(max_size=200)


@st.composite
def headers(draw: st.DrawFn, method: str) -> Headers:
    h = Headers()
    for _ in range(draw(st.integers(1, 3))):
        via = f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP', 'TLS']))} {draw(hosts)}"
        branch = {"branch": "z9hG4bK" + draw(tokens)}
        h.add(draw(st.sampled_from(["Via", "v"])), with_params(via, branch))
    h.add("From", with_params(f"<{draw(uris())}>", {"tag": draw(tokens)}))
    h.add("t", f'"{draw(st.text(string.ascii_letters + " ", max_size=10))}" <{draw(uris())}>')
    h.add("Call-ID", draw(tokens) + "@" + draw(hosts))
    h.add("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}")
    h.add("Max-Forwards", str(draw(st.integers(0, 255))))
    for name, value in draw(st.lists(st.tuples(extension_names, values), max_size=5)):
        h.add(name, value)
    if draw(st.booleans()):
        h.add("Contact", f"<{draw(uris())}>;expires={draw(st.integers(0, 3600))}")
    # serialize always writes Content-Length; expect it where parse will put it.
    return h


@st.composite
def requests(draw: st.DrawFn) -> SipRequest:
    method = draw(methods)
    return SipRequest(method, draw(uris()), draw(headers(method)), draw(bodies))


@st.composite
def responses(draw: st.DrawFn) -> SipResponse:
    reason = draw(st.text(string.ascii_letters + " ", max_size=20)).strip()
    return SipResponse(
        draw(st.integers(100, 699)), reason, draw(headers(draw(methods))), draw(bodies)
    )


def expected(message: SipMessage) -> SipMessage:
    headers = message.headers.copy()
    headers.set("Content-Length", str(len(message.body)))
    if isinstance(message, SipRequest):
        return SipRequest(message.method, message.uri, headers, message.body)
    return SipResponse(message.status, message.reason, headers, message.body)


@settings(max_examples=300, deadline=None)
@given(requests() | responses(), st.booleans())
def test_serialize_then_parse_is_identity(message: SipMessage, datagram: bool) -> None:
    assert parse_message(serialize(message), datagram=datagram) == expected(message)


@settings(max_examples=200, deadline=None)
@given(requests() | responses())
def test_parse_serialize_is_stable(message: SipMessage) -> None:
    once = serialize(parse_message(serialize(message)))
    assert serialize(parse_message(once)) == once
