"""sip-edge: the SIP transport of the presence system. Run: python -m sip_edge"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from aiokafka import AIOKafkaConsumer
from presence import events, service
from presence.health import make_health_app
from presence.kafka import bus_ready, ensure_topics, start_consumer, start_producer
from presence.settings import Settings
from presence.topics import Topics

from sip_edge.edge import Edge
from sip_edge.transport import start_tcp, start_udp

log = logging.getLogger("sip_edge")


async def consume_inbox(consumer: AIOKafkaConsumer, edge: Edge) -> None:
    """Replies and NOTIFY requests addressed to this edge replica."""
    async for record in consumer:
        try:
            event = events.decode(record.value or b"")
        except events.EventDecodeError as error:
            log.error("skipping undecodable inbox record at offset %s: %s", record.offset, error)
        else:
            edge.on_inbox_event(event)
        await consumer.commit()


async def expire_periodically(edge: Edge) -> None:
    while True:
        await asyncio.sleep(0.5)
        edge.expire_transactions()


async def body(settings: Settings, stopping: asyncio.Event) -> None:
    # Bind first: a taken port is the most common start-up problem and the cheapest to report.
    udp_sock = service.bind_socket(
        settings.sip_host, settings.sip_port, socket.SOCK_DGRAM, "PRESENCE_SIP_PORT"
    )
    tcp_sock = service.bind_socket(
        settings.sip_host, settings.sip_port, socket.SOCK_STREAM, "PRESENCE_SIP_PORT"
    )
    edge_id = settings.edge_name
    topics = Topics.of(settings)
    inbox = topics.edge_inbox(edge_id)
    await ensure_topics(settings.kafka_bootstrap, {inbox: 1})
    producer = await start_producer(settings.kafka_bootstrap)
    consumer = await start_consumer(
        settings.kafka_bootstrap,
        [inbox],
        group_id=topics.group(f"sip-edge.{edge_id}"),
        client_id=edge_id,
    )
    edge = Edge(settings, producer)
    udp = await start_udp(udp_sock, edge.message_received)
    tcp = await start_tcp(tcp_sock, edge.message_received)
    tasks = [
        asyncio.create_task(consume_inbox(consumer, edge)),
        asyncio.create_task(expire_periodically(edge)),
    ]
    http = await service.serve_http(
        make_health_app("sip-edge", {"kafka": lambda: bus_ready(producer)}),
        settings.http_host,
        settings.edge_http_port,
        "PRESENCE_EDGE_HTTP_PORT",
    )
    log.info(
        "sip-edge %s listening on udp+tcp %s:%s, inbox %s",
        edge_id,
        settings.sip_host,
        settings.sip_port,
        inbox,
    )
    await stopping.wait()
    log.info("stopping")
    udp.close()
    tcp.close()
    http.should_exit = True
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await consumer.stop()
    await producer.stop()


def main() -> None:
    service.run("sip-edge", body)


if __name__ == "__main__":
    main()
