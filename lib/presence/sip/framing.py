"""Cutting a SIP byte stream (TCP, TLS) into messages, without I/O (RFC 3261 §18.3).

On a stream every message must carry Content-Length (§18.3, §20.14); a message is its
header section up to the empty line plus that many octets. Between messages, RFC 5626
§3.5.1 keep-alives travel: a double CRLF "ping", which the caller answers with a single
CRLF "pong"; a lone CRLF is that pong and is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KEEPALIVE", "FramingError", "KeepAlive", "StreamFramer"]


class FramingError(ValueError):
    """The stream cannot be cut into messages; the connection should be closed."""


@dataclass(frozen=True)
class KeepAlive:
    """A CRLFCRLF ping was received; answer it with b"\\r\\n"."""


KEEPALIVE = KeepAlive()


class StreamFramer:
    def __init__(self, max_header_bytes: int = 16384, max_message_bytes: int = 65536) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_message_bytes = max_message_bytes
        self._buffer = bytearray()
        self._searched = 0  # bytes already searched for the end of headers: avoids rescans
        self._failed: FramingError | None = None

    def feed(self, data: bytes) -> list[bytes | KeepAlive]:
        """Add received bytes; return every message (and keep-alive) now complete."""
        if self._failed is not None:
            raise self._failed
        self._buffer += data
        out: list[bytes | KeepAlive] = []
        try:
            while self._next(out):
                pass
        except FramingError as error:
            self._failed = error
            self._buffer.clear()
            raise
        return out

    def _next(self, out: list[bytes | KeepAlive]) -> bool:
        """Take one item off the buffer into ``out``; False when more bytes are needed."""
        buf = self._buffer
        if buf[:1] == b"\r":
            if buf[:4] == b"\r\n\r\n":
                del buf[:4]
                out.append(KEEPALIVE)
                return True
            if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                return False  # could still become a ping
            if buf[:2] == b"\r\n":
                del buf[:2]  # a pong, or a stray CRLF before a message (RFC 3261 §7.5)
                return True
        if not buf:
            return False
        end = buf.find(b"\r\n\r\n", max(0, self._searched - 3))
        if end < 0:
            self._searched = len(buf)
            if len(buf) > self.max_header_bytes:
                raise FramingError("header section too large")
            return False
        header_length = end + 4
        if header_length > self.max_header_bytes:
            raise FramingError("header section too large")
        total = header_length + _content_length(bytes(buf[:end]))
        if total > self.max_message_bytes:
            raise FramingError("message too large")
        if len(buf) < total:
            return False
        out.append(bytes(buf[:total]))
        del buf[:total]
        self._searched = 0
        return True


def _content_length(head: bytes) -> int:
    values: list[bytes] = []
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.rstrip(b" \t").lower() in (b"content-length", b"l"):
            values.append(value.strip(b" \t"))
    if not values:
        raise FramingError("missing Content-Length")
    if len(values) > 1 or not values[0].isdigit() or len(values[0]) > 10:
        raise FramingError("bad Content-Length")
    return int(values[0])
