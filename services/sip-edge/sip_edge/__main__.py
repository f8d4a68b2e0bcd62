"""sip-edge: the SIP transport of the presence system. Run: python -m sip_edge"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from presence.bus import events, isolation
from presence.bus.topics import Topics, shared_topics, topic_configs
from presence.runtime import metrics, service
from presence.runtime.health import make_health_app
from presence.runtime.kafka import (
    bus_ready,
    dead_letter_of,
    ensure_topics,
    start_consumer,
    start_producer,
)
from presence.runtime.logs import correlated, from_kafka_headers
from presence.runtime.tls import TlsConfigError, client_context, server_context
from presence.settings import Settings, SettingsError
from sip_edge.edge import Edge
from sip_edge.transport import SharedSlots, TcpConnections, TcpLimits, UdpEndpoint

log = logging.getLogger("sip_edge")


INBOX_RETRY_PAUSE = (0.5, 5.0)
BUS_CHECK_INTERVAL = 1.0
INBOX_FETCH_WAIT_MS = 500


# What the inbox loop does with a record it could not handle (edge.on_inbox_event
# raised, or it is undecodable): keep it for operators, never hold up the others.
InboxGiveUp = Callable[[ConsumerRecord[bytes, bytes], str], Awaitable[None]]


async def _log_only(record: ConsumerRecord[bytes, bytes], error: str) -> None:
    return None


def inbox_dead_letters(producer: AIOKafkaProducer, topic: str) -> InboxGiveUp:
    """Put an inbox record the edge could not handle on the dead-letters topic (as
    the store and notifier do with theirs; presence.bus.isolation). Handling it again
    would fail again: the edge's handling has no dependency that could be down. The
    send is not awaited: after a crash the record is read and dead-lettered again."""

    async def give_up(record: ConsumerRecord[bytes, bytes], error: str) -> None:
        letter = dead_letter_of(record, service="sip-edge", error=error, attempts=1)
        try:
            await producer.send(topic, events.encode(letter), key=record.key)
        except Exception as failure:
            log.error("inbox record %s: dead letter not sent: %s", record.offset, failure)
            return
        metrics.DEAD_LETTERS.labels("sip-edge", record.topic).inc()

    return give_up


async def consume_inbox(
    consumer: AIOKafkaConsumer, edge: Edge, inbox: str, give_up: InboxGiveUp = _log_only
) -> None:
    """Replies and NOTIFY requests addressed to this edge replica. The committed
    position stops at the oldest NOTIFY not yet finished (sip_edge.inbox). A
    failure (Kafka unreachable, a rebalance during a commit) is retried after a
    pause, so the inbox outlives a broker restart. Commits run beside the reading
    (commit_inbox_behind): the next replies are not held up by a commit's round trip."""
    partition = TopicPartition(inbox, 0)
    advanced = asyncio.Event()
    interval = edge.settings.kafka_commit_interval_ms / 1000
    committer = asyncio.create_task(
        commit_inbox_behind(consumer, edge, partition, advanced, interval)
    )
    pause = INBOX_RETRY_PAUSE[0]
    try:
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=1000, max_records=500)
                for records in batch.values():
                    for index, record in enumerate(records):
                        await handle_inbox_record(edge, record, give_up)
                        if index % 16 == 15:
                            # Let the sockets in: the answers to these NOTIFYs are arriving.
                            await asyncio.sleep(0)
                if batch:
                    advanced.set()
                pause = INBOX_RETRY_PAUSE[0]
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("inbox: %s; trying again in %.1f s", error, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, INBOX_RETRY_PAUSE[1])
    finally:
        committer.cancel()


async def handle_inbox_record(
    edge: Edge, record: ConsumerRecord[bytes, bytes], give_up: InboxGiveUp
) -> None:
    try:
        event = events.decode(record.value or b"")
    except events.EventDecodeError as error:
        log.error("skipping undecodable inbox record %s: %s", record.offset, error)
        await give_up(record, f"undecodable: {error}")
    else:
        # The NOTIFY or reply is handled under the id of what caused it.
        with correlated(from_kafka_headers(record.headers)):
            try:
                await edge.on_inbox_event(event, record.offset)
            except Exception as error:
                # One record that cannot be handled must not cost the
                # rest of the batch (they are not fetched again).
                log.exception("inbox record %s not handled", record.offset)
                await give_up(record, isolation.describe(error))
    edge.inbox.consumed(record.offset)


