"""A minimal SIP user agent for tests: sends crafted requests over real UDP, TCP or
TLS sockets and waits (with a deadline) for the responses that match them."""

from __future__ import annotations

import secrets
import socket
import ssl
import time
from dataclasses import dataclass, field

from presence.sip.framing import KeepAlive, StreamFramer
from presence.sip.grammar import parse_via
from presence.sip.message import SipRequest, SipResponse
from presence.sip.parser import parse_message, serialize
from presence.sip.responses import make_response


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


@dataclass
class SipClient:
    """One local socket; requests are built from text templates by the tests."""

    server: tuple[str, int]
    transport: str = "udp"
    timeout: float = 10.0
    local_host: str = "127.0.0.1"  # any 127/8 address: tests of trusted proxies use another
    # For transport "tls": trusts the server's CA (and may carry a client certificate).
    tls_context: ssl.SSLContext | None = None
    _sock: socket.socket = field(init=False)
    _framer: StreamFramer = field(init=False, default_factory=StreamFramer)
    _pending: list[bytes] = field(init=False, default_factory=list)
    # Requests (NOTIFYs) that arrived while a response was awaited.
    _requests: list[SipRequest] = field(init=False, default_factory=list)
    local_port: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.transport == "udp":
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sock.bind((self.local_host, 0))
        else:
            self._sock = socket.create_connection(
                self.server, timeout=self.timeout, source_address=(self.local_host, 0)
            )
            if self.transport == "tls":
                assert self.tls_context is not None, "a TLS client needs a context"
                self._sock = self.tls_context.wrap_socket(
                    self._sock, server_hostname=self.server[0]
                )
        self.local_port = self._sock.getsockname()[1]

    def close(self) -> None:
        self._sock.close()

    def request(
        self,
        method: str,
        uri: str,
        headers: list[tuple[str, str]],
        body: bytes = b"",
        *,
        from_uri: str = "sip:tester@example.com",
        from_tag: str | None = None,
        to_uri: str | None = None,
        to_tag: str | None = None,
        call_id: str | None = None,
        cseq: int = 1,
    ) -> bytes:
        """Request bytes with the Via/From/To/Call-ID/CSeq a UA would send, plus `headers`."""
        to = f"<{to_uri or uri}>" + (f";tag={to_tag}" if to_tag else "")
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/{self.transport.upper()} {self.local_host}:{self.local_port}"
            f";branch={new_branch()};rport",
            "Max-Forwards: 70",
            f"From: <{from_uri}>;tag={from_tag or secrets.token_hex(4)}",
            f"To: {to}",
            f"Call-ID: {call_id or secrets.token_hex(8) + '@127.0.0.1'}",
            f"CSeq: {cseq} {method}",
            *(f"{name}: {value}" for name, value in headers),
            f"Content-Length: {len(body)}",
            "",
            "",
        ]
        return "\r\n".join(lines).encode() + body

    def send(self, data: bytes) -> None:
        if self.transport == "udp":
            self._sock.sendto(data, self.server)
        else:
            self._sock.sendall(data)

    def receive(self, timeout: float | None = None) -> SipResponse | SipRequest:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            if self._pending:
                return parse_message(self._pending.pop(0), datagram=self.transport == "udp")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no SIP message before the deadline")
            self._sock.settimeout(remaining)
            try:
                data = self._sock.recv(65535)
            except TimeoutError:
                raise TimeoutError("no SIP message before the deadline") from None
            if self.transport == "udp":
                self._pending.append(data)
            else:
                if not data:
                    raise ConnectionError("server closed the connection")
                self._pending += [
                    m for m in self._framer.feed(data) if not isinstance(m, KeepAlive)
                ]

    def receive_raw(self, timeout: float | None = None) -> bytes:
        """The next datagram as bytes, unparsed (for answers to malformed requests)."""
        self._sock.settimeout(timeout or self.timeout)
        return self._sock.recv(65535)

    def transact_raw(self, data: bytes, timeout: float | None = None) -> bytes:
        """Send a request and return its final response's bytes unparsed (an answer to a
        malformed request may echo what our parser refuses)."""
        self.send(data)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            if not self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("no SIP message before the deadline")
                self._sock.settimeout(remaining)
                received = self._sock.recv(65535)
                if self.transport == "udp":
                    self._pending.append(received)
                elif not received:
                    raise ConnectionError("server closed the connection")
                else:
                    self._pending += [
                        m for m in self._framer.feed(received) if not isinstance(m, KeepAlive)
                    ]
                continue
            message = self._pending.pop(0)
            if message.startswith(b"SIP/2.0 ") and not message.startswith(b"SIP/2.0 1"):
                return message

    def transact(self, data: bytes, timeout: float | None = None) -> SipResponse:
        """Send a request and return its final response (provisional ones are skipped)."""
        self.send(data)
        return self.final_response(timeout)

    def final_response(self, timeout: float | None = None) -> SipResponse:
        """The next final response (provisional ones skipped, requests kept)."""
        while True:
            message = self.receive(timeout)
            if isinstance(message, SipRequest):
                self._requests.append(message)
            elif message.status >= 200:
                return message

    def next_request(self, timeout: float | None = None) -> SipRequest:
        """The next request the server sent us (a NOTIFY), responses skipped."""
        while not self._requests:
            message = self.receive(timeout)
            if isinstance(message, SipRequest):
                return message
        return self._requests.pop(0)

    def answer(self, request: SipRequest, status: int = 200) -> None:
        """Respond to a server's request, to the address its Via names (we are a UA)."""
        response = make_response(request, status)
        data = serialize(response)
        if self.transport == "udp":
            via = parse_via(request.headers.get_all("Via")[0])
            self._sock.sendto(data, (via.host.strip("[]"), via.port or 5060))
        else:
            self._sock.sendall(data)
