"""SIP over WebSocket (RFC 7118), server side of one connection, without I/O.

The WebSocket protocol itself (the HTTP upgrade, frames, masking, fragments,
ping/pong, the closing handshake) is websockets' sans-I/O `ServerProtocol`; this
module adds what RFC 7118 asks of a SIP server: the `sip` subprotocol is
required (an upgrade without it is refused with 400, §4.1: the server must not
pick another), and each WebSocket message carries exactly one SIP message
(§5.1), text or binary; what we send goes as a text frame when it is UTF-8.

A message of nothing but line ends is a keep-alive, as on a stream (RFC 5626
§3.5.1; SIP.js sends one when `keepAliveInterval` is set): "\r\n\r\n" is a ping
(KeepAlive: answer "\r\n"), other line ends are dropped.

A message over `max_message_bytes` (counted over all its fragments) closes the
connection with 1009, as a stream whose message is too large is closed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from websockets.exceptions import InvalidHandshake, NegotiationError, PayloadTooBig
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from presence.sip.framing import KEEPALIVE, KeepAlive

__all__ = ["Closed", "Opened", "Refused", "SipWebSocket"]

SUBPROTOCOL = Subprotocol("sip")
# websockets logs every open and close at INFO; ours says what matters.
_protocol_log = logging.getLogger("presence.sip.websocket.protocol")
_protocol_log.setLevel(logging.WARNING)


@dataclass(frozen=True)
class Opened:
    """The upgrade was accepted: SIP messages follow."""


@dataclass(frozen=True)
class Refused:
    """The upgrade was refused (an HTTP error response is queued, then the end).
    `reason`: "subprotocol" (no `sip` offered) or "bad_upgrade" (anything else)."""

    reason: str
    detail: str


@dataclass(frozen=True)
class Closed:
    """The connection is over. `reason`: "closed" (by the peer), "too_large"
    (a message over the limit, 1009), "protocol_error" (bad frames, bad UTF-8)."""

    reason: str
    detail: str = ""


Item = bytes | KeepAlive | Opened | Refused | Closed


class SipWebSocket:
    def __init__(self, max_message_bytes: int = 65536) -> None:
        self._protocol = ServerProtocol(
            subprotocols=[SUBPROTOCOL], max_size=max_message_bytes, logger=_protocol_log
        )
        self._fragments: list[bytes] = []
        self._text = False  # the message being received came as text
        self._finished = False

    @property
    def open(self) -> bool:
        return self._protocol.state is State.OPEN

    def receive(self, data: bytes) -> list[Item]:
        """Bytes from the peer -> what they completed, in order."""
        self._protocol.receive_data(data)
        return self._events()

    def receive_eof(self) -> list[Item]:
        if self._finished:
            return []
        self._protocol.receive_eof()
        items = self._events()
        if not self._finished:
            self._finished = True
            items.append(Closed("closed"))
        return items

    def send(self, message: bytes) -> None:
        """Queue one SIP message as one WebSocket message (§5.1)."""
        if _utf8(message):
            self._protocol.send_text(message)
        else:
            self._protocol.send_binary(message)

    def close(self, code: int = 1001) -> None:
        """Start the closing handshake (1001: going away), if still open."""
        if self._protocol.state is State.OPEN:
            self._protocol.send_close(code)

    def data_to_send(self) -> tuple[bytes, bool]:
        """The bytes to write now, and whether the connection should then be closed
        (the protocol sent its end: after a refusal, a close or a failure)."""
        chunks = self._protocol.data_to_send()
        eof = any(chunk == b"" for chunk in chunks)
        return b"".join(chunks), eof

    def _events(self) -> list[Item]:
        items: list[Item] = []
        for event in self._protocol.events_received():
            if isinstance(event, Request):
                items.append(self._upgrade(event))
            elif event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                if event.opcode is not Opcode.CONT:
                    self._text = event.opcode is Opcode.TEXT
                self._fragments.append(bytes(event.data))
                if event.fin:
                    message = b"".join(self._fragments)
                    self._fragments.clear()
                    if self._text and not _utf8(message):
                        # RFC 6455 §8.1: a text message must be UTF-8 (1007).
                        self._protocol.fail(1007, "invalid UTF-8")
                        self._finished = True
                        items.append(Closed("protocol_error", "text message not UTF-8"))
                        break
                    if not message.strip(b"\r\n"):
                        if message == b"\r\n\r\n":
                            items.append(KEEPALIVE)
                        continue
                    items.append(message)
        if (
            self._protocol.state is State.CONNECTING
            and self._protocol.handshake_exc is not None
            and not self._finished
        ):
            # Not an HTTP request at all, or one too large: answered or dropped.
            self._finished = True
            items.append(Refused("bad_upgrade", str(self._protocol.handshake_exc)))
        error = self._protocol.parser_exc
        if error is not None and not self._finished:
            self._finished = True
            if isinstance(error, EOFError):
                items.append(Closed("closed"))  # gone without a closing handshake
            else:
                too_large = isinstance(error, PayloadTooBig)
                items.append(Closed("too_large" if too_large else "protocol_error", str(error)))
        elif self._protocol.close_rcvd is not None and not self._finished:
            self._finished = True
            items.append(Closed("closed"))
        return items

    def _upgrade(self, request: Request) -> Opened | Refused:
        response = self._protocol.accept(request)
        self._protocol.send_response(response)
        if response.status_code == 101:
            return Opened()
        error = self._protocol.handshake_exc
        reason = "subprotocol" if isinstance(error, NegotiationError) else "bad_upgrade"
        detail = str(error) if isinstance(error, InvalidHandshake) else response.reason_phrase
        self._finished = True
        return Refused(reason, detail)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
