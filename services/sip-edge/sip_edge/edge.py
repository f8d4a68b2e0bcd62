"""The edge's SIP handling: parse, answer locally or hand to the bus, reply; send NOTIFYs.

I/O enters through `message_received` (called by the transports), `on_inbox_event`
(the Kafka inbox loop) and `tick` (a timer); all SIP decisions are made by pure
modules: presence.sip, sip_edge.checks, sip_edge.transactions,
sip_edge.client_transactions and sip_edge.notify.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import secrets
import socket
import time
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

from aiokafka import AIOKafkaProducer

from presence.bus import events
from presence.bus.topics import Topics
from presence.runtime import metrics
from presence.runtime.logs import correlated, correlation
from presence.settings import Settings
from presence.sip.answers import Answer
from presence.sip.grammar import parse_name_addr, parse_uri, parse_via
from presence.sip.message import SipParseError, SipRequest, SipResponse
from presence.sip.parser import parse_message, serialize
from presence.sip.responses import make_response
from presence.sip.routing import response_address, stamp_via
from sip_edge.admission import Admission
from sip_edge.authentication import authenticate
from sip_edge.checks import check_request, input_defect, options_answer
from sip_edge.client_transactions import ClientTransaction, ClientTransactions
from sip_edge.inbox import InboxProgress
from sip_edge.notify import build_notify, next_hop
from sip_edge.notify_pacing import NotifyPacer
from sip_edge.notify_targets import DENIED_REASON, denied_target, is_denied
from sip_edge.requests import (
    publish_event,
    register_event,
    strip_own_routes,
    subscribe_event,
)
from sip_edge.resolver import Resolver, ResolveTimeout
from sip_edge.transactions import TransactionTable, transaction_key
from sip_edge.transport import (
    ConnectionLimit,
    ConnectTimeout,
    FlowFailed,
    Source,
    TcpConnections,
    UdpEndpoint,
    WriteBufferFull,
)

log = logging.getLogger(__name__)

TRANSLATORS = {
    "PUBLISH": publish_event,
    "REGISTER": register_event,
    "SUBSCRIBE": subscribe_event,
}
# RFC 4320 §4.1: no 100 to a non-INVITE over UDP before the client's Timer E has
# grown to T2 (0.5 + 1 + 2 s); after that a 100 quenches its retransmissions.
TRYING_AFTER_UDP = 3.5
# While Kafka is unreachable, requests are answered at once instead of after
# REPLY_DEADLINE: nothing could carry them to the store.
BUS_DOWN = Answer(503, "Service Unavailable", [("Retry-After", "5")])
SHUTTING_DOWN = Answer(503, "Shutting Down", [("Retry-After", "5")])
# Retry-After of an overload refusal, drawn per request so that refused clients
# do not all come back in the same second.
OVERLOAD_RETRY_AFTER = (1, 5)
# A password in a URI's user part (deprecated, RFC 3261 §19.1.1) never reaches a log.
_URI_PASSWORD = re.compile(r"^(sips?:[^:@;]*):[^@]*@")


class Edge:
    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.edge_id = settings.edge_name
        self._producer = producer
        self._topics = Topics.of(settings)
        self.transactions = TransactionTable()
        self.admission = Admission(
            queue_delay=settings.edge_queue_delay_ms / 1000,
            min_backlog=settings.edge_min_backlog,
        )
        self.client_transactions = ClientTransactions(settings.sip_t1_ms / 1000)
        self.pacer = NotifyPacer(
            min_interval=settings.notify_min_interval, memory=64 * settings.sip_t1_ms / 1000
        )
        self.udp: UdpEndpoint | None = None
        self.tcp: TcpConnections | None = None
        # TLS (outgoing connections always possible; listening with a certificate),
        # WebSocket and secure WebSocket (only when listening).
        self.tls: TcpConnections | None = None
        self.ws: TcpConnections | None = None
        self.wss: TcpConnections | None = None
        self.resolver = Resolver(settings.notify_dns_workers, settings.notify_dns_timeout_ms / 1000)
        self._denied_networks = settings.denied_notify_networks
        self._tasks: set[asyncio.Task[None]] = set()
        # False while Kafka is known to be unreachable (set by watch_bus and failed sends).
        self.bus_up = True
        # Set at SIGTERM: requests that start a transaction get 503; the sockets stay
        # open for the replies of those in flight and for retransmissions.
        self.draining = False
        self.inbox = InboxProgress()
        self._pacer_cleaned_at = 0.0
        # The correlation id (presence.runtime.logs) of each NOTIFY read from the inbox and not
        # done with yet: the pacer may send it later, outside the inbox's context.
        self._notify_correlation: dict[str, str] = {}
        self._via_host, self._via_port = _advertised_address(settings)
        # The port each transport listens on, for the sent-by of our Vias.
        self._via_ports = {
            "udp": self._via_port,
            "tcp": self._via_port,
            "tls": settings.sip_tls_port or self._via_port,
            "ws": settings.sip_ws_port or self._via_port,
            "wss": settings.sip_wss_port or self._via_port,
        }
        self._own_addresses = {
            (host, port)
            for host in (self._via_host.strip("[]").lower(), settings.sip_host.lower())
            for port in {settings.sip_port, *self._via_ports.values()}
        }

    # --- incoming SIP ---------------------------------------------------------

    def message_received(self, data: bytes, source: Source) -> None:
        """One complete SIP message (a datagram, or one framed from a TCP stream)."""
        try:
            message = parse_message(data, datagram=source.message_bounded)
        except SipParseError as error:
            self._answer_unparsable(error, source)
            return
        if isinstance(message, SipResponse):
            self._response_received(message)
        elif message.method != "ACK":  # no INVITE transactions here to absorb it
            self._request_received(message, source)

    def _answer_unparsable(self, error: SipParseError, source: Source) -> None:
        """400 (or 505) naming the defect, when the Via says where to send it."""
        headers = error.headers
        if headers is None or not headers.get("Via"):
            log.info("dropped unparsable message from %s: %s", source, error.reason)
            return
        try:
            via = parse_via(headers.get_all("Via")[0])
        except SipParseError:
            log.info("dropped message with unusable Via from %s: %s", source, error.reason)
            return
        stamp_via(via, source.host, source.port)
        lines = [f"SIP/2.0 {error.status} {error.reason}", f"Via: {via}"]
        for name in ("From", "To", "Call-ID", "CSeq"):
            value = headers.get(name)
            if value is not None:
                lines.append(f"{name}: {value}")
        lines += ["Content-Length: 0", "", ""]
        source.send("\r\n".join(lines).encode(), response_address(via, source.host, source.port))

    def _request_received(self, request: SipRequest, source: Source) -> None:
        vias = request.headers.get_all("Via")
        top_via = parse_via(vias[0])
        if stamp_via(top_via, source.host, source.port):
            request.headers.set("Via", ", ".join([str(top_via), *vias[1:]]))
        key = transaction_key(
            top_via.branch,
            f"{top_via.host}:{top_via.port or ''}",
            request.method,
            call_id=request.headers.get("Call-ID") or "",
            cseq=request.headers.get("CSeq") or "",
            from_tag=parse_name_addr(request.headers.get("From") or "").tag,
        )
        existing = self.transactions.find(key)
        if existing is not None:
            # A retransmission: never on the bus twice; repeat the last response.
            if existing.last_response is not None:
                self._send_response(existing.last_response, request, source)
            return
        # The id is derived from the transaction key, so that a retransmission that
        # reaches a restarted edge (the first copy may be on the bus already) is
        # recognised by the store as the same request, answered and not applied twice.
        transaction = self.transactions.start(key, request_id_of(key), time.monotonic())
        transaction.context.update(request=request, source=source)

        # The transaction's id is its correlation id: the records it puts on the bus
        # carry it, and so the store's and notifier's logs of what it caused.
        with correlated(transaction.request_id):
            defect = input_defect(request)
            if defect is not None:
                # Text the store could not store or judge: refused here, at once, so
                # that it never reaches (and never stalls) the store's batches.
                metrics.INPUT_REFUSALS.labels(defect.metric_header, defect.kind).inc()
                answer: Answer | None = Answer(400, defect.reason)
            elif self.draining and request.method != "OPTIONS":
                # SIGTERM: no new work; the client retries elsewhere or after the restart.
                answer = SHUTTING_DOWN
            elif request.method == "OPTIONS":
                answer = options_answer(self.settings)
            else:
                answer = check_request(request, self.settings)
                if answer is None and request.method == "SUBSCRIBE":
                    answer = self._check_notify_target(request)
            if answer is not None:
                self._reply(transaction.request_id, answer)
            else:
                self._forward(request, source, transaction.request_id)

    def _check_notify_target(self, request: SipRequest) -> Answer | None:
        """403 for a SUBSCRIBE whose NOTIFYs would go into a denied network."""
        host = denied_target(request, self._denied_networks)
        if host is None:
            return None
        metrics.NOTIFY_TARGETS_DENIED.labels("subscribe").inc()
        log.info("SUBSCRIBE names a NOTIFY target in a denied network: %s", host)
        return Answer(403, DENIED_REASON)

    def _forward(self, request: SipRequest, source: Source, request_id: str) -> None:
        """Put the request on the bus as its typed event (or answer what cannot be)."""
        # This request's own transaction is already in the backlog count.
        if not self.admission.admits(self.transactions.unanswered() - 1, time.monotonic()):
            metrics.OVERLOAD_REFUSALS.labels(request.method).inc()
            retry_after = str(random.randint(*OVERLOAD_RETRY_AFTER))
            self._reply(request_id, Answer(503, "Overloaded", [("Retry-After", retry_after)]))
            return
        translate = TRANSLATORS[request.method]
        strip_own_routes(request, self._own_addresses)
        now = time.time()
        sender = authenticate(
            request,
            source.host,
            self.settings,
            now,
            reliable=source.reliable,
            verified_peer=source.verified_peer,
        )
        if isinstance(sender, Answer):
            self._reply(request_id, sender)
            return
        event = translate(
            request, request_id=request_id, edge_id=self.edge_id, flow=str(source), now=now
        )
        if isinstance(event, Answer):
            self._reply(request_id, event)
        elif not self.bus_up:
            self._reply(request_id, BUS_DOWN)
        else:
            event = replace(
                event,
                request_uri=request.uri,
                authorization=sender.authorization,
                identity=sender.identity,
            )
            self._produce(self._topics.requests, event, key=event.presentity, request_id=request_id)

    # --- replies --------------------------------------------------------------

    def _reply(self, request_id: str, answer: Answer) -> None:
        transaction = self.transactions.by_request_id(request_id)
        if transaction is None or transaction.final:
            return  # the transaction ended (or the edge restarted) meanwhile
        request = transaction.context["request"]
        source = transaction.context["source"]
        assert isinstance(request, SipRequest) and isinstance(source, Source)
        # §8.2.6.2: a To-tag on every response but 100; the store's reply carries the
        # dialog's own tag when it creates one (SUBSCRIBE).
        to_tag = None if answer.status == 100 else answer.to_tag or secrets.token_hex(8)
        response = make_response(
            request, answer.status, answer.reason, to_tag=to_tag, headers=answer.headers
        )
        data = serialize(response)
        self._send_response(data, request, source)
        now = time.monotonic()
        self.transactions.respond(
            transaction, data, final=answer.status >= 200, reliable=source.reliable, now=now
        )
        if answer.status >= 200:
            self._answered(request, source, answer, request_id, now - transaction.started_at)

    def _answered(
        self, request: SipRequest, source: Source, answer: Answer, request_id: str, took: float
    ) -> None:
        """Count and log a final response (OPTIONS keep-alives only at DEBUG)."""
        method = metrics.method_label(request.method)
        metrics.SIP_REQUESTS.labels(method, str(answer.status)).inc()
        metrics.SIP_TRANSACTION_SECONDS.labels(method).observe(took)
        level = logging.DEBUG if request.method == "OPTIONS" else logging.INFO
        if log.isEnabledFor(level):
            with correlated(request_id):
                log.log(
                    level,
                    "%s %s from %s -> %d %s (%.1f ms)",
                    request.method,
                    _URI_PASSWORD.sub(r"\1@", request.uri),
                    source,
                    answer.status,
                    answer.reason,
                    took * 1000,
                )

    def _send_response(self, data: bytes, request: SipRequest, source: Source) -> None:
        via = parse_via(request.headers.get_all("Via")[0])
        source.send(data, response_address(via, source.host, source.port))

    # --- the inbox: replies from the store, NOTIFYs from the notifier ----------

    async def on_inbox_event(self, event: events.Event, offset: int | None = None) -> None:
        """One inbox record; `offset` (its position) is kept until its NOTIFY is done
        with, so that the inbox is committed only past finished NOTIFYs."""
        if isinstance(event, events.SipReply):
            self.admission.replied(time.monotonic())
            answer = Answer(event.status, event.reason, event.headers, event.to_tag)
            self._reply(event.request_id, answer)
        elif isinstance(event, events.NotifyRequest):
            subscription = event.subscription
            waiting = self.pacer.queued(subscription)
            if offset is not None:
                self.inbox.opened(event.notify_id, offset)
            if correlation.get():
                self._notify_correlation[event.notify_id] = correlation.get()
            ready = self.pacer.offer(event, time.monotonic())
            queued = self.pacer.queued(subscription)
            if waiting is not None and queued is not waiting:
                self._notify_done(waiting.notify_id)  # superseded by this newer state
            if ready is None and queued is not event:
                self._notify_done(event.notify_id)  # an older state: dropped
            if ready is not None:
                # Sent by a task of its own: name lookups, connects and slow peers
                # never hold up the inbox (the replies to everyone else's requests).
                # The pacer keeps the dialog's order: nothing else of it is sent
                # until this one has its outcome.
                self._spawn(self.send_notify(ready))

    def _notify_done(self, notify_id: str) -> None:
        self.inbox.closed(notify_id)
        self._notify_correlation.pop(notify_id, None)

    async def send_notify(self, notify: events.NotifyRequest) -> None:
        """Send a NOTIFY the pacer released (one in flight per dialog)."""
        with correlated(self._notify_correlation.get(notify.notify_id)):
            await self._send_notify(notify)

    async def _send_notify(self, notify: events.NotifyRequest) -> None:
        try:
            hop = next_hop(notify)
        except SipParseError as error:
            log.warning("NOTIFY %s has no next hop: %s", notify.notify_id, error)
            self._notify_ended(notify, 503, "Unresolvable Next Hop", "unroutable")
            return
        branch = "z9hG4bK" + secrets.token_hex(12)
        via = (
            f"SIP/2.0/{hop.transport.upper()} {self._via_host}:{self._via_ports[hop.transport]}"
            f";branch={branch};rport"
        )
        data = serialize(build_notify(notify, via))
        # The transaction starts before the lookup and the connect, so that Timer F
        # bounds them too (tick() then cancels this task and reports 408).
        transaction = self.client_transactions.start(
            branch, notify.notify_id, data, reliable=hop.transport != "udp", now=time.monotonic()
        )
        transaction.context.update(
            notify=notify,
            transport=hop.transport,
            address=None,
            server_name=hop.host,
            task=asyncio.current_task(),
        )
        try:
            address = await self.resolver.resolve(hop.host, hop.port)
        except ResolveTimeout as error:
            self._delivery_failed(transaction, 408, "DNS Timeout", "dns_timeout", error)
            return
        except OSError as error:
            self._delivery_failed(transaction, 503, "Unresolvable Next Hop", "unroutable", error)
            return
        if not hop.from_flow and is_denied(address[0], self._denied_networks):
            metrics.NOTIFY_TARGETS_DENIED.labels("notify").inc()
            # Ends like a target that never answers (408: the dialog ends by default).
            error = OSError(f"{hop.host} resolved to {address[0]}, in a denied network")
            self._delivery_failed(transaction, 408, DENIED_REASON, "denied", error)
            return
        transaction.context["address"] = address
        if not await self._transmit(transaction):
            return
        metrics.NOTIFIES_SENT.labels(notify.event).inc()
        if notify.published_at:
            metrics.PUBLISH_TO_NOTIFY_SECONDS.labels(notify.event).observe(
                max(0.0, time.time() - notify.published_at)
            )

    async def _transmit(self, transaction: ClientTransaction) -> bool:
        """Send (or resend) a NOTIFY; False when it could not be (its outcome is
        reported) or its next hop is still being resolved."""
        address = transaction.context["address"]
        if address is None:
            return False  # a UDP retransmission due before the lookup finished
        assert isinstance(address, tuple)
        if transaction.context["transport"] == "udp":
            assert self.udp is not None
            self.udp.send(transaction.data, address)
            return True
        transport = transaction.context["transport"]
        connections = self.connections(str(transport))
        if connections is None:
            error = OSError(f"no {transport} transport here")
            self._delivery_failed(transaction, 503, "Unsupported Transport", "unroutable", error)
            return False
        try:
            server_name = transaction.context.get("server_name")
            await connections.send(
                transaction.data, address, server_name if isinstance(server_name, str) else None
            )
        except FlowFailed as error:
            # A WebSocket watcher is reachable over its own connection only (RFC 7118);
            # it is gone, and so is this dialog's way to it (RFC 5626 §5.3: 430).
            self._delivery_failed(transaction, 430, "Flow Failed", "flow_failed", error)
        except ConnectTimeout as error:
            self._delivery_failed(transaction, 408, "Connect Timeout", "connect_timeout", error)
        except WriteBufferFull as error:
            # The peer stopped reading: as good as a target that never answers.
            self._delivery_failed(transaction, 408, "Peer Not Reading", "write_buffer_full", error)
        except ConnectionLimit as error:
            self._delivery_failed(transaction, 503, "Too Many Connections", "overload", error)
        except OSError as error:
            if connections.transport in ("ws", "wss"):
                # The connection broke while this was written to it: the flow is gone.
                self._delivery_failed(transaction, 430, "Flow Failed", "flow_failed", error)
            else:
                # §8.1.3.1: a transport error is treated as a 503.
                self._delivery_failed(transaction, 503, "Transport Error", "transport_error", error)
        else:
            return True
        return False

    def connections(self, transport: str) -> TcpConnections | None:
        """The connections of a connection transport (None: not served here)."""
        return {"tcp": self.tcp, "tls": self.tls, "ws": self.ws, "wss": self.wss}.get(transport)

    def _delivery_failed(
        self,
        transaction: ClientTransaction,
        status: int,
        reason: str,
        outcome: str,
        error: BaseException,
    ) -> None:
        """End a NOTIFY the edge could not deliver (unless Timer F ended it already)."""
        address = transaction.context.get("address")
        log.info("NOTIFY %s to %s failed: %s", transaction.notify_id, address or "?", error)
        if self.client_transactions.response(transaction.branch, status, time.monotonic()):
            self._client_transaction_ended(transaction, status, reason, outcome)

    def _response_received(self, response: SipResponse) -> None:
        vias = response.headers.get_all("Via")
        branch = parse_via(vias[0]).branch if vias else None
        if not branch:
            return
        transaction = self.client_transactions.response(branch, response.status, time.monotonic())
        if transaction is not None and response.status >= 200:
            self._client_transaction_ended(transaction, response.status, response.reason)

    def _client_transaction_ended(
        self,
        transaction: ClientTransaction,
        status: int,
        reason: str,
        outcome: str | None = None,
    ) -> None:
        notify = transaction.context["notify"]
        assert isinstance(notify, events.NotifyRequest)
        self._notify_ended(notify, status, reason, outcome)

    def _notify_ended(
        self, notify: events.NotifyRequest, status: int, reason: str, outcome: str | None = None
    ) -> None:
        """`outcome` (metrics): delivered or rejected by the status, unless the edge
        ended it itself (timeout, transport_error, unroutable)."""
        outcome = outcome or ("delivered" if status < 300 else "rejected")
        metrics.NOTIFY_OUTCOMES.labels(notify.event, outcome).inc()
        with correlated(self._notify_correlation.get(notify.notify_id)):
            log.info(
                "NOTIFY %s of %s (%s) -> %d %s",
                notify.event,
                notify.presentity,
                notify.subscription,
                status,
                reason,
            )
            self._report_outcome(notify, status, reason)

    def _report_outcome(self, notify: events.NotifyRequest, status: int, reason: str) -> None:
        outcome = events.NotifyOutcome.of(notify, status, reason)
        # Only what ends a subscription matters to the store: a delivered NOTIFY of a
        # live subscription (nearly all of them) costs no bus record.
        if outcome.ends_subscription(
            timeout_ends=bool(self.settings.notify_timeout_ends_subscription)
        ):
            self._produce(self._topics.notify_outcomes, outcome, key=notify.presentity)
        self._notify_done(notify.notify_id)
        following = self.pacer.finished(notify.subscription, time.monotonic())
        if following is not None:
            self._spawn(self.send_notify(following))

    # --- timers ---------------------------------------------------------------

    def tick(self) -> None:
        """Called often (every few tens of ms): retransmit NOTIFYs, time them out."""
        retransmit, timed_out = self.client_transactions.due(time.monotonic())
        for transaction in retransmit:
            notify = transaction.context["notify"]
            assert isinstance(notify, events.NotifyRequest)
            metrics.NOTIFY_RETRANSMISSIONS.labels(notify.event).inc()
            self._spawn(self._transmit(transaction))
        for transaction in timed_out:
            task = transaction.context.get("task")
            if isinstance(task, asyncio.Task):
                task.cancel()  # still resolving, connecting or waiting to write
            self._client_transaction_ended(transaction, 408, "Request Timeout", "timeout")
        for notify in self.pacer.due(time.monotonic()):
            self._spawn(self.send_notify(notify))

    def sweep(self) -> None:
        """Called a few times a second: end server transactions past Timer J, quench
        slow requests with 100 and answer those the store abandoned."""
        now = time.monotonic()
        if now - self._pacer_cleaned_at > 5:
            self.pacer.forget_idle(now)
            self._pacer_cleaned_at = now
        for transaction in self.transactions.expire(now, give_up_after=events.REPLY_DEADLINE):
            log.warning(
                "no reply from presence-store for %s; answering 503", transaction.request_id
            )
            self._reply(
                transaction.request_id,
                Answer(503, "Store Unavailable", [("Retry-After", "5")]),
            )
        for transaction in self.transactions.unanswered_since(now - TRYING_AFTER_UDP):
            source = transaction.context["source"]
            if isinstance(source, Source) and not source.reliable:
                self._reply(transaction.request_id, Answer(100))

    # --- helpers --------------------------------------------------------------

    def _produce(
        self, topic: str, event: events.Event, *, key: str, request_id: str | None = None
    ) -> None:
        """Hand an event to Kafka without waiting for the acknowledgement. A send that
        fails at once answers its request (`request_id`) 503; a later failure is left
        to the transaction's timeout."""
        self._spawn(self._send_event(topic, event, key, request_id))

    async def _send_event(
        self, topic: str, event: events.Event, key: str, request_id: str | None
    ) -> None:
        try:
            await self._producer.send(topic, events.encode(event), key=key.encode())
        except Exception as error:
            log.error("could not put %s on %s: %s", event.TYPE, topic, error)
            self.set_bus_up(False)
            if request_id is not None:
                self._reply(request_id, BUS_DOWN)

    def set_bus_up(self, up: bool) -> None:
        if up != self.bus_up:
            if up:
                log.warning("Kafka is reachable again: forwarding requests")
            else:
                log.warning("Kafka is unreachable: answering requests 503 until it is back")
        self.bus_up = up

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("edge task failed", exc_info=task.exception())


def request_id_of(key: tuple[str, ...]) -> str:
    """The bus id of the request of a server transaction: the same for every copy."""
    return hashlib.sha256("\x00".join(key).encode()).hexdigest()[:32]


def _advertised_address(settings: Settings) -> tuple[str, int]:
    """The host:port the edge puts in its Via: where responses must come back."""
    if settings.server_address:
        uri = parse_uri(settings.server_address)
        return uri.host, uri.port or 5060
    host = settings.sip_host
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname()
    return (f"[{host}]" if ":" in host else host), settings.sip_port
