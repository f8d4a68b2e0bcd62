"""Prometheus metrics of every service, in one catalogue (served at GET /metrics).

Names follow Prometheus conventions: a `presence_` prefix, base units (seconds),
`_total` on counters. Label values are bounded: SIP methods the server knows
(else "other"), status codes, event packages, topics and partitions, a few fixed
outcome words; never a user, a URI or a dialog.

Each metric is labelled, so a service shows only what it records itself (the edge
no lock waits, the notifier no SIP requests). Values read from elsewhere (database
counts, Kafka positions, pool sizes) are refreshed just before a scrape by the
hooks registered with `on_scrape`, not by a timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

log = logging.getLogger(__name__)

# Latencies of a presence system: sub-millisecond locks up to 30 s NOTIFY timeouts.
_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

KNOWN_METHODS = frozenset(
    {"ACK", "BYE", "CANCEL", "INFO", "INVITE", "MESSAGE", "NOTIFY", "OPTIONS", "PRACK",
     "PUBLISH", "REFER", "REGISTER", "SUBSCRIBE", "UPDATE"}
)  # fmt: skip


def method_label(method: str) -> str:
    """A method as a label value: extension methods (unbounded) become "other"."""
    return method if method in KNOWN_METHODS else "other"


# --- sip-edge -------------------------------------------------------------------

SIP_REQUESTS = Counter(
    "presence_sip_requests_total",
    "SIP requests answered with a final response, by method and response code",
    ["method", "code"],
)
SIP_TRANSACTION_SECONDS = Histogram(
    "presence_sip_transaction_duration_seconds",
    "Server transactions: from the request's arrival to its final response",
    ["method"],
    buckets=_LATENCY_BUCKETS,
)
SIP_TRANSACTIONS_IN_FLIGHT = Gauge(
    "presence_sip_transactions_in_flight",
    "SIP transactions not finished: server (requests without a final response), "
    "client (NOTIFYs without one)",
    ["kind"],
)
NOTIFIES_SENT = Counter(
    "presence_sip_notifies_sent_total",
    "NOTIFY requests sent by the edge (first transmissions), by event package",
    ["event"],
)
NOTIFY_OUTCOMES = Counter(
    "presence_sip_notify_outcomes_total",
    "How NOTIFY transactions ended: delivered (2xx), rejected (3xx-6xx), timeout "
    "(no answer, Timer F), connect_timeout, dns_timeout, write_buffer_full (the peer "
    "does not read), overload (connection or connect limits), denied (a denied "
    "network), transport_error, unroutable (no next hop)",
    ["event", "outcome"],
)
NOTIFY_TARGETS_DENIED = Counter(
    "presence_sip_notify_targets_denied_total",
    "NOTIFY targets in PRESENCE_NOTIFY_DENY_NETWORKS: at SUBSCRIBE (an IP literal, "
    "403) or at NOTIFY (a name that resolved into one)",
    ["stage"],
)
TCP_CONNECTIONS = Gauge(
    "presence_sip_tcp_connections",
    "Open SIP TCP connections (accepted and opened by the edge)",
)
TCP_REFUSED = Counter(
    "presence_sip_tcp_refused_total",
    "TCP connections refused by a limit: inbound (closed at accept), outbound (a "
    "NOTIFY's connect), connecting (too many connects under way); by the limit "
    "reached (total, per_key: one address)",
    ["direction", "limit"],
)
TCP_CLOSED = Counter(
    "presence_sip_tcp_closed_total",
    "TCP connections the edge closed itself, by reason (idle, keepalive_only, "
    "write_buffer_full, framing_error)",
    ["reason"],
)
SIP_CONNECTIONS = Gauge(
    "presence_sip_connections",
    "Open SIP connections by transport (tcp, tls, ws, wss); all of them count "
    "against PRESENCE_TCP_MAX_CONNECTIONS",
    ["transport"],
)
CONNECTION_SLOTS = Gauge(
    "presence_sip_connection_slots",
    "Connections holding a slot of PRESENCE_TCP_MAX_CONNECTIONS: open ones of every "
    "transport and accepted ones still in their TLS handshake or WebSocket upgrade",
)
TRANSPORT_REFUSALS = Counter(
    "presence_sip_transport_refusals_total",
    "Connections closed for what their peer sent or failed to send before SIP: "
    "handshake_timeout (TLS or WebSocket upgrade not done in time), tls_failed, "
    "no_sip_subprotocol, bad_upgrade, message_too_large, websocket_protocol_error",
    ["transport", "reason"],
)
NOTIFY_RETRANSMISSIONS = Counter(
    "presence_sip_notify_retransmissions_total",
    "NOTIFY retransmissions over UDP (Timer E)",
    ["event"],
)
OVERLOAD_REFUSALS = Counter(
    "presence_sip_overload_refusals_total",
    "Requests the edge answered 503 at once, before the bus, because its backlog of "
    "requests waiting for the store was full (sip_edge.admission), by method",
    ["method"],
)
INPUT_REFUSALS = Counter(
    "presence_sip_input_refusals_total",
    "Requests the edge refused with 400 before the bus because a header holds what the "
    "system cannot read or store, by header and defect (control, non_ascii, digits, "
    "brackets, malformed, length)",
    ["header", "defect"],
)
PUBLISH_TO_NOTIFY_SECONDS = Histogram(
    "presence_publish_to_notify_seconds",
    "From the edge's receipt of a PUBLISH to a NOTIFY it caused leaving the edge",
    ["event"],
    buckets=_LATENCY_BUCKETS,
)

# --- presence-store -------------------------------------------------------------

SUBSCRIPTIONS = Gauge(
    "presence_subscriptions",
    "Subscription dialogs in the database (all replicas), by event package and status",
    ["event", "status"],
)
PUBLICATIONS = Gauge(
    "presence_publications",
    "Live (unexpired) publications in the database (all replicas), by event package",
    ["event"],
)
STORE_REQUESTS = Counter(
    "presence_store_requests_total",
    "Requests the store applied or answered, by type (publish, subscribe, register) and code",
    ["type", "code"],
)
UNSTORABLE_REQUESTS = Counter(
    "presence_store_unstorable_requests_total",
    "Requests the database refused as data (a field the edge should have refused), "
    "answered 400 Unstorable Request instead of failing their batch; should stay 0",
    ["type"],
)
AUTH_FAILURES = Counter(
    "presence_auth_failures_total",
    "SIP requests refused on authentication, by reason: at the store bad_credentials, "
    "replayed_nonce_count, blocked_account, blocked_source, qop_required, "
    "algorithm_not_offered, not_own_aor, not_own_subscription, bad_authorization; at the "
    "edge bad_authorization, "
    "trusted_proxy_udp",
    ["reason"],
)
CAP_REFUSALS = Counter(
    "presence_cap_refusals_total",
    "Requests refused because they would pass a configured cap, by cap (publications, "
    "document_size, subscriptions_per_watcher, subscriptions_per_presentity, contacts)",
    ["cap"],
)
XCAP_RATE_LIMITED = Counter(
    "presence_xcap_rate_limited_total",
    "XCAP writes refused with 429 because the presentity's writes per minute "
    "(PRESENCE_XCAP_WRITES_PER_MINUTE) were used up, by HTTP method",
    ["method"],
)
XCAP_AUTH_FAILURES = Counter(
    "presence_xcap_auth_failures_total",
    "XCAP requests refused on their credentials, by reason (missing, unreadable: "
    "401; wrong: 401; other_user: 403)",
    ["reason"],
)
HTTP_PLAIN_REFUSED = Counter(
    "presence_http_plain_refused_total",
    "XCAP and admin requests refused on plain HTTP from another machine while "
    "HTTPS serves them (PRESENCE_TLS_CERT set), by area (xcap, admin)",
    ["area"],
)
HTTP_BODY_TOO_LARGE = Counter(
    "presence_http_body_too_large_total",
    "HTTP requests answered 413 because their body passed the limit of their area "
    "(xcap, admin, other), declared in Content-Length or counted while reading",
    ["area"],
)
CLEANER_REMOVED = Counter(
    "presence_cleaner_removed_total",
    "What the clean_period timer removed or ended, by kind",
    ["kind"],
)

# --- notifier -------------------------------------------------------------------

STORE_NOTIFIES_BUILT = Counter(
    "presence_store_notifies_total",
    "NOTIFY requests presence-store built itself and handed to an edge (the one each "
    "accepted SUBSCRIBE calls for), by event package",
    ["event"],
)
NOTIFIES_BUILT = Counter(
    "presence_notifier_notifies_total",
    "NOTIFY requests the notifier built and handed to an edge, by event package",
    ["event"],
)

NOTIFY_EDGE_GONE = Counter(
    "presence_notifier_edge_gone_total",
    "NOTIFYs not sent because the edge holding their dialog has no inbox any more "
    "(reported as 408 Edge Gone)",
    ["event"],
)
DOCUMENTS_WITHHELD = Counter(
    "presence_notifier_documents_withheld_total",
    "NOTIFYs sent with an empty document because the presentity's could not be "
    "filtered (larger than PRESENCE_MAX_DOCUMENT_BYTES, e.g. after lowering it)",
    ["event"],
)
WINFO_TRUNCATED = Counter(
    "presence_winfo_truncated_total",
    "Watcherinfo NOTIFY bodies cut to PRESENCE_MAX_WINFO_BYTES, by state (full, partial)",
    ["state"],
)

# --- shared: locks, bus, database -----------------------------------------------

LOCK_WAIT_SECONDS = Histogram(
    "presence_lock_wait_seconds",
    "Time to acquire a Redis presentity lock, by outcome (acquired, timeout)",
    ["outcome"],
    buckets=_LATENCY_BUCKETS,
)
BUS_EVENTS = Counter(
    "presence_bus_events_handled_total",
    "Kafka records handled by a consumer loop, by event type",
    ["type"],
)
RECORD_RETRIES = Counter(
    "presence_record_retries_total",
    "Records a consumer loop handled again after their handler failed for a reason "
    "other than a dependency's outage (presence.bus.isolation), by service and topic",
    ["service", "topic"],
)
DEAD_LETTERS = Counter(
    "presence_dead_letters_total",
    "Records a consumer loop gave up on (undecodable, or failed every attempt) and put "
    "on the dead-letters topic, by service and the record's topic; should stay 0",
    ["service", "topic"],
)
KAFKA_CONSUMER_LAG = Gauge(
    "presence_kafka_consumer_lag",
    "Records on the broker not yet consumed, per assigned partition",
    ["topic", "partition"],
)
DB_POOL_CONNECTIONS = Gauge(
    "presence_db_pool_connections",
    "PostgreSQL pool connections, by state (in_use, idle, max)",
    ["state"],
)

ScrapeHook = Callable[[], Awaitable[None]]
_hooks: list[ScrapeHook] = []
SCRAPE_HOOK_TIMEOUT = 3.0


def on_scrape(hook: ScrapeHook) -> None:
    """Run `hook` before each scrape (to read gauges from a database, a consumer)."""
    _hooks.append(hook)


async def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, gauges refreshed first. A hook that
    fails or is slow leaves its gauges as they were (logged), never the scrape."""
    for hook in list(_hooks):
        try:
            await asyncio.wait_for(hook(), SCRAPE_HOOK_TIMEOUT)
        except Exception as error:
            log.warning("metrics: %s failed: %s", getattr(hook, "__name__", hook), error)
    # The classic text format (0.0.4), which every Prometheus version reads; the
    # names here need none of the newer format's escaping.
    return generate_latest(REGISTRY), CONTENT_TYPE_PLAIN_0_0_4


