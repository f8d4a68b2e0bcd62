"""Parser and message-model behaviour: RFC 3261 §7 framing, §20 header forms, §8.2.6.2."""

from __future__ import annotations

import pytest

from presence.sip.grammar import (
    parse_cseq,
    parse_event,
    parse_expires,
    parse_name_addr,
    parse_params,
    parse_uri,
    parse_via,
)
from presence.sip.message import Headers, SipRequest, SipResponse
from presence.sip.parser import SipParseError, parse_message, serialize
from presence.sip.responses import make_response

CRLF = "\r\n"


def msg(*lines: str, body: str = "") -> bytes:
    return (CRLF.join(lines) + CRLF + CRLF + body).encode()


BASE = (
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds",
    "To: <sip:alice@example.com>",
    "From: Bob <sip:bob@example.com>;tag=1928301774",
    "Call-ID: a84b4c76e66710@pc33.example.com",
    "CSeq: 1 OPTIONS",
    "Max-Forwards: 70",
)


def options(*extra: str, body: str = "") -> bytes:
    return msg("OPTIONS sip:alice@example.com SIP/2.0", *BASE, *extra, body=body)


def reason_of(data: bytes, **kwargs: bool) -> str:
    with pytest.raises(SipParseError) as info:
        parse_message(data, **kwargs)
    return info.value.reason


# --- header names -----------------------------------------------------------------------


def test_compact_forms_expand_to_canonical_names() -> None:
    m = parse_message(
        msg(
            "SUBSCRIBE sip:alice@example.com SIP/2.0",
            "v: SIP/2.0/UDP h.example.com;branch=z9hG4bK1",
            "t: <sip:alice@example.com>",
            "f: <sip:bob@example.com>;tag=1",
            "i: abc",
            "CSeq: 1 SUBSCRIBE",
            "m: <sip:bob@192.0.2.4>",
            "o: presence",
            "u: presence, dialog",
            "k: eventlist",
            "c: application/pidf+xml",
            "s: hi",
            "e: gzip",
            "l: 0",
        )
    )
    names = [name for name, _ in m.headers]
    assert names == [
        "Via",
        "To",
        "From",
        "Call-ID",
        "CSeq",
        "Contact",
        "Event",
        "Allow-Events",
        "Supported",
        "Content-Type",
        "Subject",
        "Content-Encoding",
        "Content-Length",
    ]
    assert m.headers.get("event") == "presence"
    assert m.headers.get_all("Allow-Events") == ["presence", "dialog"]


def test_lookup_is_case_insensitive_and_unknown_names_are_kept() -> None:
    m = parse_message(options("X-Custom-THING: 1", "sip-etag: abc", "cseQ-Ignored: x"))
    assert m.headers.get("x-custom-thing") == "1"
    assert ("X-Custom-THING", "1") in list(m.headers)
    assert ("SIP-ETag", "abc") in list(m.headers)
    assert "SIP-ETAG" in m.headers
    assert m.headers.get("CALL-ID") == m.headers.get("i")


def test_whitespace_around_colon_and_folding() -> None:
    m = parse_message(
        msg(
            "OPTIONS sip:alice@example.com SIP/2.0",
            *BASE[:4],
            "CSeq   :  1",
            "\t OPTIONS",
            "Subject: first",
            "  second",
            "   third",
        )
    )
    assert m.headers.get("CSeq") == "1 OPTIONS"
    assert m.headers.get("Subject") == "first second third"
    assert parse_cseq(m.headers.get("CSeq") or "") == (1, "OPTIONS")


def test_folding_before_any_header_is_rejected() -> None:
    assert reason_of(msg("OPTIONS sip:a@b SIP/2.0", " folded: x", *BASE)) == "Bad header folding"


