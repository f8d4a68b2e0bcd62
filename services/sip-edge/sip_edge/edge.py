"""The edge's request handling: parse, answer locally or hand to the bus, reply.

I/O enters through `datagram_received` / `stream_message_received` (called by
the transports) and `on_inbox_event` (called by the Kafka inbox loop); all SIP
decisions are made by the pure modules of presence.sip and sip_edge.checks.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from presence import events
from presence.settings import Settings
from presence.sip.message import (
    SipRequest,
    SipResponse,
    make_response,
    parse_event,
    parse_name_addr,
    parse_uri,
    parse_via,
)
from presence.sip.parser import SipParseError, parse_message, serialize
from presence.sip.routing import response_address, stamp_via
from presence.topics import Topics

from sip_edge.checks import LocalAnswer, check_request, options_answer
from sip_edge.transactions import TransactionTable, transaction_key

log = logging.getLogger(__name__)

# How long the edge waits for the store's reply before answering 503 itself.
STORE_REPLY_TIMEOUT = 8.0


@dataclass(frozen=True)
class Source:
    """Where a message came from, and how to answer it."""

    transport: str  # "udp" or "tcp"
    host: str
    port: int
    # Sends bytes back: to an address over UDP, on the same connection over TCP.
    send: Callable[[bytes, tuple[str, int]], None]

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"

    def __str__(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"


class Edge:
    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.edge_id = settings.edge_name
        self._producer = producer
        self._topics = Topics.of(settings)
        self.transactions = TransactionTable()

    # --- incoming SIP ---------------------------------------------------------

    async def message_received(self, data: bytes, source: Source) -> None:
        """One complete SIP message (a datagram, or one framed from a TCP stream)."""
        try:
            message = parse_message(data, datagram=not source.reliable)
        except SipParseError as error:
            self._answer_unparsable(error, source)
            return
        if isinstance(message, SipResponse):
            return  # responses to our NOTIFYs: handled with client transactions
        if message.method == "ACK":
            return  # there are no INVITE transactions here to absorb it
        await self._request_received(message, source)

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
        lines = [f"SIP/2.0 {getattr(error, 'status', 400)} {error.reason}", f"Via: {via}"]
        for name in ("From", "To", "Call-ID", "CSeq"):
            value = headers.get(name)
            if value is not None:
                lines.append(f"{name}: {value}")
        lines += ["Content-Length: 0", "", ""]
        source.send("\r\n".join(lines).encode(), response_address(via, source.host, source.port))

    async def _request_received(self, request: SipRequest, source: Source) -> None:
        vias = request.headers.get_all("Via")
        top_via = parse_via(vias[0])
        if stamp_via(top_via, source.host, source.port):
            request.headers.set("Via", ", ".join([str(top_via), *vias[1:]]))
        from_tag = parse_name_addr(request.headers.get("From") or "").tag
        key = transaction_key(
            top_via.params.get("branch"),
            f"{top_via.host}:{top_via.port or ''}",
            request.method,
            call_id=request.headers.get("Call-ID") or "",
            cseq=request.headers.get("CSeq") or "",
            from_tag=from_tag,
        )
        now = time.monotonic()
        existing = self.transactions.find(key)
        if existing is not None:
            # A retransmission: never on the bus twice; repeat the last response.
            if existing.last_response is not None:
                self._send(existing.last_response, request, source)
            return
        transaction = self.transactions.start(key, secrets.token_hex(16), now)
        transaction.context.update(request=request, source=source)

        answer = options_answer() if request.method == "OPTIONS" else None
        answer = answer or check_request(request, min_expires=self.settings.min_expires)
        if answer is not None:
            self._reply(transaction.request_id, answer)
            return
        if request.method == "PUBLISH":
            await self._publish_to_bus(request, source, transaction.request_id)
        else:
            # SUBSCRIBE dialogs are not served yet (issue 5); say so honestly.
            self._reply(transaction.request_id, LocalAnswer(501, "SUBSCRIBE not implemented yet"))

    async def _publish_to_bus(self, request: SipRequest, source: Source, request_id: str) -> None:
        uri = parse_uri(request.uri)
        if not uri.user:
            self._reply(request_id, LocalAnswer(404, "No presentity in Request-URI"))
            return
        package, _ = parse_event(request.headers.get("Event") or "")
        expires = request.headers.get("Expires")
        event = events.PublishRequest(
            request_id=request_id,
            edge_id=self.edge_id,
            received_at=time.time(),
            username=uri.user,
            domain=uri.host.lower(),
            event=package,
            expires=int(expires) if expires is not None else None,
            if_match=request.headers.get("SIP-If-Match"),
            content_type=request.headers.get("Content-Type"),
            body=request.body.decode("utf-8", errors="replace"),
            source=str(source),
        )
        await self._producer.send(
            self._topics.requests, events.encode(event), key=event.presentity.encode()
        )

    # --- replies --------------------------------------------------------------

    def on_inbox_event(self, event: events.Event) -> None:
        if isinstance(event, events.SipReply):
            self._reply(event.request_id, LocalAnswer(event.status, event.reason, event.headers))

    def _reply(self, request_id: str, answer: LocalAnswer) -> None:
        transaction = self.transactions.by_request_id(request_id)
        if transaction is None or transaction.final:
            return  # the transaction ended (or the edge restarted) meanwhile
        request = transaction.context["request"]
        source = transaction.context["source"]
        assert isinstance(request, SipRequest) and isinstance(source, Source)
        to_tag = None if answer.status == 100 else secrets.token_hex(8)
        response = make_response(
            request, answer.status, answer.reason, to_tag=to_tag, headers=answer.headers
        )
        data = serialize(response)
        self._send(data, request, source)
        self.transactions.respond(
            transaction,
            data,
            final=answer.status >= 200,
            reliable=source.reliable,
            now=time.monotonic(),
        )

    def _send(self, data: bytes, request: SipRequest, source: Source) -> None:
        via = parse_via(request.headers.get_all("Via")[0])
        source.send(data, response_address(via, source.host, source.port))

    def expire_transactions(self) -> None:
        """Called periodically: end old transactions, answer those the store left hanging."""
        for transaction in self.transactions.expire(
            time.monotonic(), give_up_after=STORE_REPLY_TIMEOUT
        ):
            log.warning(
                "no reply from presence-store for %s; answering 503", transaction.request_id
            )
            self._reply(
                transaction.request_id,
                LocalAnswer(503, "Store Unavailable", [("Retry-After", "5")]),
            )
