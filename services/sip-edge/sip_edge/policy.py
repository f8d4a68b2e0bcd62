"""The few values the edge's pure modules need, built once from Settings at start-up.

Each pure module takes the small frozen value it reads (the SIP timers, what
requests are accepted, how senders are authenticated), never the whole Settings:
what a module depends on shows in its signature, and a test builds the value
directly.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

from presence.bus.topics import Topics
from presence.packages import registry
from presence.packages.registry import EventPackage, enabled
from presence.settings import Settings
from presence.sip.grammar import parse_uri

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class EdgeTimers:
    """RFC 3261 §17 timer values (seconds): T1 (PRESENCE_SIP_T1_MS), T2, T4."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def timer_f(self) -> float:
        """How long a client transaction waits for its final response (64*T1)."""
        return 64 * self.t1

    @property
    def timer_j_udp(self) -> float:
        """How long a completed server transaction absorbs retransmissions over UDP
        (64*T1; 0 on reliable transports, where there are none)."""
        return 64 * self.t1

    @classmethod
    def of(cls, settings: Settings) -> EdgeTimers:
        return cls(t1=settings.sip_t1_ms / 1000)


@dataclass(frozen=True)
class RequestRules:
    """What the edge accepts before the bus (sip_edge.checks)."""

    registrar: bool = True
    # The enabled event packages, by name, in the order of the registry.
    packages: dict[str, EventPackage] = field(default_factory=dict)
    served_domains: frozenset[str] = frozenset()
    min_expires: int = 0

    @property
    def allow_events(self) -> str:
        return registry.allow_events(self.packages)

    @property
    def accepted_types(self) -> str:
        """The body types a PUBLISH may carry (Accept of OPTIONS)."""
        return registry.accepted_types(self.packages)

    @classmethod
    def of(cls, settings: Settings) -> RequestRules:
        return cls(
            registrar=bool(settings.registrar),
            packages=enabled(settings.event_package_names),
            served_domains=settings.served_domains,
            min_expires=settings.min_expires,
        )


@dataclass(frozen=True)
class AuthPolicy:
    """How senders are authenticated (sip_edge.authentication)."""

    mode: str = "digest"  # "digest", "trusted-proxy" or "none"
    secret: str = ""
    require_qop: bool = True
    algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    nonce_ttl: int = 300
    trusted_proxies: frozenset[str] = frozenset()
    trusted_proxy_udp: bool = False

    @classmethod
    def of(cls, settings: Settings) -> AuthPolicy:
        return cls(
            mode=settings.auth,
            secret=settings.auth_secret,
            require_qop=bool(settings.auth_require_qop),
            algorithms=settings.offered_algorithms,
            nonce_ttl=settings.auth_nonce_ttl,
            trusted_proxies=settings.trusted_proxy_addresses,
            trusted_proxy_udp=bool(settings.trusted_proxy_udp),
        )


@dataclass(frozen=True)
class EdgePolicy:
    """Everything the SIP core (sip_edge.core) is configured with."""

    edge_id: str
    topics: Topics = field(default_factory=Topics)
    timers: EdgeTimers = field(default_factory=EdgeTimers)
    rules: RequestRules = field(default_factory=RequestRules)
    auth: AuthPolicy = field(default_factory=AuthPolicy)
    # Admission (sip_edge.admission): PRESENCE_EDGE_QUEUE_DELAY_MS, _MIN_BACKLOG.
    queue_delay: float = 1.0
    min_backlog: int = 200
    notify_min_interval: float = 0.0
    denied_networks: tuple[Network, ...] = ()
    timeout_ends_subscription: bool = True
    # The host and port of our Vias, per transport: where responses come back.
    via_host: str = "127.0.0.1"
    via_ports: dict[str, int] = field(default_factory=dict)
    # (host, port) pairs that name this server, for the Routes it strips.
    own_addresses: frozenset[tuple[str, int]] = frozenset()

    @classmethod
    def of(cls, settings: Settings) -> EdgePolicy:
        via_host, via_port = advertised_address(settings)
        via_ports = {
            "udp": via_port,
            "tcp": via_port,
            "tls": settings.sip_tls_port or via_port,
            "ws": settings.sip_ws_port or via_port,
            "wss": settings.sip_wss_port or via_port,
        }
        own_addresses = frozenset(
            (host, port)
            for host in (via_host.strip("[]").lower(), settings.sip_host.lower())
            for port in {settings.sip_port, *via_ports.values()}
        )
        return cls(
            edge_id=settings.edge_name,
            topics=Topics.of(settings),
            timers=EdgeTimers.of(settings),
            rules=RequestRules.of(settings),
            auth=AuthPolicy.of(settings),
            queue_delay=settings.edge_queue_delay_ms / 1000,
            min_backlog=settings.edge_min_backlog,
            notify_min_interval=settings.notify_min_interval,
            denied_networks=settings.denied_notify_networks,
            timeout_ends_subscription=bool(settings.notify_timeout_ends_subscription),
            via_host=via_host,
            via_ports=via_ports,
            own_addresses=own_addresses,
        )


def advertised_address(settings: Settings) -> tuple[str, int]:
    """The host:port the edge puts in its Via: where responses must come back."""
    if settings.server_address:
        uri = parse_uri(settings.server_address)
        return uri.host, uri.port or 5060
    host = settings.sip_host
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname()
    return (f"[{host}]" if ":" in host else host), settings.sip_port
