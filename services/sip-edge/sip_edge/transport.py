"""UDP and TCP transports (asyncio): bytes in and out, nothing SIP-specific but framing.

TCP connections, accepted or opened by the edge, are kept by remote address so
that responses and NOTIFYs to a peer reuse its connection while it is open
(RFC 3261 §18).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from presence.sip.framing import FramingError, KeepAlive, StreamFramer

log = logging.getLogger(__name__)

Address = tuple[str, int]
CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Source:
    """Where a message came from, and how to answer it."""

    transport: str  # "udp" or "tcp"
    host: str
    port: int
    # Sends bytes back: to an address over UDP, on the same connection over TCP.
    send: Callable[[bytes, Address], None]

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


MessageHandler = Callable[[bytes, Source], None]


class UdpEndpoint:
    """A UDP socket read in batches: asyncio's datagram transport reads one datagram
    per event-loop pass, which under load leaves the answers to our NOTIFYs queued
    in the kernel until the phone retransmits (and the backlog grows)."""

    BATCH = 256

    def __init__(self, sock: socket.socket, handle: MessageHandler) -> None:
        self._sock = sock
        self._handle = handle
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        for _ in range(self.BATCH):
            try:
                data, addr = self._sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                # ICMP port unreachable and the like: the transaction timers deal with it.
                log.debug("UDP receive error: %s", error)
                return
            if not data.strip(b"\r\n"):
                continue  # keep-alive (RFC 5626 §4.4.1 uses CRLF on UDP too)
            self._handle(data, Source("udp", addr[0], addr[1], self.send))

    def send(self, data: bytes, address: Address) -> None:
        try:
            self._sock.sendto(data, address)
        except (BlockingIOError, InterruptedError):
            # A full send buffer (4 MiB): dropped like any lost datagram; client
            # transactions retransmit, and clients retransmit their requests.
            log.warning("UDP send buffer full: dropped a datagram to %s", address)
        except OSError as error:
            log.debug("UDP send to %s failed: %s", address, error)

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


class TcpConnections:
    def __init__(self, handle: MessageHandler, idle_timeout: float) -> None:
        self._handle = handle
        self._idle_timeout = idle_timeout
        self._writers: dict[Address, asyncio.StreamWriter] = {}
        self._server: asyncio.Server | None = None

    def __len__(self) -> int:
        return len(self._writers)

    async def serve(self, sock: socket.socket) -> None:
        sock.listen(1024)
        self._server = await asyncio.start_server(self._serve_connection, sock=sock)

    async def send(self, data: bytes, address: Address) -> None:
        """Send on the open connection to `address`, or open one (raises OSError)."""
        writer = self._writers.get(address)
        if writer is None or writer.is_closing():
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address[0], address[1]), CONNECT_TIMEOUT
            )
            task = asyncio.get_running_loop().create_task(self._run(reader, writer, address))
            task.add_done_callback(lambda _: None)
        writer.write(data)

    def writer_to(self, address: Address) -> Callable[[bytes, Address], None]:
        def send(data: bytes, _address: Address) -> None:
            writer = self._writers.get(address)
            if writer is not None and not writer.is_closing():
                writer.write(data)

        return send

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        await self._run(reader, writer, (peer[0], peer[1]))

    async def _run(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: Address
    ) -> None:
        self._writers[address] = writer
        source = Source("tcp", address[0], address[1], self.writer_to(address))
        framer = StreamFramer()
        try:
            while True:
                chunk = await asyncio.wait_for(reader.read(65536), self._idle_timeout)
                if not chunk:
                    break
                for item in framer.feed(chunk):
                    if isinstance(item, KeepAlive):
                        writer.write(b"\r\n")  # RFC 5626 §3.5.1: pong
                    else:
                        self._handle(item, source)
        except FramingError as error:
            log.info("closing TCP connection from %s: %s", source, error)
        except (TimeoutError, ConnectionError):
            pass  # idle too long, or the peer went away
        finally:
            if self._writers.get(address) is writer:
                del self._writers[address]
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def stop_listening(self) -> None:
        """No new connections; those open stay, for the replies still due on them."""
        if self._server is not None:
            self._server.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers.values()):
            writer.close()