async def commit_inbox_behind(
    consumer: AIOKafkaConsumer,
    edge: Edge,
    partition: TopicPartition,
    advanced: asyncio.Event,
    interval: float = 0.0,
) -> None:
    """Commit the inbox's committable position whenever reading moved on: one commit
    in flight at a time, at most one per `interval` (PRESENCE_KAFKA_COMMIT_INTERVAL_MS),
    and what arrives meanwhile is covered by the next one, so under load one round
    trip commits many batches (a commit per reply was a tenth of the edge's CPU)."""
    committed: int | None = None
    pause = INBOX_RETRY_PAUSE[0]
    while True:
        await advanced.wait()
        advanced.clear()
        position = edge.inbox.committable()
        if position is None or position == committed:
            continue
        try:
            await consumer.commit({partition: position})
            committed = position
            pause = INBOX_RETRY_PAUSE[0]
            await asyncio.sleep(interval)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("inbox: commit failed: %s; trying again in %.1f s", error, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, INBOX_RETRY_PAUSE[1])
            advanced.set()


async def commit_inbox(consumer: AIOKafkaConsumer, edge: Edge, inbox: str) -> None:
    """At shutdown: commit what is done with (NOTIFYs still unfinished are re-read)."""
    position = edge.inbox.committable()
    if position is None:
        return
    try:
        await asyncio.wait_for(consumer.commit({TopicPartition(inbox, 0): position}), 5)
    except Exception as error:
        log.warning("inbox: final commit failed: %s", error)


async def watch_bus(producer: AIOKafkaProducer, edge: Edge) -> None:
    """Whether Kafka answers, every second: while it does not, the edge answers
    requests 503 at once instead of letting them wait for REPLY_DEADLINE."""
    while True:
        edge.set_bus_up(await bus_ready(producer, timeout=3.0))
        await asyncio.sleep(BUS_CHECK_INTERVAL)


def check_file_limit(max_connections: int) -> None:
    """Raise the open-files limit to what PRESENCE_TCP_MAX_CONNECTIONS needs (as far
    as the hard limit allows), or say at start that the cap cannot be reached."""
    needed = max_connections + 256  # sockets of Kafka, HTTP, UDP, logs
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "open-files limit %d is below PRESENCE_TCP_MAX_CONNECTIONS + 256 (%d): "
            "raise it (ulimit -n) or lower the setting",
            soft,
            needed,
        )


@dataclass
class Listeners:
    """The sockets sip-edge serves on, bound before anything else starts: a taken port
    is the most common start-up problem and the cheapest to report."""

    udp: socket.socket
    tcp: socket.socket
    # The connection listeners switched on: transport -> (socket, port).
    others: dict[str, tuple[socket.socket, int]]


def bind_listeners(settings: Settings, tls_on: bool) -> Listeners:
    def bind(port: int, kind: socket.SocketKind, variable: str) -> socket.socket:
        return service.bind_socket(settings.sip_host, port, kind, variable)

    udp = bind(settings.sip_port, socket.SOCK_DGRAM, "PRESENCE_SIP_PORT")
    tcp = bind(settings.sip_port, socket.SOCK_STREAM, "PRESENCE_SIP_PORT")
    others = {
        transport: (bind(port, socket.SOCK_STREAM, variable), port)
        for transport, port, variable, wanted in (
            ("tls", settings.sip_tls_port, "PRESENCE_SIP_TLS_PORT", tls_on),
            ("ws", settings.sip_ws_port, "PRESENCE_SIP_WS_PORT", True),
            ("wss", settings.sip_wss_port, "PRESENCE_SIP_WSS_PORT", tls_on),
        )
        if port and wanted
    }
    return Listeners(udp, tcp, others)


def warn_about_trust(settings: Settings) -> None:
    if settings.auth == "none":
        log.warning("PRESENCE_AUTH=none: anyone may publish for anyone (development only)")
    if settings.auth == "trusted-proxy" and settings.trusted_proxy_udp:
        log.warning(
            "PRESENCE_TRUSTED_PROXY_UDP=1: P-Asserted-Identity is believed over UDP from %s;"
            " UDP source addresses can be forged, so the network must drop packets that"
            " claim those addresses from anywhere but the proxies themselves",
            settings.trusted_proxies,
        )


async def start_inbox(
    settings: Settings, topics: Topics, inbox: str
) -> tuple[AIOKafkaProducer, AIOKafkaConsumer]:
    """The producer of every record the edge sends and the reader of its inbox."""
    await ensure_topics(
        settings.kafka_bootstrap, {**shared_topics(settings), inbox: 1}, topic_configs(settings)
    )
    producer = await start_producer(settings.kafka_bootstrap)
    consumer = await start_consumer(
        settings.kafka_bootstrap,
        [inbox],
        group_id=topics.group(f"sip-edge.{settings.edge_name}"),
        client_id=settings.edge_name,
        assign=True,  # one reader: no group to rejoin after a crash
        # One partition: a fetch is sent only once its records are taken, so it never
        # leaves a partition out and a long wait costs nothing but fewer empty fetches.
        fetch_wait_ms=INBOX_FETCH_WAIT_MS,
    )
    return producer, consumer


