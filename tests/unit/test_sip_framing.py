"""StreamFramer: cutting a TCP byte stream into SIP messages (RFC 3261 §18.3, RFC 5626)."""

from __future__ import annotations

import pytest

from presence.sip.framing import KEEPALIVE, FramingError, KeepAlive, StreamFramer
from presence.sip.parser import parse_message


def message(n: int, body: bytes = b"") -> bytes:
    return (
        f"NOTIFY sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h.example.com;branch=z9hG4bK{n}\r\n"
        f"To: <sip:a@example.com>;tag=1\r\nFrom: <sip:b@example.com>;tag=2\r\n"
        f"Call-ID: c{n}\r\nCSeq: {n} NOTIFY\r\nl: {len(body)}\r\n\r\n"
    ).encode() + body


def test_several_messages_in_one_feed() -> None:
    stream = message(1) + message(2, b"hello") + message(3, b"\r\n\r\n")
    out = StreamFramer().feed(stream)
    assert out == [message(1), message(2, b"hello"), message(3, b"\r\n\r\n")]
    assert [parse_message(m, datagram=False).body for m in out if isinstance(m, bytes)] == [
        b"",
        b"hello",
        b"\r\n\r\n",
    ]


def test_byte_at_a_time() -> None:
    stream = message(1, b"abc") + b"\r\n\r\n" + message(2, b"xyz")
    framer = StreamFramer()
    out: list[bytes | KeepAlive] = []
    for i in range(len(stream)):
        out += framer.feed(stream[i : i + 1])
    assert out == [message(1, b"abc"), KEEPALIVE, message(2, b"xyz")]


def test_keepalives() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n\r\n\r\n") == [KEEPALIVE, KEEPALIVE]
    assert framer.feed(b"\r\n") == []  # half a ping: wait for more
    assert framer.feed(b"\r\n") == [KEEPALIVE]
    # A lone CRLF (a pong, or slack before a message) is skipped.
    assert framer.feed(b"\r\n" + message(1)) == [message(1)]
    assert isinstance(KEEPALIVE, KeepAlive)


def test_partial_message_waits() -> None:
    framer = StreamFramer()
    data = message(1, b"0123456789")
    assert framer.feed(data[:-1]) == []
    assert framer.feed(data[-1:] + data[:10]) == [data]
    assert framer.feed(data[10:]) == [data]


def test_missing_content_length_is_an_error() -> None:
    data = message(1).replace(b"l: 0\r\n", b"")
    with pytest.raises(FramingError):
        StreamFramer().feed(data)


@pytest.mark.parametrize("value", [b"-1", b"x", b"1 1", b"99999999999"])
def test_bad_content_length(value: bytes) -> None:
    with pytest.raises(FramingError):
        StreamFramer().feed(message(1).replace(b"l: 0", b"l: " + value))


def test_header_cap() -> None:
    framer = StreamFramer(max_header_bytes=1024)
    with pytest.raises(FramingError):
        framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X: " + b"a" * 2000)
    with pytest.raises(FramingError):  # a failed framer stays failed
        framer.feed(message(1))
    big_head = message(1).replace(b"l: 0", b"X-Pad: " + b"p" * 1100 + b"\r\nl: 0")
    with pytest.raises(FramingError):
        StreamFramer(max_header_bytes=1024).feed(big_head)


def test_message_cap() -> None:
    framer = StreamFramer(max_message_bytes=1000)
    # Refused as soon as the header announces too much, before the body arrives.
    with pytest.raises(FramingError):
        framer.feed(message(1).replace(b"l: 0", b"l: 5000"))
    assert StreamFramer(max_message_bytes=1000).feed(message(1, b"x" * 500)) == [
        message(1, b"x" * 500)
    ]
