"""SIP over TLS and over WebSocket (RFC 7118), and HTTPS, on the real stack: real
TLS sockets trusting a CA made for the test (presence.runtime.local_ca), a real WebSocket
client (the `websockets` library), and what bad peers cost: a stalled handshake,
an upgrade without the `sip` subprotocol, an oversized message."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from presence.runtime.local_ca import LocalCa, ensure, issue, write_pair
from presence.sip.framing import StreamFramer
from presence.sip.grammar import parse_via
from presence.sip.message import SipRequest, SipResponse
from presence.sip.parser import parse_message, serialize
from presence.sip.responses import make_response

from .conftest import Stack, eventually, metric_samples, running_stack, wait_until
from .sip_client import SipClient, new_branch

pytestmark = pytest.mark.integration

PIDF_NS = "{urn:ietf:params:xml:ns:pidf}"
HANDSHAKE_TIMEOUT_MS = 1000


def pidf(entity: str, basic: str) -> bytes:
    return (
        f'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{entity}">'
        f'<tuple id="t1"><status><basic>{basic}</basic></status></tuple></presence>'
    ).encode()


def basics(notify: SipRequest) -> list[str]:
    if not notify.body:
        return []
    root = etree.fromstring(notify.body)
    return [element.text or "" for element in root.iter(f"{PIDF_NS}basic")]


@pytest.fixture(scope="module")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    return ensure(Path(tmp_path_factory.mktemp("tls")))


@pytest.fixture(scope="module")
def secure_stack(test_database: str, local_ca: LocalCa) -> Iterator[Stack]:
    with running_stack(
        test_database,
        PRESENCE_FORCE_ACTIVE="1",
        PRESENCE_TLS_CERT=str(local_ca.server_cert),
        PRESENCE_TLS_KEY=str(local_ca.server_key),
        # Trusted for the edge's outgoing TLS connections too (NOTIFYs to sips: and
        # ;transport=tls targets); clients without certificates are still served.
        PRESENCE_TLS_CLIENT_CA=str(local_ca.ca_cert),
        PRESENCE_SIP_HANDSHAKE_TIMEOUT_MS=str(HANDSHAKE_TIMEOUT_MS),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client_tls(local_ca: LocalCa) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(local_ca.ca_cert))


def port(stack: Stack, transport: str) -> int:
    return int(stack.env[f"PRESENCE_SIP_{transport.upper()}_PORT"])


def refusals(stack: Stack) -> dict[str, float]:
    return metric_samples(stack, "sip-edge", "presence_sip_transport_refusals_total")


def refusal_count(stack: Stack, transport: str, reason: str) -> float:
    return refusals(stack).get(f'reason="{reason}",transport="{transport}"', 0.0)


def wait_for_count(stack: Stack, transport: str, reason: str, count: float) -> None:
    deadline = time.monotonic() + 10
    while refusal_count(stack, transport, reason) < count:
        assert time.monotonic() < deadline, f"{transport} {reason} was not counted"
        time.sleep(0.1)


# --- SIP over TLS -------------------------------------------------------------


def test_tls_subscribe_publish_and_notify_over_the_same_connection(
    secure_stack: Stack, client_tls: ssl.SSLContext
) -> None:
    server = ("127.0.0.1", port(secure_stack, "tls"))
    presentity = f"sip:tls-{secrets.token_hex(4)}@127.0.0.1"
    watcher = SipClient(server, "tls", tls_context=client_tls)
    publisher = SipClient(server, "tls", tls_context=client_tls)
    try:
        tls_socket = watcher._sock
        assert isinstance(tls_socket, ssl.SSLSocket)
        assert tls_socket.version() in ("TLSv1.2", "TLSv1.3")
        options = watcher.transact(watcher.request("OPTIONS", "sip:127.0.0.1", []))
        assert options.status == 200
        subscribe = watcher.request(
            "SUBSCRIBE",
            presentity,
            [
                ("Event", "presence"),
                ("Expires", "600"),
                ("Contact", f"<sip:w@127.0.0.1:{watcher.local_port};transport=tls>"),
            ],
        )
        subscribed = watcher.transact(subscribe)
        assert subscribed.status == 200
        # In-dialog requests come back over TLS: the Contact names that listener.
        tls_contact = f"<sip:127.0.0.1:{server[1]};transport=tls>"
        assert subscribed.headers.get("Contact") == tls_contact
        first = watcher.next_request()
        assert first.method == "NOTIFY"
        assert first.headers.get("Contact") == tls_contact
        assert parse_via(first.headers.get_all("Via")[0]).transport.upper() == "TLS"
        watcher.answer(first)
        headers = [("Event", "presence"), ("Content-Type", "application/pidf+xml")]
        published = publisher.transact(
            publisher.request("PUBLISH", presentity, headers, pidf(presentity, "open"))
        )
        assert published.status == 200
        deadline = time.monotonic() + 10
        while True:
            notify = watcher.next_request(max(0.1, deadline - time.monotonic()))
            watcher.answer(notify)
            if basics(notify) == ["open"]:
                break
    finally:
        watcher.close()
        publisher.close()


class TlsTarget:
    """A watcher's (or its proxy's) own TLS listener: the edge must connect to it."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(15)
        self.port = self.listener.getsockname()[1]

    def next_notify(self) -> tuple[SipRequest, ssl.SSLSocket]:
        """Accept the edge's connection and read one request from it."""
        raw, _ = self.listener.accept()
        connection = self.context.wrap_socket(raw, server_side=True)
        connection.settimeout(15)
        framer = StreamFramer()
        while True:
            data = connection.recv(65536)
            assert data, "the edge closed the connection before a NOTIFY"
            for item in framer.feed(data):
                if isinstance(item, bytes):
                    message = parse_message(item, datagram=False)
                    assert isinstance(message, SipRequest)
                    return message, connection

    def close(self) -> None:
        self.listener.close()


