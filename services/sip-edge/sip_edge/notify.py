"""Building a NOTIFY from the notifier's request and choosing its next hop (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

from presence.bus.events import NotifyRequest
from presence.sip.grammar import parse_name_addr, parse_uri
from presence.sip.message import Headers, SipRequest
from presence.sip.routing import DEFAULT_PORT

# The transports a NOTIFY may leave on; "ws" and "wss" only over an open flow.
TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")


@dataclass(frozen=True)
class Hop:
    transport: str  # "udp", "tcp", "tls", "ws" or "wss"
    host: str
    port: int
    # True for the flow a SUBSCRIBE came on: an address the watcher sent from, never
    # checked against the denied networks (the others were named in its headers).
    from_flow: bool = field(default=False, compare=False)


def parse_flow(flow: str) -> Hop | None:
    """ "udp:203.0.113.5:5060" (IPv6 hosts in brackets) -> Hop."""
    transport, _, address = flow.partition(":")
    host, _, port = address.rpartition(":")
    if transport not in TRANSPORTS or not host or not port.isdigit():
        return None
    return Hop(transport, host.strip("[]"), int(port), from_flow=True)


def next_hop(notify: NotifyRequest) -> Hop:
    """Where the NOTIFY goes: the first Route (loose routing, RFC 3261 §12.2.1.1 and
    §8.1.2); without a route set, the flow the SUBSCRIBE came on (reaches phones
    behind NAT and reuses their TCP connection), else the remote target itself."""
    if notify.route_set:
        uri = parse_name_addr(notify.route_set[0]).uri
    else:
        flow = parse_flow(notify.flow) if notify.flow else None
        if flow is not None:
            return flow
        uri = parse_uri(notify.request_uri)
    transport = (uri.params.get("transport") or "udp").lower()
    if uri.scheme == "sips":
        # RFC 5630 §3.1.3: sips: means TLS on every hop; a ws/wss target stays
        # WebSocket (secure on its own, but only over its flow).
        transport = "wss" if transport in ("ws", "wss") else "tls"
    elif transport not in TRANSPORTS:
        transport = "udp"
    port = uri.port or DEFAULT_PORT[transport.upper()]
    return Hop(transport, uri.host.strip("[]"), port)


def build_notify(notify: NotifyRequest, via: str) -> SipRequest:
    headers = Headers()
    headers.add("Via", via)
    headers.add("Max-Forwards", "70")
    for route in notify.route_set:
        headers.add("Route", route)
    for name, value in notify.headers:
        headers.add(name, value)
    return SipRequest("NOTIFY", notify.request_uri, headers, notify.body.encode())
