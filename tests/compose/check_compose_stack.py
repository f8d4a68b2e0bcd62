"""Checks of a running Docker Compose stack, driven from outside over SIP.

    PRESENCE_TEST_SIP=sip-edge:5060 \
    PRESENCE_TEST_SIP_TLS=sip-edge:5061 PRESENCE_TEST_SIP_WSS=sip-edge:7443 \
    PRESENCE_TEST_CA=/run/presence/tls/ca.pem \
    PRESENCE_TEST_DB_URL=postgresql://presence:presence@postgres:5432/presence \
    python -m pytest tests/compose/check_compose_stack.py

SIP over TLS and over secure WebSocket are checked against the certificate the
stack made at its first start (its init service), verified with that CA and the
host names the variables give.

Run by `docker compose --profile test run --rm tests` (and `make compose-test`).
The file name does not match `test_*.py` on purpose: `make test` collects
`tests/` and must not pick these up, since they need a stack it does not start.
Nothing here is skipped: without the variables, or without a stack answering
them, every check fails with a message saying so.

The stack must run with PRESENCE_FORCE_ACTIVE=1 (no privacy rules yet: otherwise a
subscription stays pending and its NOTIFYs carry no document).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import ssl
from dataclasses import dataclass

import asyncpg
import pytest
from websockets.asyncio.client import connect

from presence.sip.grammar import parse_name_addr
from presence.sip.message import SipRequest, SipResponse
from presence.sip.parser import parse_message, serialize
from presence.sip.responses import make_response
from tests.integration.sip_client import SipClient


def _required(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        pytest.fail(f"{name} is not set: point it at the composed stack (see the module docstring)")
    return value


@pytest.fixture(scope="module")
def sip_server() -> tuple[str, int]:
    host, _, port = _required("PRESENCE_TEST_SIP").rpartition(":")
    try:
        address = socket.gethostbyname(host)
    except OSError as error:
        pytest.fail(f"PRESENCE_TEST_SIP: cannot resolve {host!r} ({error}); is the stack up?")
    return address, int(port)


@pytest.fixture(scope="module")
def db_url() -> str:
    return _required("PRESENCE_TEST_DB_URL")


@pytest.fixture(scope="module")
def stack_tls() -> ssl.SSLContext:
    """Trusts the CA the stack made at its first start (the presence-secrets volume)."""
    ca = _required("PRESENCE_TEST_CA")
    try:
        return ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as error:
        pytest.fail(f"PRESENCE_TEST_CA: cannot load {ca} ({error}); did the init service run?")


def host_and_port(variable: str) -> tuple[str, int]:
    host, _, port = _required(variable).rpartition(":")
    return host, int(port)


@dataclass
class StackClient(SipClient):
    """SipClient on a non-loopback address: the edge runs in another container.

    The socket is bound to every address and the Via names the address this
    container uses towards the edge, so replies and NOTIFYs find their way back.
    Responses to the server's NOTIFYs go to the edge we talk to, whatever host
    its Via advertises (PRESENCE_SERVER_ADDRESS may name one for other clients).
    Over TLS the server's certificate is verified for `server_name`.
    """

    server_name: str = ""

    def __post_init__(self) -> None:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect(self.server)
        self.local_ip = probe.getsockname()[0]
        probe.close()
        if self.transport == "udp":
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._sock.bind(("0.0.0.0", 0))
        else:
            try:
                self._sock = socket.create_connection(self.server, timeout=self.timeout)
            except OSError as error:
                pytest.fail(f"no SIP over {self.transport.upper()} at {self.server}: {error}")
            if self.transport == "tls":
                assert self.tls_context is not None
                self._sock = self.tls_context.wrap_socket(
                    self._sock, server_hostname=self.server_name
                )
        self.local_port = self._sock.getsockname()[1]

    def request(
        self,
        method: str,
        uri: str,
        headers: list[tuple[str, str]],
        body: bytes = b"",
        **kwargs: object,
    ) -> bytes:
        data = super().request(method, uri, headers, body, **kwargs)  # type: ignore[arg-type]
        here = f"127.0.0.1:{self.local_port}".encode()
        return data.replace(here, f"{self.local_ip}:{self.local_port}".encode(), 1)

    def answer(self, request: SipRequest, status: int = 200) -> None:
        data = serialize(make_response(request, status))
        if self.transport == "udp":
            self._sock.sendto(data, self.server)
        else:
            self._sock.sendall(data)


def pidf(entity: str, basic: str) -> bytes:
    return (
        f'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{entity}">'
        f'<tuple id="t1"><status><basic>{basic}</basic></status></tuple></presence>'
    ).encode()


def publish(client: StackClient, aor: str, basic: str, etag: str | None = None):
    headers = [("Event", "presence"), ("Expires", "600"), ("Content-Type", "application/pidf+xml")]
    if etag:
        headers.append(("SIP-If-Match", etag))
    request = client.request("PUBLISH", aor, headers, pidf(aor, basic), from_uri=aor)
    return client.transact(request)


def fetch_publications(db_url: str, user: str, domain: str) -> list[asyncpg.Record]:
    async def query() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(db_url, timeout=10)
        try:
            return await connection.fetch(
                "SELECT etag, body FROM presentity WHERE username = $1 AND domain = $2",
                user,
                domain,
            )
        finally:
            await connection.close()

    try:
        return asyncio.run(query())
    except (OSError, asyncpg.PostgresError) as error:
        pytest.fail(f"PRESENCE_TEST_DB_URL: cannot read the presentity table ({error})")


def fresh_aor() -> tuple[str, str, str]:
    user, domain = f"compose-{secrets.token_hex(4)}", "example.com"
    return f"sip:{user}@{domain}", user, domain


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_options_answered(sip_server, transport):
    client = StackClient(sip_server, transport)
    try:
        try:
            response = client.transact(client.request("OPTIONS", "sip:ping@example.com", []))
        except TimeoutError:
            pytest.fail(f"no answer to OPTIONS over {transport} from {sip_server}: is sip-edge up?")
        assert response.status == 200, response.reason
    finally:
        client.close()


def test_publish_is_stored(sip_server, db_url):
    aor, user, domain = fresh_aor()
    client = StackClient(sip_server, "udp")
    try:
        response = publish(client, aor, "open")
        assert response.status == 200, f"PUBLISH got {response.status} {response.reason}"
        etag = response.headers.get("SIP-ETag")
        assert etag
    finally:
        client.close()
    rows = fetch_publications(db_url, user, domain)
    assert [row["etag"] for row in rows] == [etag]
    assert "<basic>open</basic>" in rows[0]["body"]


def cseq_number(request: SipRequest) -> int:
    return int((request.headers.get("CSeq") or "0").split()[0])


def test_subscribe_gets_notify_with_published_state(sip_server):
    aor, _, _ = fresh_aor()
    publisher = StackClient(sip_server, "udp")
    watcher = StackClient(sip_server, "udp", timeout=20)
    try:
        published = publish(publisher, aor, "open")
        assert published.status == 200, f"PUBLISH got {published.status} {published.reason}"
        subscribe = watcher.request(
            "SUBSCRIBE",
            aor,
            [
                ("Event", "presence"),
                ("Accept", "application/pidf+xml"),
                ("Expires", "600"),
                ("Contact", f"<sip:watcher@{watcher.local_ip}:{watcher.local_port}>"),
            ],
            from_uri="sip:watcher@example.com",
        )
        response = watcher.transact(subscribe)
        assert response.status == 200, f"SUBSCRIBE got {response.status} {response.reason}"
        to_tag = parse_name_addr(response.headers.get("To") or "").tag

        notify = watcher.next_request()
        watcher.answer(notify)
        assert notify.method == "NOTIFY"
        assert parse_name_addr(notify.headers.get("From") or "").tag == to_tag
        state = notify.headers.get("Subscription-State") or ""
        assert state.startswith("active"), (
            f"subscription is {state!r}: start the stack with PRESENCE_FORCE_ACTIVE=1"
        )
        assert b"<basic>open</basic>" in notify.body

        # A change reaches the watcher too (store -> notifier -> edge). Around a notifier
        # rebalance (right after --scale) the old state may come once more in a new
        # NOTIFY, which is allowed (a duplicate, never a stale one after a newer one);
        # the new state must follow, with a higher CSeq. next_request fails after 20 s.
        changed = publish(publisher, aor, "closed", published.headers.get("SIP-ETag"))
        assert changed.status == 200, f"modifying PUBLISH got {changed.status} {changed.reason}"
        cseq = cseq_number(notify)
        while b"<basic>closed</basic>" not in notify.body:
            notify = watcher.next_request()
            watcher.answer(notify)
            assert notify.method == "NOTIFY"
            assert cseq_number(notify) >= cseq, "NOTIFY CSeqs of one dialog must not go back"
            cseq = cseq_number(notify)
    finally:
        publisher.close()
        watcher.close()


def subscribe_request(client: StackClient, aor: str) -> bytes:
    contact = f"<sip:watcher@{client.local_ip}:{client.local_port};transport={client.transport}>"
    return client.request(
        "SUBSCRIBE",
        aor,
        [("Event", "presence"), ("Expires", "600"), ("Contact", contact)],
        from_uri="sip:watcher@example.com",
    )


def test_tls_publish_subscribe_and_notify_over_one_connection(stack_tls: ssl.SSLContext) -> None:
    """SIP over TLS on the published port's container side: the server's certificate
    names sip-edge and verifies with the stack's CA; the NOTIFY comes back over the
    subscriber's TLS connection."""
    name, port = host_and_port("PRESENCE_TEST_SIP_TLS")
    aor, _, _ = fresh_aor()
    try:
        client = StackClient(
            (socket.gethostbyname(name), port), "tls", 20, tls_context=stack_tls, server_name=name
        )
    except ssl.SSLCertVerificationError as error:
        pytest.fail(
            f"the certificate of {name}:{port} does not verify with PRESENCE_TEST_CA: {error}"
        )
    try:
        published = publish(client, aor, "open")
        assert published.status == 200, f"PUBLISH over TLS got {published.status}"
        response = client.transact(subscribe_request(client, aor))
        assert response.status == 200, f"SUBSCRIBE over TLS got {response.status}"
        notify = client.next_request()
        client.answer(notify)
        assert notify.method == "NOTIFY" and b"<basic>open</basic>" in notify.body
        assert (notify.headers.get("Via") or "").startswith("SIP/2.0/TLS")
    finally:
        client.close()