def subscribe_via(stack: Stack, presentity: str, record_route: str) -> SipResponse:
    watcher = SipClient(stack.sip, "udp")
    try:
        request = watcher.request(
            "SUBSCRIBE",
            presentity,
            [
                ("Event", "presence"),
                ("Expires", "600"),
                ("Contact", f"<sip:w@127.0.0.1:{watcher.local_port}>"),
                ("Record-Route", record_route),
            ],
        )
        return watcher.transact(request)
    finally:
        watcher.close()


def test_a_notify_to_a_tls_route_opens_a_verified_tls_connection(
    secure_stack: Stack, local_ca: LocalCa
) -> None:
    target = TlsTarget(local_ca.server_cert, local_ca.server_key)  # names 127.0.0.1, localhost
    try:
        presentity = f"sip:routed-{secrets.token_hex(4)}@127.0.0.1"
        route = f"<sips:127.0.0.1:{target.port};lr>"  # verified against the IP SAN
        assert subscribe_via(secure_stack, presentity, route).status == 200
        notify, connection = target.next_notify()
        with connection:
            assert notify.method == "NOTIFY"
            assert parse_via(notify.headers.get_all("Via")[0]).transport.upper() == "TLS"
            connection.sendall(serialize(make_response(notify, 200)))
    finally:
        target.close()


def test_a_notify_to_an_unverifiable_tls_target_fails_and_is_reported(
    secure_stack: Stack, tmp_path: Path
) -> None:
    stranger = ensure(tmp_path / "stranger-ca")  # a CA the edge does not trust
    target = TlsTarget(stranger.server_cert, stranger.server_key)
    before = metric_samples(secure_stack, "sip-edge", "presence_sip_notify_outcomes_total").get(
        'event="presence",outcome="transport_error"', 0.0
    )
    try:
        presentity = f"sip:forged-{secrets.token_hex(4)}@127.0.0.1"
        route = f"<sip:127.0.0.1:{target.port};transport=tls;lr>"
        assert subscribe_via(secure_stack, presentity, route).status == 200
        raw, _ = target.listener.accept()  # the edge connects, then refuses our certificate
        with raw, pytest.raises((ssl.SSLError, OSError)):
            target.context.wrap_socket(raw, server_side=True).recv(1)

        def transport_errors() -> float:
            samples = metric_samples(secure_stack, "sip-edge", "presence_sip_notify_outcomes_total")
            return samples.get('event="presence",outcome="transport_error"', 0.0)

        wait_until(lambda: transport_errors() >= before + 1, 10, "a 503 Transport Error")
    finally:
        target.close()