def test_repeated_headers_and_comma_lists() -> None:
    m = parse_message(
        options(
            "Via: SIP/2.0/TCP a.example.com;branch=z9hG4bKa, "
            "SIP/2.0/UDP b.example.com;branch=z9hG4bKb",
            'Contact: "Smith, J" <sip:j@a.example.com>;q=0.5, <sip:k,l@b.example.com;x=1>',
            "Contact: *",
            "Allow: INVITE, ACK,OPTIONS",
            "Allow: NOTIFY",
            "X-Unknown: a, b",
        )
    )
    assert len(m.headers.get_all("Via")) == 3
    assert m.headers.get_all("Contact") == [
        '"Smith, J" <sip:j@a.example.com>;q=0.5',
        "<sip:k,l@b.example.com;x=1>",
        "*",
    ]
    assert m.headers.get_all("Allow") == ["INVITE", "ACK", "OPTIONS", "NOTIFY"]
    assert m.headers.get_all("X-Unknown") == ["a, b"]  # unknown headers are not split
    assert m.headers.get("Via") == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds"


def test_headers_set_remove_copy() -> None:
    h = Headers([("Via", "a"), ("To", "t"), ("v", "b"), ("X-A", "1")])
    clone = h.copy()
    h.set("VIA", "c")
    assert list(h) == [("Via", "c"), ("To", "t"), ("X-A", "1")]
    h.set("New", "n")
    assert list(h)[-1] == ("New", "n")
    h.remove("x-a")
    assert "X-A" not in h
    assert list(clone) == [("Via", "a"), ("To", "t"), ("Via", "b"), ("X-A", "1")]
    h.add("x", "90")  # compact form of Session-Expires
    assert h.get("Session-Expires") == "90"


def test_utf8_values_and_invalid_utf8() -> None:
    m = parse_message(options("Subject: grüße 大停電"))
    assert m.headers.get("Subject") == "grüße 大停電"
    invalid = options().replace(b"Max-Forwards: 70", b"Subject: \xff\xfe")
    assert reason_of(invalid) == "Invalid UTF-8"


# --- value parsers ----------------------------------------------------------------------


def test_quoted_display_names_with_escapes() -> None:
    na = parse_name_addr(r'"Quoted \"escaped\" \\ name" <sip:a@example.com>;tag=x')
    assert na.display == r'Quoted "escaped" \ name'
    assert na.tag == "x"
    assert parse_name_addr(str(na)) == na
    assert parse_name_addr("Bare  Token  Name <sip:b@example.com>").display == "Bare Token Name"
    assert parse_name_addr("<sip:c@example.com>").display is None
    with pytest.raises(SipParseError):
        parse_name_addr('"unterminated <sip:a@example.com>')
    with pytest.raises(SipParseError):
        parse_name_addr("Bell, Alexander <sip:a@example.com>")


def test_name_addr_vs_addr_spec_params() -> None:
    # §20.10: after an addr-spec the parameters are header parameters...
    spec = parse_name_addr("sip:a@example.com;tag=x;lr")
    assert spec.uri.params == {} and spec.params == {"tag": "x", "lr": None}
    # ...inside <> they belong to the URI.
    angle = parse_name_addr("<sip:a@example.com;lr;transport=tcp>;tag=y;EXPIRES=60")
    assert angle.uri.params == {"lr": None, "transport": "tcp"}
    assert angle.params == {"tag": "y", "expires": "60"}
    with pytest.raises(SipParseError):
        parse_name_addr("sip:a@example.com?Route=x")  # needs <>


def test_uri_parts_params_and_round_trip() -> None:
    u = parse_uri("SIP:Alice:secret@AtLanTa.example.COM:5061;Transport=TCP;lr?Subject=hi&P=1")
    assert (u.scheme, u.user, u.password, u.host, u.port) == (
        "sip",
        "Alice",
        "secret",
        "AtLanTa.example.COM",
        5061,
    )
    assert u.params == {"transport": "TCP", "lr": None}
    assert u.headers == {"Subject": "hi", "P": "1"}
    assert u.aor == "Alice@atlanta.example.com"
    assert parse_uri(str(u)) == u
    v6 = parse_uri("sips:bob@[2001:db8::10]:5070;maddr=[2001:db8::1]")
    assert (v6.host, v6.port, v6.params["maddr"]) == ("[2001:db8::10]", 5070, "[2001:db8::1]")
    assert parse_uri("sip:%61lice%40x@example.com").user == "alice@x"
    assert str(parse_uri("sip:%61lice%40x@example.com")) == "sip:alice%40x@example.com"
    assert parse_uri("tel:+1-201-555-0123;phone-context=example.com").user == "+1-201-555-0123"
    assert str(parse_uri("urn:service:sos")) == "urn:service:sos"
    for bad in [
        "sip:",
        "nocolon",
        "sip:a@",
        "sip:a@host:99999",
        "sip:a b@c",
        "sip:%zz@h",
        "1sip:a@b",
        "sip:a@[zz]",
    ]:
        with pytest.raises(SipParseError):
            parse_uri(bad)


