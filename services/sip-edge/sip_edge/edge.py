"""The asyncio adapter around the edge's SIP core (sip_edge.core.EdgeCore).

It owns what the core may not touch: the clock, the sockets (the transports call
`message_received`), Kafka (the inbox loop calls `on_inbox_event`; events are
produced here) and the tasks of name lookups and connects. Every input goes to
the core with the time, the actions it returns are carried out here, and ONE
timer (`loop.call_at`) is kept armed for the core's next deadline: re-armed
when an input makes it earlier, and after each time it fires.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Coroutine
from typing import Any

from aiokafka import AIOKafkaProducer

from presence.bus import events
from presence.runtime import metrics
from presence.runtime.logs import correlated
from presence.settings import Settings
from sip_edge.client_transactions import ClientTransactions
from sip_edge.core import (
    Action,
    CancelDelivery,
    EdgeCore,
    IncomingRequest,
    NotifyDelivery,
    Produce,
    Resolve,
    SendResponse,
    Transmit,
)
from sip_edge.inbox import InboxProgress
from sip_edge.policy import EdgePolicy
from sip_edge.resolver import Resolver, ResolveTimeout
from sip_edge.source import Source
from sip_edge.transactions import TransactionTable
from sip_edge.transport import (
    ConnectionLimit,
    ConnectTimeout,
    FlowFailed,
    TcpConnections,
    UdpEndpoint,
    WriteBufferFull,
)

log = logging.getLogger(__name__)


class Edge:
    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.edge_id = settings.edge_name
        self.core = EdgeCore(EdgePolicy.of(settings))
        self._producer = producer
        self.udp: UdpEndpoint | None = None
        self.tcp: TcpConnections | None = None
        # TLS (outgoing connections always possible; listening with a certificate),
        # WebSocket and secure WebSocket (only when listening).
        self.tls: TcpConnections | None = None
        self.ws: TcpConnections | None = None
        self.wss: TcpConnections | None = None
        self.resolver = Resolver(settings.notify_dns_workers, settings.notify_dns_timeout_ms / 1000)
        self._tasks: set[asyncio.Task[None]] = set()
        # The lookup or connection write under way for a NOTIFY, by branch: Timer F
        # cancels it.
        self._deliveries: dict[str, asyncio.Task[None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # when it fires (uvloop's handles do not say)

    # --- what the rest of the service reads and sets ------------------------------

    @property
    def transactions(self) -> TransactionTable[IncomingRequest]:
        return self.core.transactions

    @property
    def client_transactions(self) -> ClientTransactions[NotifyDelivery]:
        return self.core.client_transactions

    @property
    def inbox(self) -> InboxProgress:
        return self.core.inbox

    @property
    def bus_up(self) -> bool:
        return self.core.bus_up

    def set_bus_up(self, up: bool) -> None:
        self.core.set_bus_up(up)

    @property
    def draining(self) -> bool:
        return self.core.draining

    @draining.setter
    def draining(self, draining: bool) -> None:
        self.core.draining = draining

    def connections(self, transport: str) -> TcpConnections | None:
        """The connections of a connection transport (None: not served here)."""
        return {"tcp": self.tcp, "tls": self.tls, "ws": self.ws, "wss": self.wss}.get(transport)

    def close(self) -> None:
        """At shutdown, once the sockets are closed: no more timers or lookups."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.resolver.close()

    # --- inputs -------------------------------------------------------------------

    def message_received(self, data: bytes, source: Source) -> None:
        """One complete SIP message (a datagram, or one framed from a TCP stream)."""
        self._run(self.core.receive(data, source, self._now(), time.time()))

    async def on_inbox_event(self, event: events.Event, offset: int | None = None) -> None:
        """One inbox record (under its correlation id, set by the inbox loop)."""
        self._run(self.core.inbox_event(event, self._now(), offset))

    def _timer_fired(self) -> None:
        self._timer = None
        self._run(self.core.handle_timer(self._now()))

    @staticmethod
    def _now() -> float:
        # The event loop's clock: the core's deadlines are call_at times as they are.
        return asyncio.get_running_loop().time()

    # --- actions ------------------------------------------------------------------

    def _run(self, actions: list[Action]) -> None:
        """Carry out what the core asked for, then arm the timer for its next deadline."""
        for action in actions:
            if isinstance(action, SendResponse):
                action.source.send(action.data, action.address)
            elif isinstance(action, Produce):
                with correlated(action.correlation):  # the task's records carry it
                    self._spawn(self._send_event(action))
            elif isinstance(action, Resolve):
                self._track(action.branch, self._spawn(self._resolve(action)))
            elif isinstance(action, Transmit):
                self._transmit(action)
            elif isinstance(action, CancelDelivery):
                task = self._deliveries.pop(action.branch, None)
                if task is not None:
                    task.cancel()  # still resolving, connecting or waiting to write
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.core.next_timer()
        if deadline is None:
            return
        if self._timer is not None:
            if self._timer_at <= deadline:
                return  # fires first anyway; the core says what is due then
            self._timer.cancel()
        # In a context of its own: what is due belongs to no one input's correlation id.
        self._timer = asyncio.get_running_loop().call_at(
            deadline, self._timer_fired, context=contextvars.Context()
        )
        self._timer_at = deadline

    async def _send_event(self, action: Produce) -> None:
        """Hand an event to Kafka without waiting for the acknowledgement. A send that
        fails at once answers its request 503; a later failure is left to the
        transaction's timeout."""
        try:
            await self._producer.send(
                action.topic, events.encode(action.event), key=action.key.encode()
            )
        except Exception as error:
            log.error("could not put %s on %s: %s", action.event.TYPE, action.topic, error)
            self._run(self.core.produce_failed(action.request_id, self._now()))

    async def _resolve(self, action: Resolve) -> None:
        try:
            address = await self.resolver.resolve(action.host, action.port)
        except ResolveTimeout as error:
            self._failed(action.branch, 408, "DNS Timeout", "dns_timeout", error)
        except OSError as error:
            self._failed(action.branch, 503, "Unresolvable Next Hop", "unroutable", error)
        else:
            self._run(self.core.resolved(action.branch, address, self._now()))

    def _transmit(self, action: Transmit) -> None:
        if action.transport == "udp":
            assert self.udp is not None
            self.udp.send(action.data, action.address)
            if action.first:
                _count_sent(action.notify)
            return
        connections = self.connections(action.transport)
        if connections is None:
            error = OSError(f"no {action.transport} transport here")
            self._failed(action.branch, 503, "Unsupported Transport", "unroutable", error)
            return
        self._track(action.branch, self._spawn(self._send_on(connections, action)))

    async def _send_on(self, connections: TcpConnections, action: Transmit) -> None:
        """Send a NOTIFY over a connection (opened if need be), waiting while the peer
        reads too slowly."""
        try:
            await connections.send(action.data, action.address, action.server_name)
        except FlowFailed as error:
            # A WebSocket watcher is reachable over its own connection only (RFC 7118);
            # it is gone, and so is this dialog's way to it (RFC 5626 §5.3: 430).
            self._failed(action.branch, 430, "Flow Failed", "flow_failed", error)
        except ConnectTimeout as error:
            self._failed(action.branch, 408, "Connect Timeout", "connect_timeout", error)
        except WriteBufferFull as error:
            # The peer stopped reading: as good as a target that never answers.
            self._failed(action.branch, 408, "Peer Not Reading", "write_buffer_full", error)
        except ConnectionLimit as error:
            self._failed(action.branch, 503, "Too Many Connections", "overload", error)
        except OSError as error:
            if connections.transport in ("ws", "wss"):
                # The connection broke while this was written to it: the flow is gone.
                self._failed(action.branch, 430, "Flow Failed", "flow_failed", error)
            else:
                # §8.1.3.1: a transport error is treated as a 503.
                self._failed(action.branch, 503, "Transport Error", "transport_error", error)
        else:
            if action.first:
                _count_sent(action.notify)

    def _failed(
        self, branch: str, status: int, reason: str, outcome: str, error: BaseException
    ) -> None:
        self._run(
            self.core.delivery_failed(branch, status, reason, outcome, str(error), self._now())
        )

    # --- tasks --------------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _track(self, branch: str, task: asyncio.Task[None]) -> None:
        self._deliveries[branch] = task
        task.add_done_callback(lambda done: self._delivery_done(branch, done))

    def _delivery_done(self, branch: str, task: asyncio.Task[None]) -> None:
        if self._deliveries.get(branch) is task:
            del self._deliveries[branch]

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("edge task failed", exc_info=task.exception())


def _count_sent(notify: events.NotifyRequest) -> None:
    metrics.NOTIFIES_SENT.labels(notify.event).inc()
    if notify.published_at:
        metrics.PUBLISH_TO_NOTIFY_SECONDS.labels(notify.event).observe(
            max(0.0, time.time() - notify.published_at)
        )
