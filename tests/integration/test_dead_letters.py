"""Record isolation on the real stack: a record that fails every time costs only
itself. Among 1,000 good PUBLISHes, a request the store cannot handle and a change
the notifier cannot turn into a NOTIFY (each from a producer of another version,
each keyed by a presentity the good ones publish too) are tried a few times,
dead-lettered once and (the request) answered 500; every good PUBLISH is answered
200 and its watchers notified; `presencectl dead-letters` lists both."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from presence.bus import events
from presence.bus.topics import Topics
from presence.runtime.kafka import ensure_topics
from presence.sip.grammar import parse_name_addr
from presence.sip.message import SipRequest, SipResponse
from tests.integration.conftest import Stack, bus_records, metric_samples, running_stack
from tests.integration.sip_client import SipClient

TOKEN = "dead-letters-" + secrets.token_hex(8)
GOOD_PUBLISHES = 1000
WATCHED = 50  # of the good presentities, those with a watcher
RATE = 200  # good PUBLISHes per second


@pytest.fixture(scope="module")
def stack(test_database: str) -> Iterator[Stack]:
    with running_stack(
        test_database, PRESENCE_FORCE_ACTIVE="1", PRESENCE_ADMIN_TOKEN=TOKEN
    ) as running:
        yield running


def pidf(entity: str, tuple_id: str, note: str) -> bytes:
    return (
        f'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{entity}">'
        f'<tuple id="{tuple_id}"><status><basic>open</basic></status>'
        f"<note>{note}</note></tuple></presence>"
    ).encode()


def publish_request(client: SipClient, presentity: str, body: bytes) -> bytes:
    headers = [("Event", "presence"), ("Expires", "600"), ("Content-Type", "application/pidf+xml")]
    return client.request("PUBLISH", presentity, headers, body)


def subscribe(client: SipClient, presentity: str) -> SipResponse:
    headers = [
        ("Event", "presence"),
        ("Contact", f"<sip:w@127.0.0.1:{client.local_port}>"),
        ("Expires", "600"),
    ]
    return client.transact(
        client.request("SUBSCRIBE", presentity, headers, from_uri="sip:watcher@example.com")
    )


def publish_paced(
    stack: Stack, presentities: list[str], notes: dict[str, str], halfway: threading.Event
) -> dict[str, int]:
    """PUBLISH each presentity once, at RATE per second, from one UDP socket, setting
    `halfway` when half are sent; the final status of each, by presentity (missing:
    no final answer within the deadline)."""
    client = SipClient(stack.sip, "udp")
    by_call: dict[str, str] = {}
    statuses: dict[str, int] = {}

    def collect(until: float) -> None:
        while len(statuses) < len(by_call):
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            try:
                message = client.receive(min(remaining, 0.05))
            except TimeoutError:
                continue
            if isinstance(message, SipResponse) and message.status >= 200:
                presentity = by_call.get(message.headers.get("Call-ID") or "")
                if presentity is not None:
                    statuses[presentity] = message.status

    try:
        started = time.monotonic()
        for index, presentity in enumerate(presentities):
            body = pidf(presentity, "t1", notes[presentity])
            request = publish_request(client, presentity, body)
            call_id = next(
                line.split(":", 1)[1].strip()
                for line in request.decode(errors="replace").split("\r\n")
                if line.startswith("Call-ID:")
            )
            by_call[call_id] = presentity
            client.send(request)
            if index == len(presentities) // 2:
                halfway.set()
            collect(until=started + (index + 1) / RATE)
        collect(until=time.monotonic() + 30)
    finally:
        client.close()
    return statuses


class Watcher:
    """One UDP socket holding many subscriptions: answers every NOTIFY 200 and keeps
    the bodies it got, by presentity (the NOTIFY's From)."""

    def __init__(self, stack: Stack) -> None:
        self.client = SipClient(stack.sip, "udp")
        self.bodies: dict[str, list[str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self, notify: SipRequest) -> None:
        self.client.answer(notify)
        presentity = parse_name_addr(notify.headers.get("From") or "").uri
        self.bodies.setdefault(str(presentity), []).append(notify.body.decode(errors="replace"))

    def start(self) -> None:
        for stashed in self.client._requests:
            self.take(stashed)
        self.client._requests.clear()

        def run() -> None:
            while not self._stop.is_set():
                try:
                    message = self.client.receive(0.1)
                except TimeoutError:
                    continue
                if isinstance(message, SipRequest):
                    self.take(message)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def notified(self, presentity: str, marker: str) -> bool:
        return any(marker in body for body in self.bodies.get(presentity, []))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.client.close()


async def put_on_bus(stack: Stack, topic: str, key: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.env["PRESENCE_KAFKA_BOOTSTRAP"])
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


async def replies_in(stack: Stack, edge_id: str, count: int) -> list[events.SipReply]:
    topics = Topics(stack.env["PRESENCE_KAFKA_NAMESPACE"])
    found = await bus_records(
        stack, topics.edge_inbox(edge_id), lambda e: isinstance(e, events.SipReply), count, 30
    )
    assert len(found) == count, f"{len(found)} of {count} replies"
    return [reply for reply in found if isinstance(reply, events.SipReply)]


def presencectl(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRESENCE_ADMIN_TOKEN": TOKEN}
    env["PRESENCECTL_URL"] = stack.http("presence-store", "")
    script = Path(sys.executable).parent / "presencectl"
    return subprocess.run([str(script), *args], env=env, capture_output=True, text=True, timeout=60)


def dead_letters(stack: Stack) -> list[dict[str, object]]:
    listed = presencectl(stack, "--json", "dead-letters", "--all")
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


async def test_poison_records_among_1000_good_ones_cost_only_themselves(stack: Stack) -> None:
    run = secrets.token_hex(3)
    good = [f"sip:good-{run}-{i}@example.com" for i in range(GOOD_PUBLISHES)]
    notes = {presentity: f"note-{secrets.token_hex(6)}" for presentity in good}
    watched = good[:: GOOD_PUBLISHES // WATCHED]
    topics = Topics(stack.env["PRESENCE_KAFKA_NAMESPACE"])
    # Both poisons share their key (so their partition) with a watched presentity
    # that the good PUBLISHes publish after them.
    victim = watched[-1].removeprefix("sip:")
    user, domain = victim.split("@")

    # The store's poison: a request from an edge of another version, whose arrival
    # time is not a number: the store fails on it every time.
    poison = events.PublishRequest(
        request_id=f"poison-{run}",
        edge_id=f"other-edge-{run}",
        received_at=time.time(),
        username=user,
        domain=domain,
        event="presence",
        expires=600,
        if_match=None,
        content_type="application/pidf+xml",
        body=pidf(watched[-1], "p", "poison").decode(),
        flow="udp:127.0.0.1:5999",
    )
    fields = json.loads(events.encode(poison))
    fields["received_at"] = "just now"
    poison_request = json.dumps(fields).encode()
    # The notifier's poison: a change from a store of a newer version, about the
    # watchers of an event package this notifier does not know.
    poison_change = events.encode(
        events.WatcherInfoChanged(
            username=user,
            domain=domain,
            package="dialog",
            watchers=[("a1b2", "sip:eve@example.com", "active", "subscribe")],
            cause="newer-store",
            received_at=time.time(),
        )
    )

    watcher = Watcher(stack)
    try:
        for presentity in watched:
            assert (await asyncio.to_thread(subscribe, watcher.client, presentity)).status == 200
        watcher.start()
        await ensure_topics(
            stack.env["PRESENCE_KAFKA_BOOTSTRAP"], {topics.edge_inbox(poison.edge_id): 1}
        )
        # The poisons go on the bus while the good PUBLISHes stream in, halfway.
        halfway = threading.Event()
        publishing = asyncio.create_task(
            asyncio.to_thread(publish_paced, stack, good, notes, halfway)
        )
        assert await asyncio.to_thread(halfway.wait, 30)
        await put_on_bus(stack, topics.requests, victim, poison_request)
        await put_on_bus(stack, topics.changes, victim, poison_change)
        statuses = await publishing
        assert len(statuses) == GOOD_PUBLISHES, f"{GOOD_PUBLISHES - len(statuses)} unanswered"
        refused = {p: s for p, s in statuses.items() if s != 200}
        assert not refused, f"not 200: {list(refused.items())[:5]} ({len(refused)})"

        deadline = time.monotonic() + 30
        while not all(watcher.notified(p, notes[p]) for p in watched):
            assert time.monotonic() < deadline, "watchers not notified: " + ", ".join(
                p for p in watched if not watcher.notified(p, notes[p])
            )
            await asyncio.sleep(0.1)

        # The poison request got its final answer: 500.
        (reply,) = await replies_in(stack, poison.edge_id, 1)
        assert (reply.request_id, reply.status, reply.reason) == (
            poison.request_id, 500, "Server Internal Error"
        )  # fmt: skip

        # Each poison is dead-lettered once, after its attempts.
        deadline = time.monotonic() + 30
        while len(letters := await asyncio.to_thread(dead_letters, stack)) < 2:
            assert time.monotonic() < deadline, f"dead letters: {letters}"
            await asyncio.sleep(0.2)
        by_service = {letter["service"]: letter for letter in letters}
        assert len(letters) == 2 and set(by_service) == {"presence-store", "notifier"}
        stored = by_service["presence-store"]
        assert (stored["topic"], stored["key"], stored["attempts"]) == (topics.requests, victim, 3)
        assert stored["value"] == poison_request.decode()
        assert str(stored["error"]).startswith("TypeError")
        notified = by_service["notifier"]
        assert (notified["topic"], notified["key"], notified["attempts"]) == (
            topics.changes, victim, 3
        )  # fmt: skip
        assert notified["value"] == poison_change.decode()

        # The same request again (a redelivery): its recorded answer, no new letter.
        await put_on_bus(stack, topics.requests, victim, poison_request)
        replies = await replies_in(stack, poison.edge_id, 2)
        assert [r.status for r in replies] == [500, 500]
        assert len(await asyncio.to_thread(dead_letters, stack)) == 2

        counted = metric_samples(stack, "presence-store", "presence_dead_letters_total")
        assert counted == {f'service="presence-store",topic="{topics.requests}"': 1.0}
        counted = metric_samples(stack, "notifier", "presence_dead_letters_total")
        assert counted == {f'service="notifier",topic="{topics.changes}"': 1.0}

        table = presencectl(stack, "dead-letters")
        assert table.returncode == 0, table.stderr
        assert "TypeError" in table.stdout and topics.changes in table.stdout
    finally:
        watcher.close()