def test_via_parts_and_accessors() -> None:
    via = parse_via(
        "SIP / 2.0 / udp  pc33.example.com:5066 ;branch=z9hG4bK1;rport;received=192.0.2.9"
    )
    assert (via.protocol, via.transport, via.host, via.port) == (
        "SIP/2.0",
        "UDP",
        "pc33.example.com",
        5066,
    )
    assert via.branch == "z9hG4bK1" and via.received == "192.0.2.9"
    assert "rport" in via.params and via.rport is None
    assert parse_via("SIP/2.0/TCP [2001:db8::9]:5060;rport=5070").rport == 5070
    assert str(parse_via(str(via))) == str(via)
    for bad in ["SIP/2.0 host", "SIP/2.0/UDP", "SIP/2.0/UDP host;;", "SIP/2.0/UDP h;rport=x"]:
        with pytest.raises(SipParseError):
            parse_via(bad)


def test_scalars_and_event() -> None:
    assert parse_cseq(" 0009  INVITE ") == (9, "INVITE")
    assert parse_cseq(f"{2**31 - 1} ACK")[0] == 2**31 - 1
    for bad in [f"{2**31} ACK", "-1 ACK", "1", "1 2 3", "x INVITE", "1 IN VITE"]:
        with pytest.raises(SipParseError):
            parse_cseq(bad)
    assert parse_expires("0") == 0 and parse_expires(str(2**32 - 1)) == 2**32 - 1
    for bad in [str(2**32), "-1", "", "1.5", "9" * 1000]:
        with pytest.raises(SipParseError):
            parse_expires(bad)
    assert parse_event("presence;id=7") == ("presence", {"id": "7"})
    assert parse_event("Presence")[0] == "Presence"  # package names are case-sensitive
    with pytest.raises(SipParseError):
        parse_event("pres ence")
    assert parse_params(';a=1;B;c="x;y"') == {"a": "1", "b": None, "c": '"x;y"'}
    with pytest.raises(SipParseError):
        parse_params(";;")


# --- framing rules and mandatory headers ------------------------------------------------


def test_content_length_rules_on_datagrams() -> None:
    body = "hello"
    assert parse_message(options(body=body)).body == b"hello"  # no CL: to the end (§18.3)
    assert parse_message(options("Content-Length: 3", body=body)).body == b"hel"  # rest dropped
    assert reason_of(options("Content-Length: 6", body=body)) == "Content-Length mismatch"
    assert reason_of(options("Content-Length: -1", body=body)) == "Bad Content-Length"
    assert reason_of(options("l: 1", "l: 1", body=body)) == "Multiple Content-Length"


def test_content_length_rules_on_streams() -> None:
    exact = options("Content-Length: 5", body="hello")
    assert parse_message(exact, datagram=False).body == b"hello"
    assert reason_of(options(body="hello"), datagram=False) == "Missing Content-Length"
    assert reason_of(options("Content-Length: 4", body="hello"), datagram=False) == (
        "Content-Length mismatch"
    )


@pytest.mark.parametrize("name", ["To", "From", "CSeq", "Call-ID", "Via"])
def test_mandatory_headers(name: str) -> None:
    lines = [line for line in BASE if not line.startswith(name + ":")]
    with pytest.raises(SipParseError) as error:
        parse_message(msg("OPTIONS sip:a@b SIP/2.0", *lines))
    assert error.value.reason == f"Missing {name}"
    assert error.value.status == 400


def test_max_forwards_is_not_mandatory() -> None:
    lines = [line for line in BASE if not line.startswith("Max-Forwards")]
    assert parse_message(msg("OPTIONS sip:a@b SIP/2.0", *lines)).headers.get("Max-Forwards") is None


