"""The edge's SIP core, without I/O: what to do with each message, bus event and timer.

The caller (sip_edge.edge, the asyncio adapter) feeds it inputs with the time as an
argument -- `receive` (a datagram or a framed stream message), `inbox_event` (a
reply from the store, a NOTIFY from the notifier), `handle_timer`, and the ends of
what it asked for (`resolved`, `delivery_failed`, `produce_failed`) -- and gets back
ACTIONS to carry out: send bytes, produce a bus event, look up a name, transmit a
NOTIFY, stop a delivery. `next_timer` says when `handle_timer` is next due. The
core reads no clock, opens no socket, talks to no Kafka and starts no task, so its
timers (E, F, J, the store's reply deadline, the 100 over UDP, NOTIFY pacing) are
tested by passing times.

`now` is a monotonic clock (the transactions' timers); `wall` (in `receive`) is
the wall clock the bus events and nonces carry.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import secrets
from dataclasses import dataclass, replace

from presence.bus import events
from presence.runtime import metrics
from presence.runtime.logs import correlated, correlation
from presence.sip.answers import Answer
from presence.sip.grammar import parse_name_addr, parse_via
from presence.sip.message import SipParseError, SipRequest, SipResponse
from presence.sip.parser import parse_message, serialize
from presence.sip.responses import make_response
from presence.sip.routing import response_address, stamp_via
from sip_edge.admission import Admission
from sip_edge.authentication import authenticate
from sip_edge.checks import check_request, input_defect, options_answer
from sip_edge.client_transactions import ClientTransaction, ClientTransactions
from sip_edge.inbox import InboxProgress
from sip_edge.notify import Hop, build_notify, next_hop
from sip_edge.notify_pacing import NotifyPacer
from sip_edge.notify_targets import DENIED_REASON, denied_target, ip_literal, is_denied
from sip_edge.policy import EdgePolicy
from sip_edge.requests import (
    publish_event,
    register_event,
    strip_own_routes,
    subscribe_event,
)
from sip_edge.source import Address, Source
from sip_edge.transactions import ServerTransaction, TransactionTable, transaction_key

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
STORE_UNAVAILABLE = Answer(503, "Store Unavailable", [("Retry-After", "5")])
# Retry-After of an overload refusal, drawn per request so that refused clients
# do not all come back in the same second.
OVERLOAD_RETRY_AFTER = (1, 5)
# A password in a URI's user part (deprecated, RFC 3261 §19.1.1) never reaches a log.
_URI_PASSWORD = re.compile(r"^(sips?:[^:@;]*):[^@]*@")


# --- actions: what the caller carries out -----------------------------------------


@dataclass(frozen=True)
class SendResponse:
    """Bytes back over the flow a request came on (`source.send`), to `address`."""

    source: Source
    data: bytes
    address: Address


@dataclass(frozen=True)
class Produce:
    """Put an event on the bus, under `correlation` (the records carry it). When the
    send fails at once, the caller reports `produce_failed(request_id)`."""

    topic: str
    event: events.Event
    key: str
    request_id: str | None
    correlation: str


@dataclass(frozen=True)
class Resolve:
    """Look up a NOTIFY's next hop; report `resolved` or `delivery_failed`."""

    branch: str
    host: str
    port: int


@dataclass(frozen=True)
class Transmit:
    """Send (`first`) or resend a NOTIFY: a datagram over UDP, else over a connection
    of `transport` (opened if need be; TLS verified as `server_name`); report a
    failure with `delivery_failed`."""

    branch: str
    transport: str
    address: Address
    data: bytes
    server_name: str
    notify: events.NotifyRequest
    first: bool


@dataclass(frozen=True)
class CancelDelivery:
    """Timer F ended a NOTIFY: stop its lookup, connect or write if still under way."""

    branch: str


Action = SendResponse | Produce | Resolve | Transmit | CancelDelivery


# --- what the core keeps with its transactions --------------------------------------


@dataclass(frozen=True)
class IncomingRequest:
    """A server transaction's request, and the flow its responses go back over."""

    request: SipRequest
    source: Source