def test_a_stalled_tls_handshake_is_closed_in_time_and_counted(secure_stack: Stack) -> None:
    before = refusal_count(secure_stack, "tls", "handshake_timeout")
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port(secure_stack, "tls")), timeout=10) as sock:
        assert sock.recv(1024) == b""  # closed by the server, no byte from us
    assert time.monotonic() - started < HANDSHAKE_TIMEOUT_MS / 1000 + 3
    assert refusal_count(secure_stack, "tls", "handshake_timeout") == before + 1


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_a_failed_tls_handshake_is_counted_and_others_are_served(
    secure_stack: Stack, client_tls: ssl.SSLContext
) -> None:
    before = refusal_count(secure_stack, "tls", "tls_failed")
    with socket.create_connection(("127.0.0.1", port(secure_stack, "tls")), timeout=10) as sock:
        sock.sendall(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n\r\n")  # SIP in clear on the TLS port
        with contextlib.suppress(OSError):
            sock.recv(1024)  # an alert or nothing, then the end
    wait_for_count(secure_stack, "tls", "tls_failed", before + 1)
    # An old protocol version is refused by the server: TLS 1.2 is the minimum.
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # lets this client offer TLS 1.1
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with socket.create_connection(("127.0.0.1", port(secure_stack, "tls")), timeout=10) as s:
            old.wrap_socket(s, server_hostname="127.0.0.1").close()
    wait_for_count(secure_stack, "tls", "tls_failed", before + 2)
    good = SipClient(("127.0.0.1", port(secure_stack, "tls")), "tls", tls_context=client_tls)
    try:
        assert good.transact(good.request("OPTIONS", "sip:127.0.0.1", [])).status == 200
    finally:
        good.close()


# --- SIP over WebSocket ---------------------------------------------------------


class WsUser:
    """A browser-like SIP user agent over one WebSocket connection (RFC 7118 §5:
    its Via names a made-up .invalid host, its Contact transport=ws)."""

    def __init__(self, websocket: ClientConnection, transport: str) -> None:
        self.websocket = websocket
        self.transport = transport
        self.host = f"{secrets.token_hex(5)}.invalid"
        self.requests: list[SipRequest] = []

    def request(self, method: str, uri: str, headers: list[tuple[str, str]], body: bytes = b"",
                *, from_uri: str, to_uri: str | None = None, cseq: int = 1) -> bytes:  # fmt: skip
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/{self.transport.upper()} {self.host};branch={new_branch()};rport",
            "Max-Forwards: 70",
            f"From: <{from_uri}>;tag={secrets.token_hex(4)}",
            f"To: <{to_uri or uri}>",
            f"Call-ID: {secrets.token_hex(8)}",
            f"CSeq: {cseq} {method}",
            *(f"{name}: {value}" for name, value in headers),
            f"Content-Length: {len(body)}",
            "",
            "",
        ]
        return "\r\n".join(lines).encode() + body

    async def receive(self, timeout: float = 10) -> SipRequest | SipResponse:
        message = await asyncio.wait_for(self.websocket.recv(), timeout)
        data = message.encode() if isinstance(message, str) else message
        return parse_message(data, datagram=False)

    async def transact(self, data: bytes) -> SipResponse:
        await self.websocket.send(data.decode())
        while True:
            message = await self.receive()
            if isinstance(message, SipRequest):
                self.requests.append(message)
            elif message.status >= 200:
                return message

    async def next_notify(self, timeout: float = 10) -> SipRequest:
        if self.requests:
            notify = self.requests.pop(0)
        else:
            message = await self.receive(timeout)
            assert isinstance(message, SipRequest), message
            notify = message
        await self.websocket.send(serialize(make_response(notify, 200)).decode())
        return notify

    async def subscribe(self, presentity: str) -> SipResponse:
        contact = f"<sip:{secrets.token_hex(4)}@{self.host};transport={self.transport}>"
        return await self.transact(
            self.request(
                "SUBSCRIBE",
                presentity,
                [("Event", "presence"), ("Expires", "600"), ("Contact", contact)],
                from_uri=f"sip:ws-watcher-{secrets.token_hex(3)}@127.0.0.1",
            )
        )