def attach_transports(
    edge: Edge,
    settings: Settings,
    listeners: Listeners,
    server_tls: ssl.SSLContext | None,
    client_tls: ssl.SSLContext,
) -> SharedSlots:
    """The transports feeding the edge, under one connection cap; the cap's slots."""
    limits = TcpLimits.of(settings)
    slots = SharedSlots.of(limits)  # one connection cap over every transport
    received = edge.message_received
    edge.udp = UdpEndpoint(listeners.udp, received)
    edge.tcp = TcpConnections(received, limits, slots=slots)
    edge.tls = TcpConnections(
        received, limits, transport="tls", slots=slots, server_tls=server_tls, client_tls=client_tls
    )
    if "ws" in listeners.others:
        edge.ws = TcpConnections(received, limits, transport="ws", slots=slots, websocket=True)
    if "wss" in listeners.others:
        edge.wss = TcpConnections(
            received, limits, transport="wss", slots=slots, server_tls=server_tls, websocket=True
        )
    return slots


def gauge_connections(edge: Edge, slots: SharedSlots) -> None:
    async def in_flight() -> None:
        metrics.SIP_TRANSACTIONS_IN_FLIGHT.labels("server").set(edge.transactions.unanswered())
        metrics.SIP_TRANSACTIONS_IN_FLIGHT.labels("client").set(len(edge.client_transactions))
        metrics.TCP_CONNECTIONS.set(len(edge.tcp) if edge.tcp is not None else 0)
        metrics.CONNECTION_SLOTS.set(len(slots.connections))
        for transport in ("tcp", "tls", "ws", "wss"):
            connections = edge.connections(transport)
            count = len(connections) if connections is not None else 0
            metrics.SIP_CONNECTIONS.labels(transport).set(count)

    metrics.on_scrape(in_flight)


async def drain(edge: Edge) -> None:
    """Stop taking requests (new ones get 503, no new TCP connections), give the ones
    in flight the time the store has to answer them (their replies still arrive on
    the inbox and leave through the sockets, which stay open until then), then close."""
    log.info("stopping: %d transactions in flight", edge.transactions.unanswered())
    edge.draining = True
    all_connections = [c for c in map(edge.connections, ("tcp", "tls", "ws", "wss")) if c]
    for connections in all_connections:
        connections.stop_listening()
    for _ in range(int(events.REPLY_DEADLINE / 0.05)):
        if not edge.transactions.unanswered():
            break
        await asyncio.sleep(0.05)
    if edge.udp is not None:
        edge.udp.close()
    for connections in all_connections:
        connections.close()
    edge.close()


async def body(settings: Settings, stopping: asyncio.Event) -> None:
    try:
        settings.check_authentication()
    except SettingsError as error:
        raise service.StartupError(str(error)) from None
    listeners = bind_listeners(settings, tls_on=settings.tls_enabled)
    try:
        server_tls = server_context(settings) if settings.tls_enabled else None
        client_tls = client_context(settings)
    except TlsConfigError as error:
        raise service.StartupError(str(error)) from None
    warn_about_trust(settings)
    topics = Topics.of(settings)
    inbox = topics.edge_inbox(settings.edge_name)
    producer, consumer = await start_inbox(settings, topics, inbox)
    edge = Edge(settings, producer)
    metrics.watch_consumer(consumer)
    slots = attach_transports(edge, settings, listeners, server_tls, client_tls)
    gauge_connections(edge, slots)
    check_file_limit(settings.tcp_max_connections)
    assert edge.tcp is not None
    await edge.tcp.serve(listeners.tcp)
    for transport, (sock, _) in listeners.others.items():
        connections = edge.connections(transport)
        assert connections is not None
        await connections.serve(sock)
    tasks = [
        asyncio.create_task(
            consume_inbox(consumer, edge, inbox, inbox_dead_letters(producer, topics.dead_letters))
        ),
        asyncio.create_task(watch_bus(producer, edge)),
    ]
    http = await service.serve_http(
        make_health_app("sip-edge", {"kafka": lambda: bus_ready(producer)}),
        settings.http_host,
        settings.edge_http_port,
        "PRESENCE_EDGE_HTTP_PORT",
    )
    log.info(
        "sip-edge %s listening on udp+tcp %s:%s%s, inbox %s",
        settings.edge_name,
        settings.sip_host,
        settings.sip_port,
        "".join(f", {transport} {port}" for transport, (_, port) in listeners.others.items()),
        inbox,
    )
    if not settings.tls_enabled:
        log.info("no PRESENCE_TLS_CERT: SIP over TLS and WSS are off")
    await stopping.wait()
    await drain(edge)
    http.should_exit = True
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await commit_inbox(consumer, edge, inbox)
    await consumer.stop()
    await producer.stop()


def main() -> None:
    service.run("sip-edge", body)


if __name__ == "__main__":
    main()