def test_wss_subscribe_gets_notify_over_the_websocket(
    sip_server: tuple[str, int], stack_tls: ssl.SSLContext
) -> None:
    """SIP over secure WebSocket (RFC 7118, subprotocol `sip`), as a browser speaks it:
    a SUBSCRIBE to a presentity published over UDP, its NOTIFY over the WebSocket."""
    name, port = host_and_port("PRESENCE_TEST_SIP_WSS")
    aor, _, _ = fresh_aor()
    publisher = StackClient(sip_server, "udp")
    try:
        assert publish(publisher, aor, "open").status == 200
    finally:
        publisher.close()

    async def watch() -> tuple[SipResponse, SipRequest]:
        host = f"{secrets.token_hex(5)}.invalid"  # RFC 7118 §5: a browser's made-up Via host
        lines = [
            f"SUBSCRIBE {aor} SIP/2.0",
            f"Via: SIP/2.0/WSS {host};branch=z9hG4bK{secrets.token_hex(8)};rport",
            "Max-Forwards: 70",
            f"From: <sip:wss-watcher@example.com>;tag={secrets.token_hex(4)}",
            f"To: <{aor}>",
            f"Call-ID: {secrets.token_hex(8)}",
            "CSeq: 1 SUBSCRIBE",
            "Event: presence",
            "Expires: 600",
            f"Contact: <sip:watcher@{host};transport=wss>",
            "Content-Length: 0",
            "",
            "",
        ]
        async with connect(
            f"wss://{name}:{port}/",
            subprotocols=["sip"],  # type: ignore[list-item]
            ssl=stack_tls,
            open_timeout=10,
        ) as websocket:
            assert websocket.subprotocol == "sip"
            await websocket.send("\r\n".join(lines))
            response: SipResponse | None = None
            notify: SipRequest | None = None
            while response is None or notify is None:  # the NOTIFY may overtake the 200
                message = await asyncio.wait_for(websocket.recv(), 20)
                data = message.encode() if isinstance(message, str) else message
                parsed = parse_message(data, datagram=False)
                if isinstance(parsed, SipResponse):
                    if parsed.status >= 200:
                        response = parsed
                else:
                    await websocket.send(serialize(make_response(parsed, 200)).decode())
                    notify = notify or parsed
            return response, notify

    try:
        response, notify = asyncio.run(watch())
    except (OSError, ssl.SSLError) as error:
        pytest.fail(f"no SIP over WSS at {name}:{port}: {error}")
    assert response.status == 200, f"SUBSCRIBE over WSS got {response.status}"
    assert notify.method == "NOTIFY" and b"<basic>open</basic>" in notify.body
