"""Three notifier replicas, one of them stopped mid-way: every watcher still sees its
NOTIFYs in order (CSeq strictly increasing, never an older state after a newer one,
never two in flight) and ends with the latest state."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest
from lxml import etree

from presence.sip.grammar import parse_name_addr
from presence.sip.message import SipRequest, SipResponse
from presence.sip.parser import SipParseError, parse_message, serialize
from presence.sip.responses import make_response

from .conftest import Stack
from .sip_client import SipClient, new_branch

pytestmark = pytest.mark.integration

WATCHERS = 5
CHANGES = 30
PIDF_NS = "{urn:ietf:params:xml:ns:pidf}"


class Watcher(asyncio.DatagramProtocol):
    """A phone that subscribes, then answers each NOTIFY after a short while."""

    def __init__(self, server: tuple[str, int], presentity: str) -> None:
        self.server = server
        self.presentity = presentity
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.subscribed: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self.notes: list[str] = []  # the state carried by each new NOTIFY, in arrival order
        self.cseqs: list[int] = []
        self.outstanding: int | None = None  # CSeq of the NOTIFY not yet answered
        self.overlaps = 0  # a new NOTIFY while another was unanswered

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    def subscribe(self) -> None:
        lines = [
            f"SUBSCRIBE {self.presentity} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={new_branch()};rport",
            "Max-Forwards: 70",
            f"From: <sip:w{self.port}@example.com>;tag={secrets.token_hex(4)}",
            f"To: <{self.presentity}>",
            f"Call-ID: {secrets.token_hex(8)}",
            "CSeq: 1 SUBSCRIBE",
            f"Contact: <sip:w@127.0.0.1:{self.port}>",
            "Event: presence",
            "Expires: 600",
            "Content-Length: 0",
            "",
            "",
        ]
        assert self.transport is not None
        self.transport.sendto("\r\n".join(lines).encode(), self.server)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            message = parse_message(data)
        except SipParseError:
            return
        if isinstance(message, SipResponse):
            if message.status >= 200 and not self.subscribed.done():
                self.subscribed.set_result(message)
            return
        cseq = int((message.headers.get("CSeq") or "0").split()[0])
        if self.cseqs and cseq == self.cseqs[-1]:
            return  # a retransmission: the answer is on its way
        if self.outstanding is not None:
            self.overlaps += 1
        self.outstanding = cseq
        self.cseqs.append(cseq)
        root = etree.fromstring(message.body)
        self.notes.append(root.findtext(f"{PIDF_NS}note") or "")
        asyncio.get_running_loop().call_later(0.02, self._answer, message, addr)

    def _answer(self, notify: SipRequest, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(serialize(make_response(notify, 200)), addr)
        self.outstanding = None


def replica_handling(stack: Stack, presentity: str) -> str | None:
    """The running notifier replica whose log shows it notifying the presentity."""
    needle = f"presentity_changed {presentity.removeprefix('sip:')}"
    for name, process in stack.processes.items():
        if name.startswith("notifier") and needle in process.log():
            return name
    return None


def publish(client: SipClient, presentity: str, note: str, etag: str | None) -> SipResponse:
    body = (
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{presentity}">'
        f'<tuple id="t"><status><basic>open</basic></status></tuple><note>{note}</note></presence>'
    ).encode()
    headers = [("Event", "presence"), ("Content-Type", "application/pidf+xml")]
    if etag:
        headers.append(("SIP-If-Match", etag))
    return client.transact(client.request("PUBLISH", presentity, headers, body))


async def test_ordered_notifies_across_three_replicas_and_a_rebalance(
    three_notifiers: Stack,
) -> None:
    stack = three_notifiers
    presentity = f"sip:busy-{secrets.token_hex(3)}@example.com"
    loop = asyncio.get_running_loop()
    watchers = []
    for _ in range(WATCHERS):
        _, watcher = await loop.create_datagram_endpoint(
            lambda: Watcher(stack.sip, presentity), local_addr=("127.0.0.1", 0)
        )
        watcher.subscribe()
        response = await asyncio.wait_for(watcher.subscribed, 10)
        assert response.status == 200
        assert parse_name_addr(response.headers.get("To") or "").tag
        watchers.append(watcher)

    publisher = SipClient(stack.sip, "udp")
    try:
        etag = None
        for change in range(CHANGES):
            if change == CHANGES // 2:
                # The replica that owns the presentity's partition leaves mid-way: the
                # partition moves to another while changes keep coming.
                owner = replica_handling(stack, presentity)
                await asyncio.to_thread(stack.stop, owner)
            response = await asyncio.to_thread(publish, publisher, presentity, str(change), etag)
            assert response.status == 200
            etag = response.headers.get("SIP-ETag")
    finally:
        publisher.close()

    final_state = str(CHANGES - 1)
    deadline = time.monotonic() + 30
    while not all(w.notes and w.notes[-1] == final_state for w in watchers):
        assert time.monotonic() < deadline, [w.notes for w in watchers]
        await asyncio.sleep(0.05)
    assert replica_handling(stack, presentity) not in (None, owner)  # the work moved
    for watcher in watchers:
        assert watcher.cseqs == sorted(set(watcher.cseqs)), f"{watcher.cseqs} {watcher.notes}"
        states = [int(note) for note in watcher.notes if note]
        assert states == sorted(states), states  # never older after newer
        assert watcher.overlaps == 0  # never two NOTIFYs of the dialog in flight
        assert watcher.transport is not None
        watcher.transport.close()