def test_defects_are_named_and_headers_kept() -> None:
    with pytest.raises(SipParseError) as error:
        parse_message(options().replace(b"1 OPTIONS", b"1 INVITE"))
    assert error.value.reason == "CSeq method mismatch"
    assert error.value.headers is not None and error.value.headers.get("Via")
    assert reason_of(options().replace(b"CSeq: 1", b"CSeq: x")) == "Bad CSeq"
    assert reason_of(options().replace(b"SIP/2.0/UDP", b"SIP2.0UDP")) == "Malformed Via"
    assert reason_of(options().replace(b"To: <sip", b"To: <<sip")) == "Malformed To"
    assert reason_of(b"OPTIONS  sip:a@b SIP/2.0\r\n\r\n") == "Bad Request-Line"
    assert reason_of(b"SIP/2.0 99 Low\r\n\r\n") == "Bad Status-Code"
    assert reason_of(b"") == "Empty message"
    assert reason_of(options("Bad Header Name: x")) == "Malformed header line"
    assert reason_of(options().replace(b"Max-Forwards: 70", b"Max-Forwards: 256")) == (
        "Bad Max-Forwards"
    )


def test_version_is_checked_case_insensitively() -> None:
    assert parse_message(options().replace(b"SIP/2.0\r\n", b"sip/2.0\r\n", 1)).version == "SIP/2.0"
    with pytest.raises(SipParseError) as error:
        parse_message(options().replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1))
    assert (error.value.status, error.value.reason) == (505, "Version Not Supported")


def test_reasons_are_safe_phrases() -> None:
    with pytest.raises(SipParseError) as error:
        parse_message(options("Bad\x00Name: x"))
    assert error.value.reason.isascii() and "\r" not in error.value.reason


def test_size_caps() -> None:
    many = [f"X-H{i}: v" for i in range(300)]
    assert reason_of(options(*many)) == "Too many headers"
    assert reason_of(options("X-Long: " + "a" * 10000)) == "Line too long"


def test_leading_crlf_is_ignored() -> None:
    assert isinstance(parse_message(b"\r\n\r\n" + options()), SipRequest)


def test_bare_lf_is_rejected() -> None:
    assert reason_of(options("Subject: a\nb: c")) == "Bad line ending"


# --- make_response and serialize -------------------------------------------------------


def test_make_response_copies_headers() -> None:
    request = parse_message(
        options("Via: SIP/2.0/TCP second.example.com;branch=z9hG4bK2", "Contact: <sip:b@c>")
    )
    assert isinstance(request, SipRequest)
    response = make_response(request, 200, to_tag="abc", headers=[("Expires", "60")])
    assert response.reason == "OK"
    assert list(response.headers) == [
        ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds"),
        ("Via", "SIP/2.0/TCP second.example.com;branch=z9hG4bK2"),
        ("From", "Bob <sip:bob@example.com>;tag=1928301774"),
        ("To", "<sip:alice@example.com>;tag=abc"),
        ("Call-ID", "a84b4c76e66710@pc33.example.com"),
        ("CSeq", "1 OPTIONS"),
        ("Expires", "60"),
    ]
    again = make_response(request, 489)
    assert again.reason == "Bad Event" and again.headers.get("To") == "<sip:alice@example.com>"
    tagged = SipRequest("NOTIFY", "sip:a@b", Headers([("To", "<sip:a@b>;tag=old")]))
    assert make_response(tagged, 481, to_tag="new").headers.get("To") == "<sip:a@b>;tag=old"
    assert make_response(tagged, 412).reason == "Conditional Request Failed"


def test_serialize_parse_round_trip() -> None:
    parsed = parse_message(options("i-unknown: z", body="hello"))
    request = SipRequest("OPTIONS", "sip:alice@example.com", parsed.headers, b"hello")
    request.headers.add("l", "99")  # stale: serialize writes the real length in its place
    data = serialize(request)
    assert b"Content-Length: 5\r\n" in data and b"\nl:" not in data
    assert data.endswith(b"\r\n\r\nhello")
    again = parse_message(data)
    assert serialize(again) == data
    response = SipResponse(200, "OK", Headers(list(request.headers)), b"xyz")
    assert parse_message(serialize(response)).body == b"xyz"
