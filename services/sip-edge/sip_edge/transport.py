"""UDP and TCP transports (asyncio): bytes in and out, nothing SIP-specific but framing."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import cast

from presence.sip.framing import FramingError, KeepAlive, StreamFramer

from sip_edge.edge import Source

log = logging.getLogger(__name__)

MessageHandler = Callable[[bytes, Source], Awaitable[None]]
# An idle TCP connection is closed after this long (a client keeps it with CRLF pings).
TCP_IDLE_TIMEOUT = 300.0


class UdpTransport(asyncio.DatagramProtocol):
    def __init__(self, handle: MessageHandler) -> None:
        self._handle = handle
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's UDP transport is not a DatagramTransport subclass.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip(b"\r\n"):
            return  # keep-alive (RFC 5626 §4.4.1 uses CRLF on UDP too)
        source = Source("udp", addr[0], addr[1], self.send)
        asyncio.get_running_loop().create_task(self._handle(data, source))

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(data, address)


async def start_udp(sock: socket.socket, handle: MessageHandler) -> asyncio.DatagramTransport:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: UdpTransport(handle), sock=sock
    )
    return transport


async def start_tcp(sock: socket.socket, handle: MessageHandler) -> asyncio.Server:
    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]

        def send(data: bytes, _address: tuple[str, int]) -> None:
            # Responses go back on the connection the request came on (§18.2.2).
            if not writer.is_closing():
                writer.write(data)

        source = Source("tcp", host, port, send)
        framer = StreamFramer()
        try:
            while True:
                chunk = await asyncio.wait_for(reader.read(65536), TCP_IDLE_TIMEOUT)
                if not chunk:
                    break
                for item in framer.feed(chunk):
                    if isinstance(item, KeepAlive):
                        send(b"\r\n", (host, port))  # RFC 5626 §3.5.1 pong
                    else:
                        await handle(item, source)
        except FramingError as error:
            log.info("closing TCP connection from %s: %s", source, error)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    sock.listen(1024)
    return await asyncio.start_server(on_connection, sock=sock)
