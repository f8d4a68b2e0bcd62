"""Where NOTIFYs may go (pure): the operator's denied networks
(PRESENCE_NOTIFY_DENY_NETWORKS, parsed by Settings.denied_notify_networks)
and the choice of one address among a name's.

The edge sends NOTIFYs to addresses a watcher names: the first Record-Route of
its SUBSCRIBE (the route set) or its Contact (the remote target). Without a
check, anyone may make the edge open connections into networks it can reach and
the watcher cannot (its own management network, a cloud metadata address). An IP
literal in a denied network is refused when the SUBSCRIBE arrives (403 "Notify
Target Denied"); a name is checked once resolved, when a NOTIFY is sent. The
address a request came from (its flow) is never checked: the edge answers there
anyway, and NOTIFYs to it reach the watcher that sent the SUBSCRIBE.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from typing import Any

from presence.sip.grammar import parse_name_addr
from presence.sip.message import SipParseError, SipRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DENIED_REASON = "Notify Target Denied"


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names literally ("[2001:db8::1]" too), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def is_denied(host: str, networks: Sequence[Network]) -> bool:
    """Whether an IP literal lies in one of `networks` (an IPv4-mapped IPv6 address
    counts as its IPv4 address). A name is never denied here: resolve it first."""
    address = ip_literal(host)
    if address is None or not networks:
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    return any(
        candidate in network
        for candidate in candidates
        for network in networks
        if candidate.version == network.version
    )


def notify_targets(request: SipRequest) -> list[str]:
    """The hosts a SUBSCRIBE names for its NOTIFYs: its first Record-Route and its
    Contact. Unparsable values are left to the other checks."""
    hosts = []
    for name in ("Record-Route", "Contact"):
        values = request.headers.get_all(name)
        if not values or values[0] == "*":
            continue
        try:
            hosts.append(parse_name_addr(values[0]).uri.host)
        except SipParseError:
            continue
    return hosts


def denied_target(request: SipRequest, networks: Sequence[Network]) -> str | None:
    """The first NOTIFY target of a SUBSCRIBE that is a denied IP literal, or None."""
    if not networks:
        return None
    for host in notify_targets(request):
        if is_denied(host, networks):
            return host
    return None


def choose_address(infos: Iterable[tuple[Any, ...]]) -> tuple[str, int]:
    """One (host, port) from getaddrinfo's answer: the first IPv4 or IPv6 one, in
    the resolver's order (RFC 6724, as the system sorts them)."""
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            return str(sockaddr[0]), int(sockaddr[1])
    raise OSError("no IPv4 or IPv6 address")