@dataclass
class NotifyDelivery:
    """A NOTIFY client transaction's request and where it goes (the address once its
    next hop resolved)."""

    notify: events.NotifyRequest
    hop: Hop
    address: Address | None = None


class EdgeCore:
    def __init__(self, policy: EdgePolicy) -> None:
        self.policy = policy
        timers = policy.timers
        self.transactions: TransactionTable[IncomingRequest] = TransactionTable(timers)
        self.client_transactions: ClientTransactions[NotifyDelivery] = ClientTransactions(timers)
        self.admission = Admission(queue_delay=policy.queue_delay, min_backlog=policy.min_backlog)
        self.pacer = NotifyPacer(min_interval=policy.notify_min_interval, memory=64 * timers.t1)
        self.inbox = InboxProgress()
        # False while Kafka is known to be unreachable (set by the caller's bus check
        # and by failed sends).
        self.bus_up = True
        # Set at SIGTERM: requests that start a transaction get 503; the sockets stay
        # open for the replies of those in flight and for retransmissions.
        self.draining = False
        # The correlation id (presence.runtime.logs) of each NOTIFY read from the inbox
        # and not done with yet: the pacer may send it later, outside the inbox's context.
        self._notify_correlation: dict[str, str] = {}
        self._actions: list[Action] = []

    # --- inputs -------------------------------------------------------------------

    def receive(self, data: bytes, source: Source, now: float, wall: float) -> list[Action]:
        """One complete SIP message (a datagram, or one framed from a stream)."""
        try:
            message = parse_message(data, datagram=source.message_bounded)
        except SipParseError as error:
            self._answer_unparsable(error, source)
            return self._take_actions()
        if isinstance(message, SipResponse):
            self._response_received(message, now)
        elif message.method != "ACK":  # no INVITE transactions here to absorb it
            self._request_received(message, source, now, wall)
        return self._take_actions()

    def inbox_event(
        self, event: events.Event, now: float, offset: int | None = None
    ) -> list[Action]:
        """One inbox record; `offset` (its position) is kept until its NOTIFY is done
        with, so that the inbox is committed only past finished NOTIFYs."""
        if isinstance(event, events.SipReply):
            self.admission.replied(now)
            answer = Answer(event.status, event.reason, event.headers, event.to_tag)
            self._reply(event.request_id, answer, now)
        elif isinstance(event, events.NotifyRequest):
            self._notify_received(event, now, offset)
        return self._take_actions()

    def handle_timer(self, now: float) -> list[Action]:
        """Whatever is due at `now`: NOTIFY retransmissions (Timer E) and timeouts
        (Timer F), paced NOTIFYs, the end of completed server transactions (Timer J),
        503 to requests the store did not answer in time, 100 to slow UDP requests."""
        retransmit, timed_out = self.client_transactions.due(now)
        for transaction in retransmit:
            delivery = transaction.context
            metrics.NOTIFY_RETRANSMISSIONS.labels(delivery.notify.event).inc()
            if delivery.address is not None:  # else its next hop is still being resolved
                self._transmit(transaction, delivery.address, first=False)
        for transaction in timed_out:
            self._emit(CancelDelivery(transaction.branch))
            self._client_transaction_ended(transaction, 408, "Request Timeout", now, "timeout")
        for notify in self.pacer.due(now):
            self._send_notify(notify, now)
        self.pacer.forget_idle(now)
        overdue = self.transactions.expire(now, give_up_after=events.REPLY_DEADLINE)
        for transaction in overdue:
            log.warning(
                "no reply from presence-store for %s; answering 503", transaction.request_id
            )
            self._reply(transaction.request_id, STORE_UNAVAILABLE, now)
        for transaction in self.transactions.unanswered_since(now - TRYING_AFTER_UDP):
            self._reply(transaction.request_id, Answer(100), now)
        return self._take_actions()

    def next_timer(self) -> float | None:
        """When `handle_timer` is next due (None: nothing to wait for)."""
        deadlines = [
            self.client_transactions.next_timer(),
            self.pacer.next_due(),
            self.transactions.next_deadline(
                give_up_after=events.REPLY_DEADLINE, silent_after=TRYING_AFTER_UDP
            ),
            self.pacer.next_forget(),
        ]
        return min((d for d in deadlines if d is not None), default=None)

    def resolved(self, branch: str, address: Address, now: float) -> list[Action]:
        """The next hop of a NOTIFY (a `Resolve`) has this address: send it there."""
        transaction = self.client_transactions.get(branch)
        if transaction is not None:  # else Timer F ended it meanwhile
            with correlated(self._notify_correlation.get(transaction.notify_id)):
                self._deliver(transaction, address, now)
        return self._take_actions()

    def delivery_failed(
        self, branch: str, status: int, reason: str, outcome: str, error: str, now: float
    ) -> list[Action]:
        """A NOTIFY could not be delivered: `outcome` (metrics) says why."""
        transaction = self.client_transactions.get(branch)
        if transaction is not None:  # else Timer F ended it already
            with correlated(self._notify_correlation.get(transaction.notify_id)):
                self._delivery_failed(transaction, status, reason, outcome, error, now)
        return self._take_actions()

    def produce_failed(self, request_id: str | None, now: float) -> list[Action]:
        """A `Produce` failed at once: Kafka is unreachable; its request gets 503."""
        self.set_bus_up(False)
        if request_id is not None:
            with correlated(request_id):
                self._reply(request_id, BUS_DOWN, now)
        return self._take_actions()

    def set_bus_up(self, up: bool) -> None:
        if up != self.bus_up:
            if up:
                log.warning("Kafka is reachable again: forwarding requests")
            else:
                log.warning("Kafka is unreachable: answering requests 503 until it is back")
        self.bus_up = up

    # --- incoming SIP -------------------------------------------------------------

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
        address = response_address(via, source.host, source.port)
        self._emit(SendResponse(source, "\r\n".join(lines).encode(), address))

    def _request_received(
        self, request: SipRequest, source: Source, now: float, wall: float
    ) -> None:
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
        transaction = self.transactions.start(
            key,
            request_id_of(key),
            now,
            context=IncomingRequest(request, source),
            reliable=source.reliable,
        )

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
                answer = options_answer(self.policy.rules)
            else:
                answer = check_request(request, self.policy.rules)
                if answer is None and request.method == "SUBSCRIBE":
                    answer = self._check_notify_target(request)
            if answer is not None:
                self._reply(transaction.request_id, answer, now)
            else:
                self._forward(request, source, transaction.request_id, now, wall)

    def _check_notify_target(self, request: SipRequest) -> Answer | None:
        """403 for a SUBSCRIBE whose NOTIFYs would go into a denied network."""
        host = denied_target(request, self.policy.denied_networks)
        if host is None:
            return None
        metrics.NOTIFY_TARGETS_DENIED.labels("subscribe").inc()
        log.info("SUBSCRIBE names a NOTIFY target in a denied network: %s", host)
        return Answer(403, DENIED_REASON)

    def _forward(
        self, request: SipRequest, source: Source, request_id: str, now: float, wall: float
    ) -> None:
        """Put the request on the bus as its typed event (or answer what cannot be)."""
        # This request's own transaction is already in the backlog count.
        if not self.admission.admits(self.transactions.unanswered() - 1, now):
            metrics.OVERLOAD_REFUSALS.labels(request.method).inc()
            retry_after = str(random.randint(*OVERLOAD_RETRY_AFTER))
            self._reply(request_id, Answer(503, "Overloaded", [("Retry-After", retry_after)]), now)
            return
        translate = TRANSLATORS[request.method]
        strip_own_routes(request, self.policy.own_addresses)
        sender = authenticate(
            request,
            source.host,
            self.policy.auth,
            wall,
            reliable=source.reliable,
            verified_peer=source.verified_peer,
        )
        if isinstance(sender, Answer):
            self._reply(request_id, sender, now)
            return
        event = translate(
            request,
            request_id=request_id,
            edge_id=self.policy.edge_id,
            flow=str(source),
            now=wall,
        )
        if isinstance(event, Answer):
            self._reply(request_id, event, now)
        elif not self.bus_up:
            self._reply(request_id, BUS_DOWN, now)
        else:
            event = replace(
                event,
                request_uri=request.uri,
                authorization=sender.authorization,
                identity=sender.identity,
            )
            self._produce(
                self.policy.topics.requests, event, key=event.presentity, request_id=request_id
            )

    # --- replies ------------------------------------------------------------------

    def _reply(self, request_id: str, answer: Answer, now: float) -> None:
        transaction = self.transactions.by_request_id(request_id)
        if transaction is None or transaction.final:
            return  # the transaction ended (or the edge restarted) meanwhile
        request, source = transaction.context.request, transaction.context.source
        # §8.2.6.2: a To-tag on every response but 100; the store's reply carries the
        # dialog's own tag when it creates one (SUBSCRIBE).
        to_tag = None if answer.status == 100 else answer.to_tag or secrets.token_hex(8)
        response = make_response(
            request, answer.status, answer.reason, to_tag=to_tag, headers=answer.headers
        )
        data = serialize(response)
        self._send_response(data, request, source)
        self.transactions.respond(
            transaction, data, final=answer.status >= 200, reliable=source.reliable, now=now
        )
        if answer.status >= 200:
            self._answered(transaction, answer, now - transaction.started_at)

    def _answered(
        self, transaction: ServerTransaction[IncomingRequest], answer: Answer, took: float
    ) -> None:
        """Count and log a final response (OPTIONS keep-alives only at DEBUG)."""
        request, source = transaction.context.request, transaction.context.source
        method = metrics.method_label(request.method)
        metrics.SIP_REQUESTS.labels(method, str(answer.status)).inc()
        metrics.SIP_TRANSACTION_SECONDS.labels(method).observe(took)
        level = logging.DEBUG if request.method == "OPTIONS" else logging.INFO
        if log.isEnabledFor(level):
            with correlated(transaction.request_id):
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
        self._emit(SendResponse(source, data, response_address(via, source.host, source.port)))

    # --- NOTIFYs: from the inbox, paced, sent, answered -----------------------------

    def _notify_received(
        self, notify: events.NotifyRequest, now: float, offset: int | None
    ) -> None:
        subscription = notify.subscription
        waiting = self.pacer.queued(subscription)
        if offset is not None:
            self.inbox.opened(notify.notify_id, offset)
        if correlation.get():
            self._notify_correlation[notify.notify_id] = correlation.get()
        ready = self.pacer.offer(notify, now)
        queued = self.pacer.queued(subscription)
        if waiting is not None and queued is not waiting:
            self._notify_done(waiting.notify_id)  # superseded by this newer state
        if ready is None and queued is not notify:
            self._notify_done(notify.notify_id)  # an older state: dropped
        if ready is not None:
            # The pacer keeps the dialog's order: nothing else of it is sent until
            # this one has its outcome.
            self._send_notify(ready, now)

    def _notify_done(self, notify_id: str) -> None:
        self.inbox.closed(notify_id)
        self._notify_correlation.pop(notify_id, None)

    def _send_notify(self, notify: events.NotifyRequest, now: float) -> None:
        """Start the client transaction of a NOTIFY the pacer released (one in flight
        per dialog): sent at once to an IP address, else once its next hop resolved."""
        with correlated(self._notify_correlation.get(notify.notify_id)):
            try:
                hop = next_hop(notify)
            except SipParseError as error:
                log.warning("NOTIFY %s has no next hop: %s", notify.notify_id, error)
                self._notify_ended(notify, 503, "Unresolvable Next Hop", now, "unroutable")
                return
            branch = "z9hG4bK" + secrets.token_hex(12)
            via = (
                f"SIP/2.0/{hop.transport.upper()} {self.policy.via_host}:"
                f"{self.policy.via_ports.get(hop.transport, 5060)};branch={branch};rport"
            )
            data = serialize(build_notify(notify, via))
            # The transaction starts before the lookup and the connect, so that Timer F
            # bounds them too (it then cancels the delivery and reports 408).
            transaction = self.client_transactions.start(
                branch,
                notify.notify_id,
                data,
                reliable=hop.transport != "udp",
                now=now,
                context=NotifyDelivery(notify, hop),
            )
            if ip_literal(hop.host) is not None:
                self._deliver(transaction, (hop.host.strip("[]"), hop.port), now)
            else:
                self._emit(Resolve(branch, hop.host, hop.port))

    def _deliver(
        self, transaction: ClientTransaction[NotifyDelivery], address: Address, now: float
    ) -> None:
        delivery = transaction.context
        hop = delivery.hop
        if not hop.from_flow and is_denied(address[0], self.policy.denied_networks):
            metrics.NOTIFY_TARGETS_DENIED.labels("notify").inc()
            # Ends like a target that never answers (408: the dialog ends by default).
            error = f"{hop.host} resolved to {address[0]}, in a denied network"
            self._delivery_failed(transaction, 408, DENIED_REASON, "denied", error, now)
            return
        delivery.address = address
        self._transmit(transaction, address, first=True)

    def _transmit(
        self, transaction: ClientTransaction[NotifyDelivery], address: Address, *, first: bool
    ) -> None:
        delivery = transaction.context
        self._emit(
            Transmit(
                transaction.branch,
                delivery.hop.transport,
                address,
                transaction.data,
                delivery.hop.host,
                delivery.notify,
                first,
            )
        )

    def _delivery_failed(
        self,
        transaction: ClientTransaction[NotifyDelivery],
        status: int,
        reason: str,
        outcome: str,
        error: str,
        now: float,
    ) -> None:
        """End a NOTIFY the edge could not deliver."""
        address = transaction.context.address
        log.info("NOTIFY %s to %s failed: %s", transaction.notify_id, address or "?", error)
        if self.client_transactions.response(transaction.branch, status, now):
            self._client_transaction_ended(transaction, status, reason, now, outcome)

    def _response_received(self, response: SipResponse, now: float) -> None:
        vias = response.headers.get_all("Via")
        branch = parse_via(vias[0]).branch if vias else None
        if not branch:
            return
        transaction = self.client_transactions.response(branch, response.status, now)
        if transaction is not None and response.status >= 200:
            self._client_transaction_ended(transaction, response.status, response.reason, now)

    def _client_transaction_ended(
        self,
        transaction: ClientTransaction[NotifyDelivery],
        status: int,
        reason: str,
        now: float,
        outcome: str | None = None,
    ) -> None:
        self._notify_ended(transaction.context.notify, status, reason, now, outcome)

    def _notify_ended(
        self,
        notify: events.NotifyRequest,
        status: int,
        reason: str,
        now: float,
        outcome: str | None = None,
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
            self._report_outcome(notify, status, reason, now)

    def _report_outcome(
        self, notify: events.NotifyRequest, status: int, reason: str, now: float
    ) -> None:
        outcome = events.NotifyOutcome.of(notify, status, reason)
        # Only what ends a subscription matters to the store: a delivered NOTIFY of a
        # live subscription (nearly all of them) costs no bus record.
        if outcome.ends_subscription(timeout_ends=self.policy.timeout_ends_subscription):
            self._produce(self.policy.topics.notify_outcomes, outcome, key=notify.presentity)
        self._notify_done(notify.notify_id)
        following = self.pacer.finished(notify.subscription, now)
        if following is not None:
            self._send_notify(following, now)

    # --- helpers ------------------------------------------------------------------

    def _produce(
        self, topic: str, event: events.Event, *, key: str, request_id: str | None = None
    ) -> None:
        self._emit(Produce(topic, event, key, request_id, correlation.get()))

    def _emit(self, action: Action) -> None:
        self._actions.append(action)

    def _take_actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions


def request_id_of(key: tuple[str, ...]) -> str:
    """The bus id of the request of a server transaction: the same for every copy."""
    return hashlib.sha256("\x00".join(key).encode()).hexdigest()[:32]
