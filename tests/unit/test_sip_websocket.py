"""SIP over WebSocket, sans I/O: the server side against websockets' own client
protocol (presence.sip.websocket)."""

from __future__ import annotations

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from presence.sip.framing import KEEPALIVE
from presence.sip.websocket import Closed, Opened, Refused, SipWebSocket

OPTIONS = (
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK1\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def client(subprotocols: list[str] | None = None) -> ClientProtocol:
    return ClientProtocol(
        parse_uri("ws://127.0.0.1:5066/"),
        subprotocols=[Subprotocol(s) for s in subprotocols] if subprotocols is not None else None,
    )


def carry(source: ClientProtocol, server: SipWebSocket) -> list[object]:
    return server.receive(b"".join(source.data_to_send()))


def back(server: SipWebSocket, peer: ClientProtocol) -> bool:
    data, eof = server.data_to_send()
    peer.receive_data(data)
    return eof


def opened(peer: ClientProtocol, server: SipWebSocket) -> None:
    peer.send_request(peer.connect())
    assert carry(peer, server) == [Opened()]
    back(server, peer)
    response = peer.events_received()[0]
    assert isinstance(response, Response) and response.status_code == 101
    assert response.headers["Sec-WebSocket-Protocol"] == "sip"


def test_upgrade_with_sip_subprotocol_then_one_message_per_frame() -> None:
    server, peer = SipWebSocket(), client(["sip"])
    opened(peer, server)
    peer.send_text(OPTIONS)
    peer.send_binary(OPTIONS)
    assert carry(peer, server) == [OPTIONS, OPTIONS]


def test_upgrade_without_subprotocol_is_refused_with_400() -> None:
    server, peer = SipWebSocket(), client()
    peer.send_request(peer.connect())
    (refused,) = carry(peer, server)
    assert isinstance(refused, Refused) and refused.reason == "subprotocol"
    data, eof = server.data_to_send()
    assert data.startswith(b"HTTP/1.1 400 ") and eof


def test_upgrade_with_another_subprotocol_is_refused() -> None:
    server, peer = SipWebSocket(), client(["chat"])
    peer.send_request(peer.connect())
    (refused,) = carry(peer, server)
    assert isinstance(refused, Refused) and refused.reason == "subprotocol"


def test_not_http_is_refused() -> None:
    server = SipWebSocket()
    (refused,) = server.receive(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
    assert isinstance(refused, Refused) and refused.reason == "bad_upgrade"
    assert server.data_to_send()[1]


def test_fragments_make_one_message() -> None:
    server, peer = SipWebSocket(), client(["sip"])
    opened(peer, server)
    peer.send_text(OPTIONS[:10], fin=False)
    peer.send_continuation(OPTIONS[10:30], fin=False)
    assert carry(peer, server) == []
    peer.send_continuation(OPTIONS[30:], fin=True)
    assert carry(peer, server) == [OPTIONS]


def test_oversized_message_closes_with_1009_even_when_fragmented() -> None:
    server, peer = SipWebSocket(max_message_bytes=1000), client(["sip"])
    opened(peer, server)
    peer.send_text(b"x" * 600, fin=False)
    peer.send_continuation(b"x" * 600, fin=True)
    (closed,) = carry(peer, server)
    assert isinstance(closed, Closed) and closed.reason == "too_large"
    assert back(server, peer)
    assert peer.close_rcvd is not None and peer.close_rcvd.code == 1009


def test_bad_utf8_text_is_a_protocol_error() -> None:
    server, peer = SipWebSocket(), client(["sip"])
    opened(peer, server)
    server_bytes = Frame(Opcode.TEXT, b"\xff\xfe").serialize(mask=True, extensions=[])
    (closed,) = server.receive(server_bytes)
    assert isinstance(closed, Closed) and closed.reason == "protocol_error"


def test_send_is_one_text_frame_and_close_by_peer_is_reported() -> None:
    server, peer = SipWebSocket(), client(["sip"])
    opened(peer, server)
    server.send(OPTIONS)
    back(server, peer)
    (frame,) = peer.events_received()
    assert frame.opcode is Opcode.TEXT and frame.data == OPTIONS
    peer.send_close(1000)
    assert carry(peer, server) == [Closed("closed")]
    assert server.data_to_send()[1]  # the close echoed, then the end


def test_eof_without_close_is_reported_once() -> None:
    server, peer = SipWebSocket(), client(["sip"])
    opened(peer, server)
    assert server.receive_eof() == [Closed("closed")]
    assert server.receive_eof() == []


def test_close_sends_going_away() -> None:
    server, peer = SipWebSocket(), client(["sip"])
    opened(peer, server)
    server.close()
    back(server, peer)
    assert peer.close_rcvd is not None and peer.close_rcvd.code == 1001


def test_a_crlf_message_is_a_keepalive_and_a_lone_crlf_is_dropped() -> None:
    server, peer = SipWebSocket(), client(["sip"])
    opened(peer, server)
    peer.send_text(b"\r\n\r\n")
    peer.send_text(b"\r\n")
    peer.send_text(OPTIONS)
    assert carry(peer, server) == [KEEPALIVE, OPTIONS]
