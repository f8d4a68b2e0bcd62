"""RFC 4475 torture messages, §3.1.1 (valid) and §3.1.2 (invalid); see rfc4475/README.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from presence.sip.grammar import parse_cseq, parse_name_addr, parse_uri, parse_via
from presence.sip.message import SipRequest, SipResponse
from presence.sip.parser import SipParseError, parse_message, serialize

DATA = Path(__file__).parent / "rfc4475"

VALID = [
    "wsinv",
    "intmeth",
    "esc01",
    "escnull",
    "esc02",
    "lwsdisp",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
    "unreason",
    "noreason",
]


def load(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


@pytest.mark.parametrize("name", VALID)
def test_valid_messages_parse_and_round_trip(name: str) -> None:
    message = parse_message(load(name))
    assert parse_message(serialize(message)) == message


def test_wsinv() -> None:
    """3.1.1.1: folding, escaped quotes, empty Subject, LWS everywhere, mixed compact forms."""
    m = parse_message(load("wsinv"))
    assert isinstance(m, SipRequest)
    assert parse_uri(m.uri).params == {"unknownparam": None}
    to = parse_name_addr(m.headers.get("To") or "")
    assert to.tag == "1918181833n" and to.uri.aor == "vivekg@chair-dnrc.example.com"
    sender = parse_name_addr(m.headers.get("From") or "")
    assert sender.display == 'J Rosenberg \\"' and sender.tag == "98asjd8"
    assert m.headers.get("Max-Forwards") == "0068"
    assert parse_cseq(m.headers.get("CSeq") or "") == (9, "INVITE")
    vias = [parse_via(v) for v in m.headers.get_all("Via")]
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.headers.get("Subject") == ""
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    route = parse_name_addr(m.headers.get("Route") or "")
    assert route.uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    (contact,) = m.headers.get_all("Contact")
    contact_na = parse_name_addr(contact)
    assert contact_na.display == 'Quoted string ""'
    assert contact_na.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert len(m.body) == 150


def test_intmeth() -> None:
    """3.1.1.2: unusual token characters in method, URI, branch, display names, header."""
    m = parse_message(load("intmeth"))
    assert isinstance(m, SipRequest)
    assert m.method == "!interesting-Method0123456789_*+`.%indeed'~"  # % is no escape here
    uri = parse_uri(m.uri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert parse_via(m.headers.get("Via") or "").branch == "z9hG4bK-.!%66*_+`'~"
    assert parse_name_addr(m.headers.get("To") or "").display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    sender = parse_name_addr(m.headers.get("From") or "")
    assert sender.display == "token1~` token2'+_ token3*%!.-"
    assert sender.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert sender.tag == "_token~1'+`*%!-."
    assert m.headers.get("Call-ID") == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_esc01() -> None:
    """3.1.1.3: %-escapes in URIs are equivalent to the characters they encode."""
    m = parse_message(load("esc01"))
    assert parse_uri(m.uri).user == "sips:user@example.com"
    assert parse_name_addr(m.headers.get("To") or "").uri.user == "user"
    assert parse_name_addr(m.headers.get("From") or "").uri.user == "I have spaces"
    contact = parse_name_addr(m.headers.get_all("Contact")[0]).uri
    assert contact.user == "caller"
    assert contact.params == {"lr": None, "name": "value%41"}
    assert m.headers.get("Call-ID") == "esc01.239409asdfakjkn23onasd0-3234"
    assert m.headers.get("Content-Type") == "application/sdp"


def test_escnull() -> None:
    """3.1.1.4: escaped NULs in URI users are legal."""
    m = parse_message(load("escnull"))
    assert parse_name_addr(m.headers.get("To") or "").uri.user == "null-\x00-null"
    users = [parse_name_addr(c).uri.user for c in m.headers.get_all("Contact")]
    assert users == ["\x00", "\x00\x00"]


def test_esc02() -> None:
    """3.1.1.5: % that is not an escape: unknown method, display name, unknown header."""
    m = parse_message(load("esc02"))
    assert isinstance(m, SipRequest) and m.method == "RE%47IST%45R"
    assert parse_name_addr(m.headers.get("To") or "").display == "%Z%45"
    assert parse_via(m.headers.get("Via") or "").branch == "z9hG4bK209%fzsnel234"
    assert len(m.headers.get_all("Contact")) == 2  # C%6Fntact is another header
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp() -> None:
    """3.1.1.6: no LWS between display name and <."""
    m = parse_message(load("lwsdisp"))
    assert parse_name_addr(m.headers.get("From") or "").display == "caller"


def test_longreq() -> None:
    """3.1.1.7: long values; 34 Vias in mixed case and compact forms."""
    m = parse_message(load("longreq"))
    vias = m.headers.get_all("Via")
    assert len(vias) == 34
    assert parse_via(vias[-1]).branch == "very" + "long" * 50 + "branchvalue"
    to = parse_name_addr(m.headers.get("To") or "")
    assert to.uri.port == 6000 and to.display.endswith("extreme proportion")  # type: ignore[union-attr]
    assert parse_name_addr(m.headers.get("From") or "").tag == "12" + "982" * 50 + "424"


def test_dblreq() -> None:
    """3.1.1.8: a datagram carrying a second request past Content-Length 0: ignore it."""
    m = parse_message(load("dblreq"))
    assert isinstance(m, SipRequest) and m.method == "REGISTER" and m.body == b""


def test_semiuri() -> None:
    """3.1.1.9: ; in the URI user part is not a parameter separator."""
    m = parse_message(load("semiuri"))
    uri = parse_uri(m.uri)
    assert uri.user == "user;par=u@example.net" and uri.host == "example.com" and uri.params == {}
    assert len(m.headers.get_all("Accept")) == 6


def test_transports() -> None:
    """3.1.1.10: unknown transports are still valid Via values."""
    m = parse_message(load("transports"))
    transports = [parse_via(v).transport for v in m.headers.get_all("Via")]
    assert transports == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01() -> None:
    """3.1.1.11: multipart binary body, counted by Content-Length."""
    m = parse_message(load("mpart01"))
    assert len(m.body) == 553 and m.body.endswith(b"--7a9cbec02ceef655--\r\n")
    assert "rport" in parse_via(m.headers.get("Via") or "").params


def test_unreason_and_noreason() -> None:
    """3.1.1.12-13: UTF-8 reason phrase; empty reason phrase."""
    unreason = parse_message(load("unreason"))
    assert isinstance(unreason, SipResponse) and unreason.status == 200
    assert unreason.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    noreason = parse_message(load("noreason"))
    assert isinstance(noreason, SipResponse)
    assert (noreason.status, noreason.reason) == (100, "")


# Per message of §3.1.2: (name, expected SipParseError reason, or None if it is accepted here)
# and the RFC's expectation in a few words.
INVALID = [
    ("badinv01", "Malformed Via"),  # 3.1.2.1 extra ;, in Via: respond 400
    ("clerr", "Content-Length mismatch"),  # 3.1.2.2 CL beyond datagram: respond 400
    ("ncl", "Bad Content-Length"),  # 3.1.2.3 negative CL: respond 400
    ("scalar02", "Bad CSeq"),  # 3.1.2.4 overlarge scalars: 400 naming CSeq
    ("scalarlg", "Bad CSeq"),  # 3.1.2.5 response with overlarge CSeq: drop it
    ("quotbal", "Malformed To"),  # 3.1.2.6 unterminated quote: 400 (or salvage)
    ("ltgtruri", "Bad Request-URI"),  # 3.1.2.7 <> around Request-URI: 400
    ("lwsruri", "Bad Request-Line"),  # 3.1.2.8 LWS inside Request-URI: 400
    ("lwsstart", "Bad Request-Line"),  # 3.1.2.9 several SP: may be liberal, else 400
    ("trws", "Bad Request-Line"),  # 3.1.2.10 trailing SP: may be liberal, else 400
    ("escruri", "Bad Request-URI"),  # 3.1.2.11 headers in Request-URI: may ignore, else 400
    ("baddate", None),  # 3.1.2.12 non-GMT Date: may be liberal (Date unused)
    ("regbadct", "Malformed Contact"),  # 3.1.2.13 URI with ? not in <>: 400
    ("badaspec", "Malformed To"),  # 3.1.2.14 spaces inside <>: 400 (or liberal)
    ("baddn", "Malformed From"),  # 3.1.2.15 unquoted display name with ,: 400
    ("badvers", "Version Not Supported"),  # 3.1.2.16 SIP/7.0: respond 505
    ("mismatch01", "CSeq method mismatch"),  # 3.1.2.17 CSeq vs request method: 400
    ("mismatch02", "CSeq method mismatch"),  # 3.1.2.18 unknown method, CSeq mismatch: 400 (or 501)
    ("bigcode", "Bad Status-Code"),  # 3.1.2.19 status 4294967301: drop the response
]


@pytest.mark.parametrize(("name", "reason"), INVALID)
def test_invalid_messages(name: str, reason: str | None) -> None:
    data = load(name)
    if reason is None:
        parse_message(data)
        return
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.reason == reason
    assert info.value.status == (505 if name == "badvers" else 400)
    # The Via survives so that a 400/505 can still be routed back.
    assert info.value.headers is not None and info.value.headers.get("Via")


def test_every_file_is_covered() -> None:
    names = {path.stem for path in DATA.glob("*.dat")}
    assert names == set(VALID) | {name for name, _ in INVALID}
    for name in names:
        head = load(name).split(b"\r\n\r\n")[0]
        assert b"\n" not in head.replace(b"\r\n", b""), name  # CRLF line ends throughout