def watch_consumer(consumer: object) -> None:
    """Report an aiokafka consumer's lag per assigned partition at each scrape:
    the partition's high watermark (from the latest fetch) minus the position of
    the next record the service will be handed."""

    async def consumer_lag() -> None:
        assignment = consumer.assignment()  # type: ignore[attr-defined]
        KAFKA_CONSUMER_LAG.clear()  # partitions moved away in a rebalance disappear
        for partition in assignment:
            highwater = consumer.highwater(partition)  # type: ignore[attr-defined]
            if highwater is None:
                continue
            position = await consumer.position(partition)  # type: ignore[attr-defined]
            KAFKA_CONSUMER_LAG.labels(partition.topic, str(partition.partition)).set(
                max(0, highwater - position)
            )

    on_scrape(consumer_lag)


def watch_pool(pool: object) -> None:
    """Report an asyncpg pool's connections at each scrape."""

    async def db_pool() -> None:
        size = pool.get_size()  # type: ignore[attr-defined]
        idle = pool.get_idle_size()  # type: ignore[attr-defined]
        DB_POOL_CONNECTIONS.labels("in_use").set(size - idle)
        DB_POOL_CONNECTIONS.labels("idle").set(idle)
        DB_POOL_CONNECTIONS.labels("max").set(pool.get_max_size())  # type: ignore[attr-defined]

    on_scrape(db_pool)
