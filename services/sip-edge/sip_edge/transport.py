"""UDP and connection transports (asyncio): bytes in and out, nothing SIP-specific
but framing.

Connections ride on TCP: plain (tcp), TLS (tls), WebSocket (ws, RFC 7118) and
WebSocket over TLS (wss); one TcpConnections per transport, each keeping its
connections by remote address so that responses and NOTIFYs to a peer reuse its
connection while it is open (RFC 3261 §18). TLS is TCP's stream framing after a
handshake; WebSocket is one SIP message per WebSocket message
(presence.sip.websocket). The edge connects out over tcp and tls only: a
WebSocket peer (a browser) is reached over its own connection or not at all
(FlowFailed).

What one peer can hold is bounded (TcpLimits), over all transports together:
connections in all and per IP address (one beyond is closed at accept, before
any handshake), connects under way (one connect per address, shared by every
NOTIFY waiting for it), unsent bytes per connection (a peer that does not read
is disconnected), and time: the TLS handshake and WebSocket upgrade within
handshake_timeout, no bytes at all for idle_timeout, or nothing but keep-alives
for keepalive_only_timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from presence.runtime import metrics
from presence.runtime.tls import peer_verified
from presence.settings import Settings
from presence.sip.framing import FramingError, KeepAlive, StreamFramer
from presence.sip.websocket import Closed, Opened, Refused, SipWebSocket
from sip_edge.limits import SlotLimiter
from sip_edge.source import Address, Source

log = logging.getLogger(__name__)


class ConnectTimeout(TimeoutError):
    """A NOTIFY's TCP connect did not complete in time."""


class ConnectionLimit(ConnectionError):
    """A connection (or connect) the limits do not allow."""


class WriteBufferFull(ConnectionError):
    """The peer does not read: its unsent bytes passed the cap; the connection is closed."""


class FlowFailed(ConnectionError):
    """No connection to a peer the edge cannot connect to (a WebSocket client)."""


# The largest SIP message on a connection (framing or WebSocket message).
MAX_MESSAGE_BYTES = 65536


@dataclass(frozen=True)
class TcpLimits:
    max_connections: int = 4096
    max_per_address: int = 100
    max_connecting: int = 64
    max_connecting_per_host: int = 4
    write_buffer: int = 262144
    idle_timeout: float = 300.0
    keepalive_only_timeout: float = 7200.0
    connect_timeout: float = 5.0
    handshake_timeout: float = 5.0

    @classmethod
    def of(cls, settings: Settings) -> TcpLimits:
        return cls(
            max_connections=settings.tcp_max_connections,
            max_per_address=settings.tcp_max_connections_per_address,
            max_connecting=settings.notify_max_connecting,
            max_connecting_per_host=settings.notify_max_connecting_per_host,
            write_buffer=settings.tcp_max_write_buffer,
            idle_timeout=settings.tcp_idle_timeout,
            keepalive_only_timeout=settings.tcp_keepalive_only_timeout,
            connect_timeout=settings.notify_connect_timeout_ms / 1000,
            handshake_timeout=settings.sip_handshake_timeout_ms / 1000,
        )


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


class _StreamCodec:
    """SIP on a byte stream (TCP, TLS): RFC 3261 §18.3 framing."""

    def __init__(self) -> None:
        self._framer = StreamFramer(max_message_bytes=MAX_MESSAGE_BYTES)

    def feed(self, data: bytes) -> list[bytes | KeepAlive | Opened | Refused | Closed]:
        return list(self._framer.feed(data))

    def end(self) -> list[bytes | KeepAlive | Opened | Refused | Closed]:
        return []

    def encode(self, message: bytes) -> bytes:
        return message

    def pending(self) -> tuple[bytes, bool]:
        return b"", False

    def goodbye(self) -> bytes:
        return b""


class _WebSocketCodec:
    """SIP over WebSocket (RFC 7118): the upgrade, then one message per message."""

    def __init__(self) -> None:
        self._websocket = SipWebSocket(MAX_MESSAGE_BYTES)

    def feed(self, data: bytes) -> list[bytes | KeepAlive | Opened | Refused | Closed]:
        return list(self._websocket.receive(data))

    def end(self) -> list[bytes | KeepAlive | Opened | Refused | Closed]:
        return list(self._websocket.receive_eof())

    def encode(self, message: bytes) -> bytes:
        self._websocket.send(message)
        return self._websocket.data_to_send()[0]

    def pending(self) -> tuple[bytes, bool]:
        return self._websocket.data_to_send()

    def goodbye(self) -> bytes:
        """The close frame of a server going away (1001)."""
        self._websocket.close(1001)
        return self._websocket.data_to_send()[0]


