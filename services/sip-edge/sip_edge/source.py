"""Where a SIP message came from, and how to answer it (a value the transports make)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Address = tuple[str, int]


@dataclass(frozen=True)
class Source:
    """Where a message came from, and how to answer it."""

    transport: str  # "udp", "tcp", "tls", "ws" or "wss"
    host: str
    port: int
    # Sends bytes back: to an address over UDP, on the same connection otherwise.
    send: Callable[[bytes, Address], None]
    # The peer presented a TLS client certificate that verified against
    # PRESENCE_TLS_CLIENT_CA (a trusted proxy, with mutual TLS).
    verified_peer: bool = False

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    @property
    def message_bounded(self) -> bool:
        """Each message arrives whole (a datagram, a WebSocket message), so
        Content-Length may be missing (RFC 3261 §18.3, RFC 7118 §5.1: JsSIP omits it)."""
        return self.transport in ("udp", "ws", "wss")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"
