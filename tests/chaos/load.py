"""The fault suite's load: SIP user agents on real UDP sockets (asyncio).

Devices PUBLISH a numbered state of their presentity again and again; watchers
SUBSCRIBE to one presentity each, refresh their subscription now and then, and
answer the NOTIFYs they get (200 on their dialog, 481 on any other). Every
request is a RFC 3261 non-INVITE client transaction over UDP: retransmitted at
T1, 2*T1, ... T2 until a final response or Timer F (64*T1 = 32 s).

A request is *answered* when it got a final response; a 503 or 500 with
Retry-After is answered and retried after that many seconds (as a new request);
a request with no final response by Timer F is *lost* (and then retried, so that
the run converges).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field

from presence.sip.grammar import parse_name_addr, parse_via
from presence.sip.message import SipParseError, SipRequest, SipResponse
from presence.sip.parser import parse_message, serialize
from presence.sip.responses import make_response

T1 = 0.5
T2 = 4.0
TIMER_F = 64 * T1
DOMAIN = "chaos.test"
SEQ = re.compile(r"<note>seq-(\d+)</note>")


def seqs(body: bytes | str) -> set[int]:
    text = body.decode() if isinstance(body, bytes) else body
    return {int(found) for found in SEQ.findall(text)}


def pidf(user: str, seq: int) -> bytes:
    basic = "open" if seq % 2 else "closed"
    return (
        f'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
        f'entity="sip:{user}@{DOMAIN}"><tuple id="dev-{user}"><status><basic>{basic}</basic>'
        f"</status><note>seq-{seq}</note></tuple></presence>"
    ).encode()


@dataclass
class Stats:
    """Counts of one phase (one fault)."""

    sent: int = 0
    answered: int = 0
    unavailable: int = 0  # 503/500 answers (retried)
    timed_out: int = 0  # no final response by Timer F: lost
    statuses: Counter[int] = field(default_factory=Counter)
    # (monotonic start, status) of every answered PUBLISH, to find recovery.
    publishes: list[tuple[float, float, int]] = field(default_factory=list)


class Recorder:
    """Where the agents count; the orchestrator switches phases."""

    def __init__(self) -> None:
        self.phase = Stats()

    def switch(self) -> Stats:
        self.phase = Stats()
        return self.phase


class Agent(asyncio.DatagramProtocol):
    """One UDP socket of a user agent: client transactions, and incoming requests."""

    def __init__(self, server: tuple[str, int], recorder: Recorder) -> None:
        self.server = server
        self.recorder = recorder
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self._waiting: dict[str, asyncio.Future[SipResponse]] = {}
        self._provisional: set[str] = set()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
        )
        self.port = self.transport.get_extra_info("sockname")[1]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            message = parse_message(data, datagram=True)
        except SipParseError:
            return
        if isinstance(message, SipResponse):
            vias = message.headers.get_all("Via")
            branch = parse_via(vias[0]).branch if vias else None
            waiter = self._waiting.get(branch or "")
            if waiter is None or waiter.done():
                return
            if message.status >= 200:
                waiter.set_result(message)
            else:
                self._provisional.add(branch or "")
        else:
            self.request_received(message, addr)

    def request_received(self, request: SipRequest, addr: tuple[str, int]) -> None:
        self.respond(request, 405)

    def respond(self, request: SipRequest, status: int) -> None:
        assert self.transport is not None
        via = parse_via(request.headers.get_all("Via")[0])
        address = (via.received or via.host, int(via.rport or via.port or 5060))
        self.transport.sendto(serialize(make_response(request, status)), address)

    def build(
        self,
        method: str,
        uri: str,
        headers: list[tuple[str, str]],
        body: bytes,
        *,
        branch: str,
        from_uri: str,
        from_tag: str,
        to_tag: str | None,
        call_id: str,
        cseq: int,
    ) -> bytes:
        to = f"<{uri}>" + (f";tag={to_tag}" if to_tag else "")
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <{from_uri}>;tag={from_tag}",
            f"To: {to}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            *(f"{name}: {value}" for name, value in headers),
            f"Content-Length: {len(body)}",
            "",
            "",
        ]
        return "\r\n".join(lines).encode() + body

    async def transact(self, build: callable) -> SipResponse | None:  # type: ignore[valid-type]
        """Send a request (built for a fresh branch) until its final response; None at
        Timer F. Counted in the phase it started in."""
        assert self.transport is not None
        stats = self.recorder.phase
        branch = "z9hG4bK" + secrets.token_hex(10)
        data = build(branch)
        waiter: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self._waiting[branch] = waiter
        stats.sent += 1
        started = time.monotonic()
        interval = T1
        try:
            while True:
                self.transport.sendto(data, self.server)
                remaining = started + TIMER_F - time.monotonic()
                if remaining <= 0:
                    stats.timed_out += 1
                    return None
                try:
                    response = await asyncio.wait_for(
                        asyncio.shield(waiter), min(interval, remaining)
                    )
                except TimeoutError:
                    interval = T2 if branch in self._provisional else min(interval * 2, T2)
                    continue
                stats.answered += 1
                stats.statuses[response.status] += 1
                if response.status in (500, 503):
                    stats.unavailable += 1
                return response
        finally:
            self._waiting.pop(branch, None)
            self._provisional.discard(branch)


def retry_after(response: SipResponse) -> float:
    value = response.headers.get("Retry-After") or "1"
    try:
        return float(value.split(";")[0].split("(")[0].strip())
    except ValueError:
        return 1.0


class Device(Agent):
    """Publishes seq 1, 2, 3, ... of its presentity, each until it is accepted."""

    def __init__(self, user: str, server: tuple[str, int], recorder: Recorder) -> None:
        super().__init__(server, recorder)
        self.user = user
        self.aor = f"sip:{user}@{DOMAIN}"
        self.seq = 0
        self.accepted = 0  # the last seq answered 200: the state watchers must end with
        self.etag: str | None = None
        self.unexpected: list[str] = []

    async def publish_next(self) -> None:
        self.seq += 1
        while True:
            etag = self.etag
            headers = [
                ("Event", "presence"),
                ("Expires", "3600"),
                ("Content-Type", "application/pidf+xml"),
            ]
            if etag:
                headers.append(("SIP-If-Match", etag))
            call_id = secrets.token_hex(8)
            started = time.monotonic()
            response = await self.transact(
                lambda branch, headers=headers, call_id=call_id: self.build(
                    "PUBLISH",
                    self.aor,
                    headers,
                    pidf(self.user, self.seq),
                    branch=branch,
                    from_uri=self.aor,
                    from_tag=secrets.token_hex(4),
                    to_tag=None,
                    call_id=call_id,
                    cseq=1,
                )
            )
            if response is None:
                continue  # lost (counted); a phone would try again
            self.recorder.phase.publishes.append((started, time.monotonic(), response.status))
            if response.status == 200:
                self.etag = response.headers.get("SIP-ETag")
                self.accepted = self.seq
                return
            if response.status == 412:
                self.etag = None  # the publication is gone: publish afresh
                continue
            if response.status in (500, 503):
                await asyncio.sleep(retry_after(response))
                continue
            self.unexpected.append(f"PUBLISH {self.user} -> {response.status} {response.reason}")
            await asyncio.sleep(1)


@dataclass
class Dialog:
    call_id: str
    from_tag: str
    remote_tag: str | None = None
    cseq: int = 1
    # CSeq -> (seqs shown, Subscription-State) of every NOTIFY received in it.
    notifies: dict[int, tuple[set[int], str]] = field(default_factory=dict)


class Watcher(Agent):
    """Subscribes to one presentity and keeps the subscription alive."""

    def __init__(
        self,
        user: str,
        presentity: str,
        server: tuple[str, int],
        recorder: Recorder,
        *,
        answer_delay: float = 0.0,
    ) -> None:
        super().__init__(server, recorder)
        # A slow phone (seconds to answer a NOTIFY) keeps the edge's next NOTIFY of
        # the dialog queued behind the one in flight.
        self.answer_delay = answer_delay
        self.user = user
        self.uri = f"sip:{user}@{DOMAIN}"
        self.presentity = presentity
        self.target = f"sip:{presentity}@{DOMAIN}"
        self.dialog: Dialog | None = None
        self.rejected_notifies = 0
        self.unexpected: list[str] = []

    def last_seen(self) -> set[int] | None:
        """The state shown by the newest NOTIFY of the current dialog."""
        if self.dialog is None or not self.dialog.notifies:
            return None
        return self.dialog.notifies[max(self.dialog.notifies)][0]

    def request_received(self, request: SipRequest, addr: tuple[str, int]) -> None:
        if request.method != "NOTIFY":
            self.respond(request, 405)
            return
        dialog = self.dialog
        remote = parse_name_addr(request.headers.get("From") or "").tag
        if (
            dialog is None
            or request.headers.get("Call-ID") != dialog.call_id
            or (dialog.remote_tag is not None and remote != dialog.remote_tag)
        ):
            self.rejected_notifies += 1
            self.respond(request, 481)
            return
        dialog.remote_tag = remote
        cseq = int((request.headers.get("CSeq") or "0").split()[0])
        state = request.headers.get("Subscription-State") or ""
        dialog.notifies[cseq] = (seqs(request.body), state)
        if self.answer_delay:
            asyncio.get_running_loop().call_later(self.answer_delay, self.respond, request, 200)
        else:
            self.respond(request, 200)
        if state.lower().startswith("terminated"):
            self.dialog = None  # subscribe again at the next refresh

    async def subscribe(self) -> None:
        """An initial SUBSCRIBE when there is no dialog, else a refresh; until 200."""
        while True:
            if self.dialog is None:
                self.dialog = Dialog(secrets.token_hex(8), secrets.token_hex(4))
            dialog = self.dialog
            dialog.cseq += 1
            headers = [
                ("Event", "presence"),
                ("Accept", "application/pidf+xml"),
                ("Expires", "3600"),
                ("Contact", f"<sip:{self.user}@127.0.0.1:{self.port}>"),
            ]
            cseq = dialog.cseq
            response = await self.transact(
                lambda branch, cseq=cseq, dialog=dialog, headers=headers: self.build(
                    "SUBSCRIBE",
                    self.target,
                    headers,
                    b"",
                    branch=branch,
                    from_uri=self.uri,
                    from_tag=dialog.from_tag,
                    to_tag=dialog.remote_tag,
                    call_id=dialog.call_id,
                    cseq=cseq,
                )
            )
            if response is None:
                continue
            if response.status == 200:
                tag = parse_name_addr(response.headers.get("To") or "").tag
                if dialog.remote_tag is None:
                    dialog.remote_tag = tag
                return
            if response.status == 481:  # the dialog is gone: a new one
                self.dialog = None
                continue
            if response.status in (500, 503):
                await asyncio.sleep(retry_after(response))
                if dialog.remote_tag is None:
                    # Nothing established: a new initial request, as a phone would.
                    self.dialog = None
                continue
            self.unexpected.append(f"SUBSCRIBE {self.user} -> {response.status}")
            await asyncio.sleep(1)
