"""Configuration of every service, read from PRESENCE_* environment variables.

The seed module's parameters keep their names, meanings and defaults
(PRESENCE_CLEAN_PERIOD=100, PRESENCE_TO_TAG_PREF=10, ...). An optional env file
(PRESENCE_ENV_FILE, KEY=VALUE lines) supplies values the environment does not.
Validation happens once, at start: a bad value raises SettingsError whose
message names the variable and the problem in one line.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from presence.packages.registry import DocumentPolicy, ExpiryPolicy, check_package_names
from presence.rules.authorization import AuthorizationPolicy
from presence.runtime.first_start import with_stored_values
from presence.runtime.logs import parse_levels
from presence.sip.digest import parse_algorithm_list
from presence.sip.grammar import parse_uri

PREFIX = "PRESENCE_"
# The highest PRESENCE_MAX_DOCUMENT_BYTES and PRESENCE_MAX_WINFO_BYTES accepted.
MAX_BODY_BYTES = 256 * 1024
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9_.:\[\]-]+$")
# Read by the scripts that start the local infrastructure (scripts/*.sh), not by
# the services; listed so that a misspelt PRESENCE_* variable is still caught.
SCRIPT_VARIABLES = frozenset(
    {
        "PRESENCE_ENV_FILE",
        "PRESENCE_VAR",
        "PRESENCE_PG_PORT",
        "PRESENCE_REDIS_PORT",
        "PRESENCE_KAFKA_PORT",
        "PRESENCE_KAFKA_CONTROLLER_PORT",
        "PRESENCE_KAFKA_DIST",
        # docker-compose.yml: the address the observability profile publishes
        # Prometheus and Grafana on (127.0.0.1 unless told otherwise).
        "PRESENCE_OBSERVABILITY_BIND",
        # docker-compose.yml: more names for the server certificate its init service
        # makes at the first start (comma-separated).
        "PRESENCE_TLS_HOSTS",
        # tests/integration/conftest.py: the database the integration tests recreate
        # (presence_test), so that two test runs on one PostgreSQL do not collide.
        "PRESENCE_TEST_DATABASE",
    }
)


class SettingsError(ValueError):
    """One line that names the variable and what is wrong with its value."""


def _integer(minimum: int, maximum: int = 2**31 - 1) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"must be an integer, got {text!r}") from None
        if not minimum <= value <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}, got {value}")
        return value

    return parse


def _flag(text: str) -> int:
    # The seed uses 0/1 integers for flags; accept the usual spellings too.
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return 1
    if lowered in ("0", "false", "no", "off"):
        return 0
    raise ValueError(f"must be 0 or 1, got {text!r}")


def _table_name(text: str) -> str:
    # Table names are spliced into SQL, so only plain identifiers are allowed.
    if not _IDENTIFIER.match(text):
        raise ValueError(f"must be a lower-case SQL identifier ([a-z_][a-z0-9_]*), got {text!r}")
    return text


def _host(text: str) -> str:
    if not text or not _HOSTNAME.match(text):
        raise ValueError(f"must be a host name or IP address, got {text!r}")
    return text


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not any(text.startswith(f"{scheme}://") for scheme in schemes):
            raise ValueError(
                f"must start with {' or '.join(s + '://' for s in schemes)}, got {text!r}"
            )
        return text

    return parse


def _bootstrap(text: str) -> str:
    for server in text.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"must be host:port[,host:port...], got {text!r}")
    return text


def _sip_uri_or_empty(text: str) -> str:
    if text and not text.startswith(("sip:", "sips:")):
        raise ValueError(f"must be a SIP URI (sip:host:port), got {text!r}")
    return text


def _topic_part(text: str) -> str:
    if text and not re.match(r"^[A-Za-z0-9._-]{1,100}$", text):
        raise ValueError(f"may hold only letters, digits, '.', '_' and '-', got {text!r}")
    return text


def _domain_list(text: str) -> str:
    for domain in filter(None, (d.strip() for d in text.split(","))):
        if not _HOSTNAME.match(domain):
            raise ValueError(f"must be a comma-separated list of domains, got {domain!r}")
    return text


def _event_packages(text: str) -> str:
    check_package_names([n.strip() for n in text.split(",") if n.strip()])
    return text


def _choice(*values: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in values:
            raise ValueError(f"must be one of {', '.join(values)}, got {text!r}")
        return text

    return parse


def _log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"must be DEBUG, INFO, WARNING or ERROR, got {text!r}")
    return level


def _log_levels(text: str) -> str:
    parse_levels(text)
    return text


def _text(text: str) -> str:
    return text


# A secret shorter than this is refused at start: the nonce key, the XCAP
# passwords' key and the admin token must not be guessable.
MIN_SECRET_LENGTH = 16


def _algorithm_list(text: str) -> str:
    parse_algorithm_list(text)
    return text


def _secret(text: str) -> str:
    """Empty (the feature that needs it stays off) or at least MIN_SECRET_LENGTH
    characters; the message never repeats the value."""
    if text and len(text) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"must be at least {MIN_SECRET_LENGTH} characters, got {len(text)} "
            "(make one with `openssl rand -hex 16`)"
        )
    return text


def _address_list(text: str) -> str:
    for address in filter(None, (a.strip() for a in text.split(","))):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"must be comma-separated IP addresses, got {address!r}") from None
    return text


def _network_list(text: str) -> str:
    for network in filter(None, (n.strip() for n in text.split(","))):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValueError(f"must be comma-separated CIDR networks, got {network!r}") from None
    return text


@dataclass(frozen=True)
class Settings:
    # --- the seed module's parameters (names, meanings and defaults kept) ---
    db_url: str = "postgresql://presence:presence@127.0.0.1:15432/presence"
    presentity_table: str = "presentity"
    active_watchers_table: str = "active_watchers"
    watchers_table: str = "watchers"
    # The seed's SQL creates `xcap_xml`; its prose says "scap_xml", a typo.
    xcap_table: str = "xcap_xml"
    clean_period: int = 100
    to_tag_pref: str = "10"
    lock_set_size: int = 8
    expires_offset: int = 0
    force_active: int = 0
    # What a watcher sees when the matching rule grants no transformation: RFC 5025
    # ("rfc5025": nothing but what is granted, so no tuples) or the whole document
    # ("kamailio", as Kamailio's presence_xml does).
    transformation_default: str = "rfc5025"
    max_expires: int = 3600
    # Empty means "sip:<sip_host>:<sip_port>", the address the edge listens on.
    server_address: str = ""

    # --- SIP transport and protocol ---
    sip_host: str = "127.0.0.1"
    sip_port: int = 5060
    min_expires: int = 0
    default_expires: int = 3600
    # Served domains (comma-separated); empty serves every domain. A request-URI
    # in another domain gets 404.
    domains: str = ""
    # Seconds an entity tag stays valid after the refresh or modify that replaced
    # it (pipelining phones); 0 disables.
    etag_grace: int = 5
    # 1: an initial PUBLISH from a device that already has a publication (same tuple
    # id or tuple contact) replaces it instead of adding a duplicate; 0: RFC 3903 as is.
    replace_same_device: int = 1
    # 1: the edge's minimal registrar answers REGISTER (some phones publish only
    # after registering); 0: REGISTER gets 405.
    registrar: int = 1
    # RFC 3261 timer T1 in milliseconds (NOTIFY retransmission, Timer F = 64*T1).
    sip_t1_ms: int = 500
    tcp_idle_timeout: int = 300
    # Minimum seconds between two NOTIFYs of one subscription (RFC 3856 §6.10 says a
    # presentity SHOULD NOT cause more than one per 5 s); 0 sends every change at once.
    notify_min_interval: int = 0
    # 1: a NOTIFY that is never answered (Timer F, 408) ends its subscription, as in
    # Kamailio; 0 keeps it (phones that drop NOTIFYs would otherwise lose their
    # busy lamps until they re-subscribe).
    notify_timeout_ends_subscription: int = 1

    # --- event packages (presence.packages.registry) ---
    # The packages served, comma-separated; any other Event gets 489 with Allow-Events.
    event_packages: str = "presence,presence.winfo,dialog,message-summary"
    # 1: a message-summary subscription with nothing published gets
    # "Messages-Waiting: no" (some phones reject an empty body); 0: no body.
    message_summary_empty_body: int = 1

    # --- caps on what clients create (each refusal: a SIP code, a metric) ---
    # Live publications of one presentity and event package; an initial PUBLISH
    # beyond it gets 403 "Too Many Publications" (the other devices keep theirs).
    max_publications: int = 32
    # Live subscriptions of one watcher (all presentities) and of one presentity and
    # event package; a new SUBSCRIBE beyond either gets 403 (refreshes always pass).
    max_subscriptions_per_watcher: int = 1000
    max_subscriptions_per_presentity: int = 1000
    # Registrar bindings of one address-of-record (Kamailio's max_contacts): 503
    # "Too Many Registered Contacts" beyond it.
    max_contacts: int = 16
    # The largest aggregated presence document, in bytes: a PUBLISH that would make
    # the merged document larger gets 413; the notifier parses documents up to it.
    # 60 KiB: a NOTIFY with it and 4 KiB of headers still fits one UDP datagram.
    max_document_bytes: int = 61440
    # The largest watcherinfo document (RFC 3858) of a NOTIFY: a longer watcher list
    # is cut (pending watchers first, newest first), logged and counted.
    max_winfo_bytes: int = 61440
    # How often presence-store and the notifier handle a record that fails for a
    # reason of its own before they dead-letter it (presence.bus.isolation); a
    # dependency's outage is retried without limit.
    record_attempts: int = 3
    # --- Admission (sip_edge.admission) ---
    # The edge answers a new request 503 at once (Retry-After) when its backlog of
    # requests waiting for the store holds more than the store answered in the
    # last edge_queue_delay_ms (by its reply rate over the last second), and at
    # least edge_min_backlog: what would wait longer is refused before any work.
    edge_queue_delay_ms: int = 1000
    edge_min_backlog: int = 200
    # --- NOTIFY delivery and TCP connections (resource bounds) ---
    # Milliseconds a NOTIFY may wait for its next hop's TCP connect (it then ends as
    # 408, like an unanswered one) and for a name lookup (408 too).
    notify_connect_timeout_ms: int = 5000
    notify_dns_timeout_ms: int = 2000
    # Threads that resolve NOTIFY next hops (identical lookups are made once).
    notify_dns_workers: int = 8
    # NOTIFY connects under way at once, in all and to one IP address; one beyond
    # fails at once (503 "Too Many Connects").
    notify_max_connecting: int = 64
    notify_max_connecting_per_host: int = 4
    # Open TCP connections (accepted and opened), in all and to or from one IP
    # address; one beyond is closed at accept (a NOTIFY's connect fails, 503).
    tcp_max_connections: int = 4096
    tcp_max_connections_per_address: int = 100
    # Bytes a TCP connection may hold unsent (its kernel send buffer is set to the
    # same size); a peer that does not read beyond it has its connection closed.
    tcp_max_write_buffer: int = 262144
    # Seconds a TCP connection stays open on keep-alives alone (RFC 5626 CRLFCRLF):
    # without a SIP message from the peer for that long it is closed.
    tcp_keepalive_only_timeout: int = 7200
    # Comma-separated CIDR networks NOTIFYs must never be sent to (empty: none):
    # a SUBSCRIBE naming an address in them gets 403 "Notify Target Denied".
    notify_deny_networks: str = ""

    # --- secure and web transports (TLS, WebSocket: RFC 7118) ---
    # SIP over TLS; over WebSocket (ws://) and secure WebSocket (wss://). 0: no such
    # listener. TLS and WSS listen only when a certificate is configured.
    sip_tls_port: int = 5061
    sip_ws_port: int = 5066
    sip_wss_port: int = 7443
    # PEM files: the server's certificate chain and its key (SIP over TLS and WSS,
    # and presence-store's HTTPS); the CA whose client certificates identify trusted
    # proxies (mutual TLS), which also verifies the edge's outgoing TLS connections.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # Milliseconds an accepted connection may take for its TLS handshake and its
    # WebSocket upgrade; then it is closed (counted).
    sip_handshake_timeout_ms: int = 5000
    # presence-store's HTTPS port (XCAP and admin API) when a certificate is set; 0: none.
    store_https_port: int = 8443
    # The browser client's bundle, served by presence-store under /client/
    # (scripts/webclient.sh builds it); empty: webclient/dist of this repository.
    webclient_dir: str = ""
    # A directory of values made once at a deployment's first start (presence.runtime.first_start;
    # docker-compose's init service): PRESENCE_AUTH_SECRET, PRESENCE_XCAP_SECRET,
    # PRESENCE_ADMIN_TOKEN, PRESENCE_TLS_CERT and PRESENCE_TLS_KEY left unset or empty
    # are taken from its files. Empty: none.
    secrets_dir: str = ""

    # --- privacy (RFC 5025) and XCAP ---
    # How a subscription ends when a rules change withdraws its permission: reason
    # "deactivated" (the watcher may re-subscribe at once) or "probation" (it should
    # wait probation_retry_after seconds; RFC 6665 §4.2.2).
    withdrawn_reason: str = "deactivated"
    probation_retry_after: int = 3600
    # Days the watchers table keeps a pending decision (a watcher the user has not
    # answered yet), counted from when it was first recorded; 0 keeps it forever.
    pending_watcher_days: int = 30
    # XCAP clients authenticate with HTTP Basic or Bearer credentials derived from
    # this secret (see presence.xcap.credentials); "none" lets anyone change anyone's
    # rules (development only). With "secret" and no secret set, XCAP answers 503.
    xcap_auth: str = "secret"
    xcap_secret: str = ""
    # XCAP PUTs and DELETEs per presentity per minute (each one re-judges every
    # watcher); beyond it 429 with Retry-After. 0: no limit.
    xcap_writes_per_minute: int = 60

    # --- SIP authentication (RFC 3261 §22) ---
    # "digest": PUBLISH, SUBSCRIBE and REGISTER are challenged (401) and checked
    # against the credentials table; "trusted-proxy": accepted only from
    # trusted_proxies, the identity taken from P-Asserted-Identity (RFC 3325);
    # "none": anyone may publish for anyone (development only; logged at start).
    auth: str = "digest"
    # Signs the stateless nonces; the same on every edge and store replica.
    auth_secret: str = ""
    # Seconds a nonce stays fresh; an older one gets 401 with stale=true.
    auth_nonce_ttl: int = 300
    trusted_proxies: str = ""  # comma-separated IP addresses
    # Identities (user@domain) that may PUBLISH for others: gateways, a PBX's busy lamps.
    publish_for_others: str = ""
    # After this many failed authentications of one account (user@realm, from any
    # address) within auth_block_seconds, that account's requests are refused (403)
    # until the window ends; other accounts are not affected.
    auth_max_failures: int = 10
    # After this many failed authentications from one source address (any account)
    # within auth_block_seconds, that address is refused (403). Much higher than the
    # per-account limit: many users may share one NAT address, and over UDP an
    # attacker can spoof failures from it.
    auth_max_source_failures: int = 100
    auth_block_seconds: int = 300
    # 1: digest credentials must use qop=auth (nonce-count replay protection); those
    # without qop (RFC 2069, some old phones) get a fresh challenge. 0 accepts them.
    auth_require_qop: int = 1
    # The digest algorithms offered in a 401, in this order, and the only ones
    # accepted (RFC 8760: the strongest first). Browser libraries that read only one
    # challenge and know only MD5 (JsSIP takes the first, SIP.js the last) need MD5
    # where they look: "MD5,SHA-256" for JsSIP, or "MD5" alone.
    auth_algorithms: str = "SHA-256,MD5"
    # 1: trusted-proxy mode accepts P-Asserted-Identity over UDP too; the operator
    # must guarantee that no one else can send from a trusted address (ingress
    # filtering). 0: only over TCP; over UDP the answer is 403.
    trusted_proxy_udp: int = 0

    # --- bus, cache and HTTP ---
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_partitions: int = 12
    kafka_namespace: str = ""
    # How long the broker parks a consumer's fetch while none of its partitions has a
    # record (presence.runtime.kafka): longer means fewer empty round trips when idle, but a
    # partition left out of the parked fetch waits up to this long for its next record.
    kafka_fetch_wait_ms: int = 100
    # Offset commits, made beside the consumer loops (presence-store's and the
    # notifier's after the database commit, sip-edge's inbox past finished NOTIFYs):
    # at most one per this many ms. A crash redelivers what was handled since the
    # last one (the handlers are idempotent; the edge ignores replies it no longer
    # waits for).
    kafka_commit_interval_ms: int = 100
    redis_url: str = "redis://127.0.0.1:16379/0"
    http_host: str = "127.0.0.1"
    edge_http_port: int = 18081
    # Also serves XCAP (RFC 4825) at /xcap-root, on the port XCAP clients expect.
    store_http_port: int = 8080
    notifier_http_port: int = 18083
    # Identifies one sip-edge replica: replies and NOTIFYs for its transactions
    # and TCP connections come back on its own inbox topic.
    edge_id: str = ""
    log_level: str = "INFO"
    # The asyncio event loop of the services: "uvloop" (libuv, less CPU per socket
    # event) or "asyncio" (the standard library's, to rule uvloop out).
    event_loop: str = "uvloop"
    # "json" lines, "text", or "auto": text when stderr is a terminal, else JSON.
    log_format: str = "auto"
    # Per-service levels ("notifier=DEBUG"), so one env file can serve every service;
    # other names are Python loggers ("aiokafka=INFO").
    log_levels: str = ""
    # Bearer token of presence-store's admin API (/admin, presencectl); empty: the
    # admin API answers 503.
    admin_token: str = ""

    @property
    def contact_uri(self) -> str:
        """The Contact the server puts in its replies and NOTIFYs."""
        if self.server_address:
            return self.server_address
        host = f"[{self.sip_host}]" if ":" in self.sip_host else self.sip_host
        return f"sip:{host}:{self.sip_port}"

    def contact_uri_for(self, flow: str) -> str:
        """The server's Contact for a dialog whose SUBSCRIBE came over `flow`
        ("tls:…", "ws:…"): its in-dialog requests must come back over that kind of
        transport (RFC 5630 §3.1.3, RFC 7118 §5.1), so the port and transport of
        that listener; UDP and TCP dialogs get contact_uri."""
        transport = flow.partition(":")[0]
        port = {"tls": self.sip_tls_port, "ws": self.sip_ws_port, "wss": self.sip_wss_port}.get(
            transport
        )
        if not port:
            return self.contact_uri
        if self.server_address:
            host = parse_uri(self.server_address).host
        else:
            host = f"[{self.sip_host}]" if ":" in self.sip_host else self.sip_host
        return f"sip:{host}:{port};transport={transport}"

    def check_authentication(self) -> None:
        """Raise SettingsError when the authentication mode lacks what it needs; the
        services that authenticate (sip-edge, presence-store) call it at start."""
        if self.auth == "digest" and not self.auth_secret:
            raise SettingsError(
                "PRESENCE_AUTH_SECRET: must be set when PRESENCE_AUTH=digest (the default); "
                "PRESENCE_AUTH=none turns authentication off, for development only"
            )
        if self.auth == "trusted-proxy" and not (self.trusted_proxies or self.tls_client_ca):
            raise SettingsError(
                "PRESENCE_TRUSTED_PROXIES: must be set when PRESENCE_AUTH=trusted-proxy "
                "(or PRESENCE_TLS_CLIENT_CA, for proxies that present client certificates)"
            )

    @property
    def tls_enabled(self) -> bool:
        """A certificate is configured: TLS, WSS and HTTPS listeners run."""
        return bool(self.tls_cert)

    @property
    def trusted_proxy_addresses(self) -> frozenset[str]:
        return frozenset(
            str(ipaddress.ip_address(a.strip()))
            for a in self.trusted_proxies.split(",")
            if a.strip()
        )

    @property
    def publishers_for_others(self) -> frozenset[str]:
        return frozenset(
            a.strip().lower().removeprefix("sip:") for a in self.publish_for_others.split(",")
            if a.strip()
        )  # fmt: skip

    @property
    def denied_notify_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(
            ipaddress.ip_network(n.strip(), strict=False)
            for n in self.notify_deny_networks.split(",")
            if n.strip()
        )

    @property
    def offered_algorithms(self) -> tuple[str, ...]:
        return parse_algorithm_list(self.auth_algorithms)

    @property
    def event_package_names(self) -> tuple[str, ...]:
        return tuple(n.strip() for n in self.event_packages.split(",") if n.strip())

    @property
    def served_domains(self) -> frozenset[str]:
        return frozenset(d.strip().lower() for d in self.domains.split(",") if d.strip())

    # The few values the pure code takes, built once (frozen: never stale).
    @cached_property
    def expiry_policy(self) -> ExpiryPolicy:
        return ExpiryPolicy(
            default=self.default_expires,
            max=self.max_expires,
            min=self.min_expires,
            offset=self.expires_offset,
        )

    @cached_property
    def authorization_policy(self) -> AuthorizationPolicy:
        return AuthorizationPolicy(
            force_active=bool(self.force_active),
            transformation_default=self.transformation_default,
            max_document_bytes=self.max_document_bytes,
        )

    @cached_property
    def document_policy(self) -> DocumentPolicy:
        return DocumentPolicy(
            authorization=self.authorization_policy,
            message_summary_empty_body=bool(self.message_summary_empty_body),
        )

    @property
    def edge_name(self) -> str:
        return self.edge_id or f"{socket.gethostname()}-{self.sip_port}"


_PARSERS: dict[str, Callable[[str], Any]] = {
    "db_url": _url("postgresql", "postgres"),
    "presentity_table": _table_name,
    "active_watchers_table": _table_name,
    "watchers_table": _table_name,
    "xcap_table": _table_name,
    "clean_period": _integer(1, 86400),
    "to_tag_pref": _text,
    "lock_set_size": _integer(1, 65536),
    "expires_offset": _integer(0),
    "force_active": _flag,
    "transformation_default": _choice("rfc5025", "kamailio"),
    "max_expires": _integer(1),
    "server_address": _sip_uri_or_empty,
    "sip_host": _host,
    "sip_port": _integer(1, 65535),
    "min_expires": _integer(0),
    "default_expires": _integer(1),
    "domains": _domain_list,
    "etag_grace": _integer(0, 3600),
    "replace_same_device": _flag,
    "registrar": _flag,
    "sip_t1_ms": _integer(10, 10_000),
    "tcp_idle_timeout": _integer(1, 86400),
    "notify_min_interval": _integer(0, 3600),
    "notify_timeout_ends_subscription": _flag,
    "event_packages": _event_packages,
    "message_summary_empty_body": _flag,
    "max_publications": _integer(1, 10_000),
    "max_subscriptions_per_watcher": _integer(1, 1_000_000),
    "max_subscriptions_per_presentity": _integer(1, 1_000_000),
    "max_contacts": _integer(1, 10_000),
    # Bounded so that a NOTIFY record stays far below Kafka's 1 MiB default even
    # after JSON escaping (at most doubling: quotes, tabs and line ends).
    "max_document_bytes": _integer(1024, MAX_BODY_BYTES),
    "max_winfo_bytes": _integer(1024, MAX_BODY_BYTES),
    "record_attempts": _integer(1, 100),
    "edge_queue_delay_ms": _integer(10, 60_000),
    "edge_min_backlog": _integer(1, 1_000_000),
    "notify_connect_timeout_ms": _integer(100, 60_000),
    "notify_dns_timeout_ms": _integer(100, 60_000),
    "notify_dns_workers": _integer(1, 256),
    "notify_max_connecting": _integer(1, 100_000),
    "notify_max_connecting_per_host": _integer(1, 100_000),
    "tcp_max_connections": _integer(1, 1_000_000),
    "tcp_max_connections_per_address": _integer(1, 1_000_000),
    "tcp_max_write_buffer": _integer(4096, 64 * 1024 * 1024),
    "tcp_keepalive_only_timeout": _integer(1, 7 * 86400),
    "notify_deny_networks": _network_list,
    "sip_tls_port": _integer(0, 65535),
    "sip_ws_port": _integer(0, 65535),
    "sip_wss_port": _integer(0, 65535),
    "tls_cert": _text,
    "tls_key": _text,
    "tls_client_ca": _text,
    "webclient_dir": _text,
    "secrets_dir": _text,
    "sip_handshake_timeout_ms": _integer(100, 60_000),
    "store_https_port": _integer(0, 65535),
    "withdrawn_reason": _choice("deactivated", "probation"),
    "probation_retry_after": _integer(1, 86400 * 7),
    "pending_watcher_days": _integer(0, 36500),
    "xcap_auth": _choice("secret", "none"),
    "xcap_secret": _secret,
    "xcap_writes_per_minute": _integer(0, 1_000_000),
    "auth": _choice("digest", "trusted-proxy", "none"),
    "auth_secret": _secret,
    "auth_nonce_ttl": _integer(10, 86400),
    "trusted_proxies": _address_list,
    "publish_for_others": _text,
    "auth_max_failures": _integer(1, 1_000_000),
    "auth_max_source_failures": _integer(1, 1_000_000),
    "auth_block_seconds": _integer(1, 86400),
    "auth_require_qop": _flag,
    "auth_algorithms": _algorithm_list,
    "trusted_proxy_udp": _flag,
    "kafka_bootstrap": _bootstrap,
    "kafka_partitions": _integer(1, 1000),
    "kafka_namespace": _topic_part,
    "kafka_fetch_wait_ms": _integer(1, 1000),
    "kafka_commit_interval_ms": _integer(0, 10_000),
    "redis_url": _url("redis", "rediss", "unix"),
    "http_host": _host,
    "edge_http_port": _integer(1, 65535),
    "store_http_port": _integer(1, 65535),
    "notifier_http_port": _integer(1, 65535),
    "edge_id": _topic_part,
    "log_level": _log_level,
    "event_loop": _choice("uvloop", "asyncio"),
    "log_format": _choice("auto", "json", "text"),
    "log_levels": _log_levels,
    "admin_token": _secret,
}


def env_name(field: str) -> str:
    return PREFIX + field.upper()


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments are skipped; quotes are stripped."""
    values: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise SettingsError(f"PRESENCE_ENV_FILE: cannot read {path}: {error.strerror}") from None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.removeprefix("export ").partition("=")
        if not sep:
            raise SettingsError(f"{path}:{number}: expected KEY=VALUE, got {stripped!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment (and PRESENCE_ENV_FILE), validated."""
    env = dict(os.environ if environ is None else environ)
    if env.get("PRESENCE_ENV_FILE"):
        file_values = read_env_file(Path(env["PRESENCE_ENV_FILE"]))
        env = {**file_values, **env}
    if env.get("PRESENCE_SECRETS_DIR"):
        env = with_stored_values(env, Path(env["PRESENCE_SECRETS_DIR"]))
    known = {env_name(f.name) for f in fields(Settings)} | SCRIPT_VARIABLES
    for key in env:
        if key.startswith(PREFIX) and key not in known:
            raise SettingsError(f"{key}: unknown setting (see the table in docs/CONFIGURATION.md)")
    values: dict[str, Any] = {}
    for field in fields(Settings):
        raw = env.get(env_name(field.name))
        if raw is None:
            continue
        try:
            values[field.name] = _PARSERS[field.name](raw)
        except ValueError as error:
            raise SettingsError(f"{env_name(field.name)}: {error}") from None
    settings = Settings(**values)
    if bool(settings.tls_cert) != bool(settings.tls_key):
        missing = "PRESENCE_TLS_KEY" if settings.tls_cert else "PRESENCE_TLS_CERT"
        raise SettingsError(
            f"{missing}: must be set too (PRESENCE_TLS_CERT goes with PRESENCE_TLS_KEY)"
        )
    if settings.tls_client_ca and not settings.tls_cert:
        raise SettingsError("PRESENCE_TLS_CLIENT_CA: needs PRESENCE_TLS_CERT and PRESENCE_TLS_KEY")
    if settings.min_expires > settings.max_expires:
        raise SettingsError(
            f"PRESENCE_MIN_EXPIRES: {settings.min_expires} is above PRESENCE_MAX_EXPIRES "
            f"({settings.max_expires})"
        )
    return settings


def main() -> None:
    """`python -m presence.settings`: check the configuration, say what is wrong in one line."""
    import sys

    try:
        load()
    except SettingsError as error:
        sys.exit(f"configuration error: {error}")


if __name__ == "__main__":
    main()