def ws_uri(stack: Stack, transport: str) -> str:
    return f"{transport}://127.0.0.1:{port(stack, transport)}/"


async def open_ws(stack: Stack, transport: str, tls: ssl.SSLContext) -> ClientConnection:
    return await connect(
        ws_uri(stack, transport),
        subprotocols=["sip"],  # type: ignore[list-item]
        ssl=tls if transport == "wss" else None,
    )


@pytest.mark.parametrize("transport", ["ws", "wss"])
async def test_websocket_register_publish_subscribe_and_notify(
    secure_stack: Stack, client_tls: ssl.SSLContext, transport: str
) -> None:
    presentity = f"sip:{transport}-{secrets.token_hex(4)}@127.0.0.1"
    async with await open_ws(secure_stack, transport, client_tls) as websocket:
        assert websocket.subprotocol == "sip"
        user = WsUser(websocket, transport)
        # RFC 7118 §5.1: the WebSocket message frames it, Content-Length may be left out.
        bare = user.request("OPTIONS", "sip:127.0.0.1", [], from_uri=presentity)
        bare = bare.replace(b"Content-Length: 0\r\n", b"")
        assert b"Content-Length" not in bare
        assert (await user.transact(bare)).status == 200
        # A keep-alive ping (SIP.js sends one) gets its pong, as on a stream.
        await websocket.send("\r\n\r\n")
        assert await asyncio.wait_for(websocket.recv(), 10) == "\r\n"
        register = await user.transact(
            user.request(
                "REGISTER",
                "sip:127.0.0.1",
                [("Contact", f"<sip:u@{user.host};transport={transport}>"), ("Expires", "600")],
                from_uri=presentity,
                to_uri=presentity,
            )
        )
        assert register.status == 200
        # RFC 7118 §5: the server stamps received (and rport) on the .invalid Via.
        via = parse_via(register.headers.get_all("Via")[0])
        assert via.transport.upper() == transport.upper()
        assert via.params.get("received") == "127.0.0.1"
        assert via.params.get("rport", "").isdigit()
        subscribed = await user.subscribe(presentity)
        assert subscribed.status == 200
        ws_contact = f"<sip:127.0.0.1:{port(secure_stack, transport)};transport={transport}>"
        assert subscribed.headers.get("Contact") == ws_contact
        first = await user.next_notify()
        assert parse_via(first.headers.get_all("Via")[0]).transport.upper() == transport.upper()
        assert first.headers.get("Contact") == ws_contact
        published = await user.transact(
            user.request(
                "PUBLISH",
                presentity,
                [("Event", "presence"), ("Content-Type", "application/pidf+xml")],
                pidf(presentity, "open"),
                from_uri=presentity,
            )
        )
        assert published.status == 200
        deadline = time.monotonic() + 10
        while basics(await user.next_notify(max(0.1, deadline - time.monotonic()))) != ["open"]:
            pass


async def test_a_gone_websocket_watcher_fails_fast_and_costs_no_one_else(
    secure_stack: Stack, client_tls: ssl.SSLContext
) -> None:
    presentity = f"sip:gone-{secrets.token_hex(4)}@127.0.0.1"
    outcomes_before = metric_samples(
        secure_stack, "sip-edge", "presence_sip_notify_outcomes_total"
    ).get('event="presence",outcome="flow_failed"', 0.0)
    leaving_socket = await open_ws(secure_stack, "ws", client_tls)
    staying_socket = await open_ws(secure_stack, "wss", client_tls)
    async with staying_socket:
        leaving, staying = WsUser(leaving_socket, "ws"), WsUser(staying_socket, "wss")
        for user in (leaving, staying):
            assert (await user.subscribe(presentity)).status == 200
            await user.next_notify()
        await leaving_socket.close()
        publisher = SipClient(secure_stack.sip, "udp")
        try:
            headers = [("Event", "presence"), ("Content-Type", "application/pidf+xml")]
            request = publisher.request("PUBLISH", presentity, headers, pidf(presentity, "open"))
            assert publisher.transact(request).status == 200
        finally:
            publisher.close()
        deadline = time.monotonic() + 10
        while basics(await staying.next_notify(max(0.1, deadline - time.monotonic()))) != ["open"]:
            pass

    async def flow_failed() -> float:
        samples = metric_samples(secure_stack, "sip-edge", "presence_sip_notify_outcomes_total")
        return samples.get('event="presence",outcome="flow_failed"', 0.0)

    await eventually(flow_failed, lambda count: count >= outcomes_before + 1, "a 430 outcome")

    # 430 ends the gone watcher's dialog; the other one stays.
    async def live_watchers() -> int:
        connection = await asyncpg.connect(secure_stack.db_url)
        try:
            return int(
                await connection.fetchval(
                    "SELECT count(*) FROM active_watchers WHERE to_user = $1 AND to_domain = $2",
                    presentity.removeprefix("sip:").split("@")[0],
                    "127.0.0.1",
                )
            )
        finally:
            await connection.close()

    await eventually(live_watchers, lambda count: count == 1, "the gone watcher's dialog ended")


