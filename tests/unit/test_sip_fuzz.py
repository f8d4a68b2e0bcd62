"""Mutation fuzzing: whatever the bytes, parse_message returns a message or raises
SipParseError, and StreamFramer.feed returns items or raises FramingError."""

from __future__ import annotations

import random
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from presence.sip.framing import FramingError, StreamFramer
from presence.sip.grammar import parse_name_addr, parse_uri, parse_via
from presence.sip.parser import SipParseError, parse_message, serialize

PIDF = (
    b'<?xml version="1.0" encoding="UTF-8"?>\r\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:alice@example.com">\r\n'
    b'<tuple id="t1"><status><basic>open</basic></status></tuple></presence>\r\n'
)


def _message(start: str, *lines: str, body: bytes = b"") -> bytes:
    head = "\r\n".join([start, *lines, f"Content-Length: {len(body)}"])
    return head.encode() + b"\r\n\r\n" + body


COMMON = (
    "Via: SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKnashds7;rport",
    "Max-Forwards: 70",
    'From: "Alice" <sip:alice@example.com>;tag=a73kszlfl',
    "To: <sip:alice@example.com>",
    "Call-ID: 3848276298220188511@192.0.2.4",
)
SEEDS = [
    _message(
        "PUBLISH sip:alice@example.com SIP/2.0",
        *COMMON,
        "CSeq: 1 PUBLISH",
        "Event: presence",
        "Expires: 3600",
        "Content-Type: application/pidf+xml",
        body=PIDF,
    ),
    _message(
        "SUBSCRIBE sip:alice@example.com SIP/2.0",
        *COMMON,
        "CSeq: 2 SUBSCRIBE",
        "Event: presence;id=1",
        "Accept: application/pidf+xml, multipart/related",
        "Contact: <sip:bob@192.0.2.4:5060;transport=udp>",
        "Expires: 600",
    ),
    _message(
        "NOTIFY sip:bob@192.0.2.4:5060 SIP/2.0",
        *COMMON,
        "CSeq: 3 NOTIFY",
        "Event: presence",
        "Subscription-State: active;expires=599",
        "Content-Type: application/pidf+xml",
        body=PIDF,
    ),
    _message(
        "OPTIONS sip:alice@example.com SIP/2.0",
        *COMMON,
        "CSeq: 4 OPTIONS",
        "Accept: application/sdp",
        "Supported: eventlist, gruu",
    ),
    _message(
        "SIP/2.0 200 OK",
        *COMMON[:1],
        *COMMON[2:],
        "CSeq: 1 PUBLISH",
        "SIP-ETag: dx200xyz",
        "Expires: 1800",
    ),
    _message(
        "SIP/2.0 202 Accepted",
        *COMMON[:1],
        *COMMON[2:],
        "CSeq: 2 SUBSCRIBE",
        "Expires: 600",
        "Contact: <sip:presence.example.com>",
    ),
] + [path.read_bytes() for path in sorted((Path(__file__).parent / "rfc4475").glob("*.dat"))]

INSERTS = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\x00",
    b":",
    b'"',
    b"<",
    b">",
    b";",
    b",",
    b" ",
    b"\\",
    b"%",
    b"\xff",
    b"\xc3",
    b"=",
    b"@",
    b"\r\n ",
    b"\r\n\r\n",
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randint(0, len(buf))
        if op == 0 and buf:  # flip a byte
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:  # truncate
            del buf[pos:]
        elif op == 2 and buf:  # duplicate a span
            end = min(len(buf), pos + rng.randint(1, 64))
            buf[pos:pos] = buf[pos:end]
        elif op == 3:  # insert a delimiter
            buf[pos:pos] = rng.choice(INSERTS)
        elif op == 4:  # delete a header line
            lines = bytes(buf).split(b"\r\n")
            if len(lines) > 2:
                del lines[rng.randrange(1, len(lines) - 1)]
            buf = bytearray(b"\r\n".join(lines))
        else:  # delete a span
            del buf[pos : pos + rng.randint(1, 16)]
    return bytes(buf)


def check_parse(data: bytes) -> None:
    for datagram in (True, False):
        try:
            message = parse_message(data, datagram=datagram)
        except SipParseError as error:
            # "Malformed message" is parse_message's backstop for an unexpected exception:
            # every defect should have been caught and named before it.
            assert error.reason != "Malformed message", repr(error.__cause__)
            assert error.reason and error.reason.isascii()
            assert "\r" not in error.reason and "\n" not in error.reason
        else:
            # What parses must serialize and parse back.
            assert parse_message(serialize(message)) == parse_message(serialize(message))


def check_framer(data: bytes, chunk: int) -> None:
    framer = StreamFramer(max_header_bytes=4096, max_message_bytes=8192)
    try:
        for i in range(0, len(data), chunk):
            framer.feed(data[i : i + chunk])
    except FramingError:
        pass


def test_mutated_messages() -> None:
    rng = random.Random(4475)
    deadline = time.monotonic() + 15  # bound the run time on slow machines
    for iteration in range(20_000):
        data = mutate(rng, rng.choice(SEEDS))
        check_parse(data)
        if iteration % 4 == 0:
            check_framer(data + rng.choice(SEEDS), rng.randint(1, 200))
        if time.monotonic() > deadline:
            break


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    check_parse(data)
    check_framer(data, 7)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_value_parsers_raise_only_parse_errors(text: str) -> None:
    for parse in (parse_uri, parse_name_addr, parse_via):
        try:
            parse(text)
        except SipParseError:
            pass