@dataclass
class _Connection:
    writer: asyncio.StreamWriter
    address: Address
    codec: _StreamCodec | _WebSocketCodec = field(default_factory=_StreamCodec)
    # Set when the edge closed it because the peer stopped reading.
    overflowed: bool = False


@dataclass
class SharedSlots:
    """Connections (open) and connects (under way) by IP address, counted over every
    transport: all of them are TCP connections, file descriptors and buffers."""

    connections: SlotLimiter
    connecting: SlotLimiter

    @classmethod
    def of(cls, limits: TcpLimits) -> SharedSlots:
        return cls(
            SlotLimiter(limits.max_connections, limits.max_per_address),
            SlotLimiter(limits.max_connecting, limits.max_connecting_per_host),
        )


class TcpConnections:
    """The connections of one transport: "tcp", "tls" (with `server_tls` to accept,
    `client_tls` to connect), "ws" or "wss" (`websocket`; accepted only)."""

    def __init__(
        self,
        handle: MessageHandler,
        limits: TcpLimits,
        *,
        transport: str = "tcp",
        slots: SharedSlots | None = None,
        server_tls: ssl.SSLContext | None = None,
        client_tls: ssl.SSLContext | None = None,
        websocket: bool = False,
    ) -> None:
        self._handle = handle
        self._limits = limits
        self.transport = transport
        self._server_tls = server_tls
        self._client_tls = client_tls
        self._websocket = websocket
        self._connections: dict[Address, _Connection] = {}
        shared = slots or SharedSlots.of(limits)
        self._slots = shared.connections
        self._connect_slots = shared.connecting
        self._connecting: dict[Address, asyncio.Task[_Connection]] = {}
        self._runs: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        # TLS listeners accept by themselves (_accept_tls).
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._connections)

    @property
    def connecting(self) -> int:
        return len(self._connecting)

    async def serve(self, sock: socket.socket) -> None:
        sock.listen(1024)
        if self._server_tls is None:
            self._server = await asyncio.start_server(self._serve_connection, sock=sock)
            return
        sock.setblocking(False)
        self._listener = sock
        self._accepting = asyncio.get_running_loop().create_task(
            self._accept_tls(sock, self._server_tls)
        )

    async def send(self, data: bytes, address: Address, server_name: str | None = None) -> None:
        """Send a request on the open connection to `address`, or on one opened for
        it (TLS: verified as `server_name`), and wait while the peer reads too slowly
        (backpressure). Raises ConnectTimeout, ConnectionLimit, WriteBufferFull,
        FlowFailed (WebSocket: no connection) or another OSError."""
        connection = self._connections.get(address)
        if connection is None or connection.writer.is_closing():
            if self._websocket:
                raise FlowFailed(f"no {self.transport} connection from {address[0]}:{address[1]}")
            connection = await self._connect(address, server_name)
        if connection.writer.is_closing():  # closed while this one waited for it
            if connection.overflowed:
                raise WriteBufferFull(f"{address[0]}:{address[1]} does not read")
            raise ConnectionResetError(f"connection to {address[0]}:{address[1]} closed")
        self._write(connection, data)
        try:
            await connection.writer.drain()
        except ConnectionError:
            if connection.overflowed:
                raise WriteBufferFull(f"{address[0]}:{address[1]} does not read") from None
            raise

    def writer_to(self, address: Address) -> Callable[[bytes, Address], None]:
        """Responses on the connection a request came on (never waits: a peer too
        slow for them loses its connection at the cap)."""

        def send(data: bytes, _address: Address) -> None:
            connection = self._connections.get(address)
            if connection is not None and not connection.writer.is_closing():
                with contextlib.suppress(WriteBufferFull):
                    self._write(connection, data)

        return send

    def _write(self, connection: _Connection, data: bytes) -> None:
        transport = connection.writer.transport
        buffered = transport.get_write_buffer_size()
        if buffered and buffered + len(data) > self._limits.write_buffer:
            connection.overflowed = True
            metrics.TCP_CLOSED.labels("write_buffer_full").inc()
            log.warning(
                "closing TCP connection to %s:%s: %d bytes unsent (the peer does not read)",
                *connection.address,
                buffered,
            )
            transport.abort()
            raise WriteBufferFull(f"{connection.address[0]}:{connection.address[1]} does not read")
        connection.writer.write(connection.codec.encode(data))

    async def _connect(self, address: Address, server_name: str | None) -> _Connection:
        """The connection to `address`: one connect per address, shared by every
        caller that needs it while it is under way."""
        opening = self._connecting.get(address)
        if opening is None:
            refusal = self._slots.refusal(address[0])
            if refusal is not None:
                metrics.TCP_REFUSED.labels("outbound", refusal).inc()
                raise ConnectionLimit(f"too many TCP connections (to {address[0]})")
            refusal = self._connect_slots.refusal(address[0])
            if refusal is not None:
                metrics.TCP_REFUSED.labels("connecting", refusal).inc()
                raise ConnectionLimit(f"too many connects under way (to {address[0]})")
            self._connect_slots.acquire(address[0])
            opening = asyncio.get_running_loop().create_task(self._open(address, server_name))
            self._connecting[address] = opening
            opening.add_done_callback(lambda done: self._opened(address, done))
        return await asyncio.shield(opening)

    def _opened(self, address: Address, opening: asyncio.Task[_Connection]) -> None:
        del self._connecting[address]
        self._connect_slots.release(address[0])
        if not opening.cancelled():
            opening.exception()  # retrieved: its callers may all have given up

    async def _open(self, address: Address, server_name: str | None) -> _Connection:
        tls: dict[str, object] = {}
        if self._client_tls is not None:
            tls = {"ssl": self._client_tls, "server_hostname": server_name or address[0]}
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(address[0], address[1], **tls),  # type: ignore[arg-type]
                self._limits.connect_timeout,
            )
        except TimeoutError:
            raise ConnectTimeout(
                f"no {self.transport.upper()} connection to {address[0]}:{address[1]} "
                f"within {self._limits.connect_timeout:g} s"
            ) from None
        refusal = self._slots.refusal(address[0])
        if refusal is not None:  # others opened meanwhile
            writer.transport.abort()
            metrics.TCP_REFUSED.labels("outbound", refusal).inc()
            raise ConnectionLimit(f"too many TCP connections (to {address[0]})")
        self._slots.acquire(address[0])
        connection = self._adopt(writer, address)
        self._spawn_run(reader, connection)
        return connection

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        address = (peer[0], peer[1])
        if not self._admit(address):
            writer.transport.abort()
            return
        await self._run(reader, self._adopt(writer, address))

    def _admit(self, address: Address) -> bool:
        """Take a connection slot for an accepted connection, or count its refusal."""
        refusal = self._slots.refusal(address[0])
        if refusal is not None:
            metrics.TCP_REFUSED.labels("inbound", refusal).inc()
            log.warning(
                "refused a %s connection from %s: %s",
                self.transport,
                address[0],
                "too many in all" if refusal == "total" else "too many from that address",
            )
            return False
        self._slots.acquire(address[0])
        return True

    async def _accept_tls(self, listener: socket.socket, tls: ssl.SSLContext) -> None:
        """Accept TLS connections: the slot is taken at accept, before the handshake,
        so that connections that never finish it count against the limits and are
        closed after handshake_timeout. (StreamWriter.start_tls would lose a
        ClientHello that arrived before it was called.)"""
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, peer = await loop.sock_accept(listener)
            except OSError as error:  # out of file descriptors, and the like
                log.warning("%s accept failed: %s", self.transport, error)
                await asyncio.sleep(0.1)
                continue
            address = (peer[0], peer[1])
            if not self._admit(address):
                with contextlib.suppress(OSError):  # RST, as for a refused TCP connection
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                sock.close()
                continue
            task = loop.create_task(self._handshake(sock, address, tls))
            self._runs.add(task)
            task.add_done_callback(self._runs.discard)

    async def _handshake(self, sock: socket.socket, address: Address, tls: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**16, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        started = loop.time()
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                sock,
                ssl=tls,
                ssl_handshake_timeout=self._limits.handshake_timeout,
            )
        except (ssl.SSLError, OSError) as error:
            timed_out = loop.time() - started >= self._limits.handshake_timeout
            reason = "handshake_timeout" if timed_out else "tls_failed"
            metrics.TRANSPORT_REFUSALS.labels(self.transport, reason).inc()
            log.info(
                "closing %s connection from %s:%s: %s",
                self.transport,
                *address,
                "TLS handshake not done in time" if timed_out else error,
            )
            self._slots.release(address[0])
            sock.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)  # type: ignore[arg-type]
        verified = peer_verified(writer.get_extra_info("ssl_object"))
        await self._run(reader, self._adopt(writer, address), verified)

    def _adopt(self, writer: asyncio.StreamWriter, address: Address) -> _Connection:
        """A new connection (its slot taken): bounded buffers, registered by address."""
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._limits.write_buffer)
        # drain() waits from half the cap on; at the cap the connection is closed.
        writer.transport.set_write_buffer_limits(high=self._limits.write_buffer // 2)
        codec = _WebSocketCodec() if self._websocket else _StreamCodec()
        connection = _Connection(writer, address, codec)
        if not self._websocket:  # a WebSocket peer is reachable once upgraded
            self._connections[address] = connection
        return connection

    def _spawn_run(self, reader: asyncio.StreamReader, connection: _Connection) -> None:
        task = asyncio.get_running_loop().create_task(self._run(reader, connection))
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)

    async def _run(
        self, reader: asyncio.StreamReader, connection: _Connection, verified: bool = False
    ) -> None:
        writer, address = connection.writer, connection.address
        source = Source(
            self.transport, address[0], address[1], self.writer_to(address), verified_peer=verified
        )
        codec = connection.codec
        loop = asyncio.get_running_loop()
        last_sip = loop.time()  # keep-alives do not count
        # A WebSocket connection must complete its upgrade within the handshake time.
        upgrade_by = last_sip + self._limits.handshake_timeout if self._websocket else None
        try:
            while True:
                keepalive_left = last_sip + self._limits.keepalive_only_timeout - loop.time()
                wait = min(self._limits.idle_timeout, keepalive_left)
                if upgrade_by is not None:
                    wait = min(wait, upgrade_by - loop.time())
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), max(wait, 0))
                except TimeoutError:
                    if upgrade_by is not None and loop.time() >= upgrade_by:
                        metrics.TRANSPORT_REFUSALS.labels(self.transport, "handshake_timeout").inc()
                        log.info("closing %s: WebSocket upgrade not done in time", source)
                        break
                    reason = "idle" if wait < keepalive_left else "keepalive_only"
                    metrics.TCP_CLOSED.labels(reason).inc()
                    log.info("closing %s connection %s: %s", self.transport, source,
                             reason.replace("_", " "))  # fmt: skip
                    break
                items = codec.feed(chunk) if chunk else codec.end()
                done = not chunk
                for item in items:
                    if isinstance(item, KeepAlive):
                        self._write(connection, b"\r\n")  # RFC 5626 §3.5.1: pong
                    elif isinstance(item, bytes):
                        last_sip = loop.time()
                        self._handle(item, source)
                    elif isinstance(item, Opened):
                        upgrade_by = None
                        self._connections[address] = connection
                    else:
                        done = True
                        self._refused(item, source)
                data, end = codec.pending()
                if data:
                    writer.write(data)
                if done or end:
                    break
        except FramingError as error:
            metrics.TCP_CLOSED.labels("framing_error").inc()
            log.info("closing %s connection from %s: %s", self.transport, source, error)
        except ConnectionError:
            pass  # the peer went away, or stopped reading (WriteBufferFull)
        finally:
            if self._connections.get(address) is connection:
                del self._connections[address]
            self._slots.release(address[0])
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    def _refused(self, item: Refused | Closed, source: Source) -> None:
        """Count and log why a WebSocket connection ends (a peer's close is no refusal)."""
        reason = {
            "subprotocol": "no_sip_subprotocol",
            "bad_upgrade": "bad_upgrade",
            "too_large": "message_too_large",
            "protocol_error": "websocket_protocol_error",
        }.get(item.reason)
        if reason is not None:
            metrics.TRANSPORT_REFUSALS.labels(self.transport, reason).inc()
            log.info("closing %s: %s (%s)", source, reason.replace("_", " "), item.detail)

    def stop_listening(self) -> None:
        """No new connections; those open stay, for the replies still due on them."""
        if self._server is not None:
            self._server.close()
        if self._accepting is not None:
            self._accepting.cancel()
        if self._listener is not None:
            self._listener.close()

    def close(self) -> None:
        self.stop_listening()
        for connection in list(self._connections.values()):
            if not connection.writer.is_closing():
                connection.writer.write(connection.codec.goodbye())
            connection.writer.close()