async def test_an_upgrade_without_the_sip_subprotocol_is_refused(secure_stack: Stack) -> None:
    before = refusal_count(secure_stack, "ws", "no_sip_subprotocol")
    with pytest.raises(InvalidStatus) as refused:
        await connect(ws_uri(secure_stack, "ws"))
    assert refused.value.response.status_code == 400
    assert refusal_count(secure_stack, "ws", "no_sip_subprotocol") == before + 1


async def test_an_oversized_websocket_message_closes_the_connection_with_1009(
    secure_stack: Stack, client_tls: ssl.SSLContext
) -> None:
    before = refusal_count(secure_stack, "ws", "message_too_large")
    async with await open_ws(secure_stack, "ws", client_tls) as websocket:
        # Sent as fragments, so that the limit counts the whole message.
        await websocket.send(["x" * 40000, "y" * 40000])
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(websocket.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert refusal_count(secure_stack, "ws", "message_too_large") == before + 1


def test_a_stalled_websocket_upgrade_is_closed_in_time_and_counted(secure_stack: Stack) -> None:
    before = refusal_count(secure_stack, "ws", "handshake_timeout")
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port(secure_stack, "ws")), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the end
        assert sock.recv(1024) == b""
    assert time.monotonic() - started < HANDSHAKE_TIMEOUT_MS / 1000 + 3
    assert refusal_count(secure_stack, "ws", "handshake_timeout") == before + 1


# --- HTTPS ----------------------------------------------------------------------


