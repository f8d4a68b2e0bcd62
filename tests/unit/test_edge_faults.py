"""The edge under faults, without servers: Kafka unreachable, a restart mid-transaction,
a restart with NOTIFYs still queued (sip_edge.edge, sip_edge.inbox)."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka.errors import KafkaConnectionError

from presence import settings as settings_module
from presence.bus.events import NotifyRequest, decode
from presence.sip.parser import parse_message
from sip_edge.edge import Edge
from sip_edge.inbox import InboxProgress
from sip_edge.source import Source

PIDF = (
    b'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
    b'entity="sip:alice@example.com"><tuple id="t"><status><basic>open</basic>'
    b"</status></tuple></presence>"
)


class FakeProducer:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> object:
        if self.fail:
            raise KafkaConnectionError("Unable to connect to 127.0.0.1:19092")
        self.sent.append((topic, value))
        return asyncio.get_running_loop().create_future()


def make_edge(producer: FakeProducer) -> Edge:
    settings = settings_module.load({"PRESENCE_EDGE_ID": "e1", "PRESENCE_AUTH": "none"})
    return Edge(settings, producer)  # type: ignore[arg-type]


def publish(branch: str = "z9hG4bK-1") -> bytes:
    lines = [
        "PUBLISH sip:alice@example.com SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5099;branch={branch}",
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=1",
        "To: <sip:alice@example.com>",
        "Call-ID: c1",
        "CSeq: 1 PUBLISH",
        "Event: presence",
        "Content-Type: application/pidf+xml",
        f"Content-Length: {len(PIDF)}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + PIDF


def udp_source(sent: list[bytes]) -> Source:
    return Source("udp", "127.0.0.1", 5099, lambda data, _address: sent.append(data))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_bus_known_down_is_503_with_retry_after_at_once() -> None:
    producer = FakeProducer()
    edge = make_edge(producer)
    edge.set_bus_up(False)
    sent: list[bytes] = []
    edge.message_received(publish(), udp_source(sent))
    await settle()
    assert producer.sent == []
    response = parse_message(sent[-1])
    assert response.status == 503
    assert response.headers.get("Retry-After")


async def test_failed_send_is_503_at_once_and_marks_the_bus_down() -> None:
    producer = FakeProducer(fail=True)
    edge = make_edge(producer)
    sent: list[bytes] = []
    edge.message_received(publish(), udp_source(sent))
    await settle()
    assert [parse_message(data).status for data in sent] == [503]
    assert edge.bus_up is False
    producer.fail = False
    edge.set_bus_up(True)
    edge.message_received(publish("z9hG4bK-2"), udp_source(sent))
    await settle()
    assert len(producer.sent) == 1  # forwarded again once the bus is back


async def test_a_retransmission_reaching_a_restarted_edge_keeps_its_request_id() -> None:
    ids = []
    for _ in range(2):  # two edge processes, the second after the first died
        producer = FakeProducer()
        edge = make_edge(producer)
        edge.message_received(publish(), udp_source([]))
        await settle()
        ids.append(decode(producer.sent[0][1]).request_id)
    assert ids[0] == ids[1]


def notify(notify_id: str, cseq: int, subscription: str = "10a") -> NotifyRequest:
    return NotifyRequest(
        notify_id=notify_id,
        username="alice",
        domain="example.com",
        event="presence",
        subscription=subscription,
        request_uri="sip:bob@127.0.0.1:5098",
        route_set=[],
        headers=[
            ("From", f"<sip:alice@example.com>;tag={subscription}"),
            ("To", "<sip:bob@example.com>;tag=b1"),
            ("Call-ID", "c1"),
            ("CSeq", f"{cseq} NOTIFY"),
            ("Event", "presence"),
            ("Subscription-State", "active;expires=600"),
        ],
        body="",
        flow="",
    )


class FakeUdp:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        self.sent.append(data)


async def test_inbox_is_committed_only_past_finished_notifies() -> None:
    edge = make_edge(FakeProducer())
    edge.udp = FakeUdp()  # type: ignore[assignment]
    await edge.on_inbox_event(notify("n1", 1), offset=10)  # sent, in flight
    edge.inbox.consumed(10)
    await edge.on_inbox_event(notify("n2", 2), offset=11)  # queued behind n1
    edge.inbox.consumed(11)
    await edge.on_inbox_event(notify("n3", 3), offset=12)  # replaces n2 in the queue
    edge.inbox.consumed(12)
    await edge.on_inbox_event(notify("old", 2, "10b"), offset=13)  # another dialog
    edge.inbox.consumed(13)
    await settle()  # NOTIFYs leave from tasks of their own, never from the inbox loop
    assert len(edge.udp.sent) == 2  # n1 and the other dialog's
    # A crash now must re-read n1 (in flight) and n3 (queued): not past 10.
    assert edge.inbox.committable() == 10
    branch = edge.udp.sent[0].split(b"branch=")[1].split(b";")[0].decode()
    response = edge.udp.sent[0].replace(b"NOTIFY sip:bob@127.0.0.1:5098 SIP/2.0", b"SIP/2.0 200 OK")
    assert branch
    edge.message_received(response, udp_source([]))  # n1 answered: n3 goes out
    await settle()
    assert edge.inbox.committable() == 12  # n3 is in flight now


def test_inbox_progress_without_notifies_follows_the_records() -> None:
    progress = InboxProgress()
    assert progress.committable() is None
    progress.consumed(4)
    assert progress.committable() == 5
    progress.opened("n", 5)
    progress.consumed(5)
    progress.consumed(6)
    assert progress.committable() == 5
    progress.closed("n")
    assert progress.committable() == 7


class FakeRecord:
    def __init__(self, offset: int, value: bytes) -> None:
        self.topic = "inbox"
        self.partition = 0
        self.offset = offset
        self.key: bytes | None = None
        self.value = value
        self.headers: list[tuple[str, bytes]] = []


class OneBatchConsumer:
    """Hands out one batch, then stops the loop once a commit came (commits run
    beside the reading) or a second passed; records what was committed."""

    def __init__(self, records: list[FakeRecord]) -> None:
        self.records = records
        self.calls = 0
        self.committed: list[dict[object, int]] = []
        self._commit_came = asyncio.Event()

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[object, list[FakeRecord]]:
        self.calls += 1
        if self.calls > 1:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._commit_came.wait(), 1.0)
            raise asyncio.CancelledError
        return {"inbox": self.records}

    async def commit(self, offsets: dict[object, int]) -> None:
        self.committed.append(offsets)
        self._commit_came.set()


async def test_a_record_that_fails_costs_only_itself() -> None:
    from presence.bus.events import DeadLetter, SipReply, decode, encode
    from sip_edge.__main__ import consume_inbox, inbox_dead_letters

    handled: list[int] = []
    producer = FakeProducer()
    edge = make_edge(producer)

    async def on_inbox_event(event: object, offset: int) -> None:
        if offset == 0:
            raise RuntimeError("a bug in handling one record")
        handled.append(offset)

    edge.on_inbox_event = on_inbox_event  # type: ignore[method-assign]
    reply = encode(SipReply("r", 200, "OK", [], None))
    records = [FakeRecord(0, reply), FakeRecord(1, reply), FakeRecord(2, b"{not an event")]
    consumer = OneBatchConsumer(records)
    give_up = inbox_dead_letters(producer, "dead-letters")  # type: ignore[arg-type]
    try:
        await consume_inbox(consumer, edge, "inbox", give_up)  # type: ignore[arg-type]
    except asyncio.CancelledError:
        pass
    assert handled == [1]
    assert [list(c.values()) for c in consumer.committed] == [[3]]
    letters = [decode(value) for topic, value in producer.sent if topic == "dead-letters"]
    assert all(isinstance(letter, DeadLetter) for letter in letters)
    assert [(letter.offset, letter.error.split(":")[0]) for letter in letters] == [  # type: ignore[attr-defined]
        (0, "RuntimeError"),
        (2, "undecodable"),
    ]


class SlowCommitConsumer:
    """A commit returns only when the test lets it."""

    def __init__(self) -> None:
        self.committed: list[int] = []
        self.release = asyncio.Event()
        self.in_commit = asyncio.Event()
        self.two_done = asyncio.Event()

    async def commit(self, offsets: dict[object, int]) -> None:
        self.in_commit.set()
        await self.release.wait()
        self.release.clear()
        self.committed.extend(offsets.values())
        if len(self.committed) >= 2:
            self.two_done.set()


async def test_inbox_commits_run_beside_reading_and_cover_what_came_meanwhile() -> None:
    from aiokafka import TopicPartition

    from sip_edge.__main__ import commit_inbox_behind

    edge = make_edge(FakeProducer())
    consumer = SlowCommitConsumer()
    advanced = asyncio.Event()
    committer = asyncio.create_task(
        commit_inbox_behind(consumer, edge, TopicPartition("inbox", 0), advanced)  # type: ignore[arg-type]
    )
    try:
        edge.inbox.consumed(0)
        advanced.set()
        await asyncio.wait_for(consumer.in_commit.wait(), 2)
        consumer.in_commit.clear()
        # Three more batches are read while the first commit is on its way.
        for offset in (1, 2, 3):
            edge.inbox.consumed(offset)
            advanced.set()
        consumer.release.set()
        await asyncio.wait_for(consumer.in_commit.wait(), 2)
        consumer.release.set()
        await asyncio.wait_for(consumer.two_done.wait(), 2)
    finally:
        committer.cancel()
    assert consumer.committed == [1, 4]  # one commit for the three batches