def test_presence_store_serves_https_with_the_same_certificate(
    secure_stack: Stack, client_tls: ssl.SSLContext
) -> None:
    https_port = int(secure_stack.env["PRESENCE_STORE_HTTPS_PORT"])
    url = f"https://127.0.0.1:{https_port}/health/ready"
    with urllib.request.urlopen(url, timeout=10, context=client_tls) as answer:
        assert answer.status == 200
    # XCAP over HTTPS: a document that does not exist, with credentials that are wrong.
    request = urllib.request.Request(
        f"https://127.0.0.1:{https_port}/xcap-root/pres-rules/users/sip:a@b/index",
        headers={"Authorization": "Basic YTpi"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10, context=client_tls)
    assert refused.value.code == 401


# --- mutual TLS: trusted proxies known by their certificates ----------------------


def client_certificate(local_ca: LocalCa, directory: Path) -> tuple[Path, Path]:
    ca_key = serialization.load_pem_private_key(local_ca.ca_key.read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(local_ca.ca_cert.read_bytes())
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key, cert = issue(ca_cert, ca_key, "proxy.example.com", ("proxy.example.com",), client=True)
    cert_path, key_path = directory / "proxy.pem", directory / "proxy-key.pem"
    write_pair(key, cert, cert_path, key_path)
    return cert_path, key_path


def test_a_proxy_with_a_client_certificate_is_trusted_and_others_are_not(
    test_database: str, local_ca: LocalCa, tmp_path: Path
) -> None:
    with running_stack(
        test_database,
        PRESENCE_AUTH="trusted-proxy",
        PRESENCE_TLS_CERT=str(local_ca.server_cert),
        PRESENCE_TLS_KEY=str(local_ca.server_key),
        PRESENCE_TLS_CLIENT_CA=str(local_ca.ca_cert),
    ) as stack:
        server = ("127.0.0.1", port(stack, "tls"))
        presentity = f"sip:carol-{secrets.token_hex(3)}@127.0.0.1"
        asserted = [
            ("Event", "presence"),
            ("Content-Type", "application/pidf+xml"),
            ("P-Asserted-Identity", f"<{presentity}>"),
        ]
        body = pidf(presentity, "open")
        with_certificate = ssl.create_default_context(cafile=str(local_ca.ca_cert))
        with_certificate.load_cert_chain(*client_certificate(local_ca, tmp_path))
        without = ssl.create_default_context(cafile=str(local_ca.ca_cert))
        proxy = SipClient(server, "tls", tls_context=with_certificate)
        stranger = SipClient(server, "tls", tls_context=without)
        plain = SipClient(stack.sip, "tcp")
        try:
            request = proxy.request("PUBLISH", presentity, asserted, body)
            assert proxy.transact(request).status == 200
            for client in (stranger, plain):
                refused = client.transact(client.request("PUBLISH", presentity, asserted, body))
                assert (refused.status, refused.reason) == (403, "Not From A Trusted Proxy")
        finally:
            proxy.close()
            stranger.close()
            plain.close()
        # A certificate from another CA fails the handshake (counted).
        other = ensure(tmp_path / "other-ca")
        forged = ssl.create_default_context(cafile=str(local_ca.ca_cert))
        forged.load_cert_chain(*client_certificate(other, tmp_path))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            impostor = SipClient(server, "tls", tls_context=forged)
            impostor.transact(impostor.request("OPTIONS", "sip:127.0.0.1", []))
        wait_for_count(stack, "tls", "tls_failed", 1)


# --- one connection cap over every transport ----------------------------------------


async def upgrade(uri: str) -> None:
    """Open a WebSocket connection and close it again."""
    websocket = await connect(uri, subprotocols=["sip"], open_timeout=5)  # type: ignore[list-item]
    await websocket.close()


def test_unfinished_handshakes_hold_slots_of_the_shared_connection_cap(
    test_database: str, local_ca: LocalCa, client_tls: ssl.SSLContext
) -> None:
    with running_stack(
        test_database,
        PRESENCE_TLS_CERT=str(local_ca.server_cert),
        PRESENCE_TLS_KEY=str(local_ca.server_key),
        PRESENCE_TCP_MAX_CONNECTIONS_PER_ADDRESS="2",
    ) as stack:

        def slots() -> float:
            return metric_samples(stack, "sip-edge", "presence_sip_connection_slots")[""]

        def refused() -> float:
            samples = metric_samples(stack, "sip-edge", "presence_sip_tcp_refused_total")
            return samples.get('direction="inbound",limit="per_key"', 0.0)

        # Two connections that never start their TLS handshake take this address's
        # two slots: a WebSocket, a TCP and a TLS connection from it are refused.
        stalled = [
            socket.create_connection(("127.0.0.1", port(stack, "tls")), timeout=10)
            for _ in range(2)
        ]
        try:
            wait_until(lambda: slots() == 2, 10, "the stalled connections to hold their slots")
            with pytest.raises((InvalidMessage, OSError)):
                asyncio.run(upgrade(ws_uri(stack, "ws")))
            with socket.create_connection(stack.sip, timeout=10) as tcp:
                with contextlib.suppress(ConnectionError):
                    assert tcp.recv(1) == b""  # closed at accept (RST)
            with pytest.raises((ssl.SSLError, OSError)):
                SipClient(("127.0.0.1", port(stack, "tls")), "tls", tls_context=client_tls)
            wait_until(lambda: refused() >= 3, 10, "three refusals")
        finally:
            for sock in stalled:
                sock.close()
        wait_until(lambda: slots() == 0, 10, "the slots given back")

        # The same address is served again.
        async def options_over_ws() -> int:
            async with await open_ws(stack, "ws", client_tls) as websocket:
                user = WsUser(websocket, "ws")
                request = user.request("OPTIONS", "sip:127.0.0.1", [], from_uri="sip:a@b")
                return (await user.transact(request)).status

        assert asyncio.run(options_over_ws()) == 200
