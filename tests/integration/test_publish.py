"""PUBLISH (RFC 3903) over the real path: UDP -> edge -> Kafka -> store -> PostgreSQL -> reply."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from presence.bus import events
from presence.bus.topics import Topics
from presence.runtime.kafka import ensure_topics
from presence.sip.message import SipResponse

from .conftest import Stack, bus_records, changes_on_bus
from .sip_client import SipClient
from .test_subscribe import WatcherDialog

pytestmark = pytest.mark.integration

PIDF_NS = "urn:ietf:params:xml:ns:pidf"


def document(entity: str, tuple_id: str, basic: str, note: str = "") -> bytes:
    note_element = f"<note>{note}</note>" if note else ""
    return (
        f'<?xml version="1.0"?><presence xmlns="{PIDF_NS}" entity="{entity}">'
        f'<tuple id="{tuple_id}"><status><basic>{basic}</basic></status></tuple>'
        f"{note_element}</presence>"
    ).encode()


class Publisher:
    """One device publishing for one presentity."""

    def __init__(self, stack: Stack, presentity: str) -> None:
        self.client = SipClient(stack.sip, "udp")
        self.presentity = presentity

    def publish(
        self,
        body: bytes = b"",
        *,
        etag: str | None = None,
        expires: int | None = None,
        content_type: str = "application/pidf+xml",
    ) -> SipResponse:
        headers = [("Event", "presence")]
        if body:
            headers.append(("Content-Type", content_type))
        if etag is not None:
            headers.append(("SIP-If-Match", etag))
        if expires is not None:
            headers.append(("Expires", str(expires)))
        return self.client.transact(self.client.request("PUBLISH", self.presentity, headers, body))


@pytest.fixture
def device(stack: Stack) -> Iterator[Publisher]:
    publisher = Publisher(stack, f"sip:pub-{secrets.token_hex(4)}@example.com")
    yield publisher
    publisher.client.close()


async def rows(db: asyncpg.Connection, presentity: str) -> list[asyncpg.Record]:
    user = presentity.removeprefix("sip:").split("@")[0]
    return await db.fetch(
        "SELECT etag, body, expires - received_time AS lifetime FROM presentity "
        "WHERE username = $1 ORDER BY id",
        user,
    )


async def test_initial_refresh_modify_remove(device: Publisher, db: asyncpg.Connection) -> None:
    initial = await asyncio.to_thread(
        device.publish, document(device.presentity, "a", "open"), expires=120
    )
    assert initial.status == 200 and initial.headers.get("Expires") == "120"
    first_tag = initial.headers.get("SIP-ETag")

    refreshed = await asyncio.to_thread(device.publish, etag=first_tag, expires=300)
    assert refreshed.status == 200 and refreshed.headers.get("Expires") == "300"
    second_tag = refreshed.headers.get("SIP-ETag")
    assert second_tag not in (None, first_tag)  # RFC 3903 §4.3: a new entity tag
    (row,) = await rows(db, device.presentity)
    assert row["etag"] == second_tag and b"open" in row["body"].encode()

    # A pipelining phone sends the previous tag again before it sees the new one:
    # accepted during the grace period (PRESENCE_ETAG_GRACE, 5 s by default).
    pipelined = await asyncio.to_thread(device.publish, etag=first_tag)
    assert pipelined.status == 200
    second_tag = pipelined.headers.get("SIP-ETag")
    # first_tag is now two tags back: no longer valid.
    stale = await asyncio.to_thread(device.publish, etag=first_tag)
    assert stale.status == 412

    modified = await asyncio.to_thread(
        device.publish, document(device.presentity, "a", "closed"), etag=second_tag
    )
    assert modified.status == 200
    third_tag = modified.headers.get("SIP-ETag")
    (row,) = await rows(db, device.presentity)
    assert row["etag"] == third_tag and "closed" in row["body"]

    removed = await asyncio.to_thread(device.publish, etag=third_tag, expires=0)
    assert removed.status == 200 and removed.headers.get("Expires") == "0"
    assert await rows(db, device.presentity) == []


async def test_republish_without_tag_replaces_the_same_devices_publication(
    stack: Stack, device: Publisher, db: asyncpg.Connection
) -> None:
    """A device that lost its entity tag publishes afresh (same tuple id): its old
    publication is replaced, not duplicated; another device's stays."""
    await asyncio.to_thread(device.publish, document(device.presentity, "phone", "open"))
    await asyncio.to_thread(device.publish, document(device.presentity, "laptop", "open"))
    again = await asyncio.to_thread(device.publish, document(device.presentity, "phone", "closed"))
    assert again.status == 200
    bodies = sorted(r["body"] for r in await rows(db, device.presentity))
    assert len(bodies) == 2
    assert "laptop" in bodies[0] and "open" in bodies[0]
    assert "phone" in bodies[1] and "closed" in bodies[1]


def device_document(entity: str, basic: str, tuple_id: str = "t4109") -> bytes:
    """A body as baresip writes it: a fixed tuple id on every install and the
    address-of-record as contact (linphone also writes the AOR as contact)."""
    return (
        f'<?xml version="1.0"?><presence xmlns="{PIDF_NS}" entity="{entity}">'
        f'<tuple id="{tuple_id}"><status><basic>{basic}</basic></status>'
        f"<contact>{entity}</contact></tuple></presence>"
    ).encode()


async def bodies_of(db: asyncpg.Connection, presentity: str) -> list[str]:
    return sorted(r["body"] for r in await rows(db, presentity))


async def test_two_devices_with_the_same_contact_and_tuple_id_both_stay(
    stack: Stack, db: asyncpg.Connection
) -> None:
    """Two devices (two sockets) with identical tuple ids and contacts are two
    publications; each one re-publishing without its tag replaces only its own."""
    presentity = f"sip:twins-{secrets.token_hex(3)}@example.com"
    phone, desk = Publisher(stack, presentity), Publisher(stack, presentity)
    try:
        for publisher, basic in ((phone, "open"), (desk, "closed")):
            response = await asyncio.to_thread(
                publisher.publish, device_document(presentity, basic)
            )
            assert response.status == 200
        assert len(await bodies_of(db, presentity)) == 2
        # The phone lost its entity tag (412, restart of its stack on the same flow).
        again = await asyncio.to_thread(
            phone.publish, device_document(presentity, "open", tuple_id="t4109")
        )
        assert again.status == 200
        rows_now = await rows(db, presentity)
        assert len(rows_now) == 2
        assert again.headers.get("SIP-ETag") in {r["etag"] for r in rows_now}
        assert sum("<basic>closed</basic>" in r["body"] for r in rows_now) == 1  # the desk's
    finally:
        phone.client.close()
        desk.client.close()


def register(client: SipClient, aor: str, instance: str | None) -> SipResponse:
    contact = f"<sip:{aor.removeprefix('sip:').split('@')[0]}@127.0.0.1:{client.local_port}>"
    if instance:
        contact += f';+sip.instance="<{instance}>"'
    request = client.request(
        "REGISTER", "sip:example.com", [("Contact", contact), ("Expires", "600")],
        from_uri=aor, to_uri=aor,
    )  # fmt: skip
    return client.transact(request)


async def test_a_registered_device_back_on_a_new_port_replaces_its_own_publication(
    stack: Stack, db: asyncpg.Connection
) -> None:
    """A phone that restarts comes back on another port with a new random tuple id
    (linphone): its registration's +sip.instance ties the new PUBLISH to its old
    publication, which it replaces; another phone of the user (its own instance)
    stays."""
    presentity = f"sip:restart-{secrets.token_hex(3)}@example.com"
    first_run, other_phone = Publisher(stack, presentity), Publisher(stack, presentity)
    second_run = Publisher(stack, presentity)
    me, other = f"urn:uuid:{secrets.token_hex(16)}", f"urn:uuid:{secrets.token_hex(16)}"
    try:
        for publisher, instance, tuple_id in (
            (first_run, me, "vltpid"),
            (other_phone, other, "pr8l0e"),
        ):
            assert (
                await asyncio.to_thread(register, publisher.client, presentity, instance)
            ).status == 200
            response = await asyncio.to_thread(
                publisher.publish, device_document(presentity, "open", tuple_id)
            )
            assert response.status == 200
        first_run.client.close()  # gone without un-PUBLISH
        assert (await asyncio.to_thread(register, second_run.client, presentity, me)).status == 200
        back = await asyncio.to_thread(
            second_run.publish, device_document(presentity, "closed", "x1y2z3")
        )
        assert back.status == 200
        bodies = await bodies_of(db, presentity)
        assert len(bodies) == 2
        assert any('id="x1y2z3"' in b for b in bodies) and any('id="pr8l0e"' in b for b in bodies)
    finally:
        for publisher in (first_run, other_phone, second_run):
            publisher.client.close()


async def test_a_flow_with_several_registered_devices_names_no_device(
    stack: Stack, db: asyncpg.Connection
) -> None:
    """A proxy in front puts two phones (two instance ids) on one flow: a PUBLISH on
    it cannot be tied to one of them, so it replaces nothing."""
    presentity = f"sip:proxied-{secrets.token_hex(3)}@example.com"
    proxy = Publisher(stack, presentity)
    try:
        for n in (1, 2):
            request = proxy.client.request(
                "REGISTER", "sip:example.com",
                [("Contact", f'<sip:phone{n}@127.0.0.1:{5060 + n}>'
                  f';+sip.instance="<urn:uuid:{secrets.token_hex(16)}>"'), ("Expires", "600")],
                from_uri=presentity, to_uri=presentity,
            )  # fmt: skip
            assert (await asyncio.to_thread(proxy.client.transact, request)).status == 200
        for basic in ("open", "closed"):
            response = await asyncio.to_thread(proxy.publish, device_document(presentity, basic))
            assert response.status == 200
        assert len(await bodies_of(db, presentity)) == 2
    finally:
        proxy.client.close()


async def test_expiry_is_capped_and_defaulted(device: Publisher, db: asyncpg.Connection) -> None:
    capped = await asyncio.to_thread(
        device.publish, document(device.presentity, "a", "open"), expires=999_999
    )
    defaulted = await asyncio.to_thread(device.publish, document(device.presentity, "b", "open"))
    assert capped.headers.get("Expires") == "3600"  # max_expires
    assert defaulted.headers.get("Expires") == "3600"  # RFC 3903 default
    # Stored rounded up to the next whole second (presence.subscriptions.expiry).
    assert [r["lifetime"] for r in await rows(db, device.presentity)] == [3601, 3601]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"", "application/pidf+xml", 400),  # neither body nor SIP-If-Match
        (b"<presence", "application/pidf+xml", 400),  # not well-formed
        (b'<presence xmlns="urn:other" entity="sip:a@b"/>', "application/pidf+xml", 400),
        (b"hello", "text/plain", 415),
    ],
)
async def test_bad_publications_leave_the_state_alone(
    device: Publisher, db: asyncpg.Connection, body: bytes, content_type: str, status: int
) -> None:
    good = await asyncio.to_thread(device.publish, document(device.presentity, "a", "open"))
    before = await rows(db, device.presentity)
    response = await asyncio.to_thread(device.publish, body, content_type=content_type)
    assert response.status == status
    if status == 415:
        assert response.headers.get("Accept") == "application/pidf+xml"
    assert await rows(db, device.presentity) == before
    assert before[0]["etag"] == good.headers.get("SIP-ETag")


async def test_lenient_on_values_baresip_unknown(device: Publisher) -> None:
    response = await asyncio.to_thread(device.publish, document(device.presentity, "a", "unknown"))
    assert response.status == 200


async def test_xml_bomb_is_refused(device: Publisher) -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b">&c;</presence>'
    )
    assert (await asyncio.to_thread(device.publish, bomb)).status == 400


async def put_on_bus_and_collect_replies(
    stack: Stack, request: events.PublishRequest, copies: int
) -> list[events.SipReply]:
    """Put the request on sip.requests `copies` times; the store's replies to it."""
    topics = Topics(stack.env["PRESENCE_KAFKA_NAMESPACE"])
    bootstrap = stack.env["PRESENCE_KAFKA_BOOTSTRAP"]
    await ensure_topics(bootstrap, {topics.edge_inbox(request.edge_id): 1})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for _ in range(copies):
            await producer.send_and_wait(
                topics.requests, events.encode(request), key=request.presentity.encode()
            )
    finally:
        await producer.stop()
    found = await bus_records(
        stack, topics.edge_inbox(request.edge_id), lambda e: isinstance(e, events.SipReply),
        copies, 20,
    )  # fmt: skip
    assert len(found) == copies, f"{len(found)} of {copies} replies"
    return [reply for reply in found if isinstance(reply, events.SipReply)]


def bus_publication(received_at: float) -> events.PublishRequest:
    presentity = f"replay-{secrets.token_hex(3)}"
    return events.PublishRequest(
        request_id=secrets.token_hex(16),
        edge_id="replay-" + secrets.token_hex(3),  # an inbox nobody else reads
        received_at=received_at,
        username=presentity,
        domain="example.com",
        event="presence",
        expires=60,
        if_match=None,
        content_type="application/pidf+xml",
        body=document(f"sip:{presentity}@example.com", "a", "open").decode(),
        flow="udp:127.0.0.1:9",
    )


async def test_redelivered_publish_is_answered_again_not_applied_twice(
    stack: Stack, db: asyncpg.Connection
) -> None:
    """A crash between the database commit and the offset commit makes Kafka deliver a
    request again; the same record is put on the bus twice here."""
    request = bus_publication(time.time())
    replies = await put_on_bus_and_collect_replies(stack, request, copies=2)
    assert replies[0] == replies[1]
    assert replies[0].status == 200
    assert len(await rows(db, f"sip:{request.username}@example.com")) == 1


async def test_request_older_than_the_edges_patience_is_not_applied(
    stack: Stack, db: asyncpg.Connection
) -> None:
    """The edge answered 503 after REPLY_DEADLINE; the store must not apply it later."""
    request = bus_publication(time.time() - events.REPLY_DEADLINE - 1)
    (reply,) = await put_on_bus_and_collect_replies(stack, request, copies=1)
    assert reply.status == 503
    assert await rows(db, f"sip:{request.username}@example.com") == []


async def test_every_change_carries_a_growing_version(stack: Stack) -> None:
    """Each change event of a presentity has a higher version than the one before."""
    device = Publisher(stack, f"sip:ver-{secrets.token_hex(3)}@example.com")
    user = device.presentity.removeprefix("sip:").split("@")[0]
    # Changes go on the bus only for a watched presentity.
    watcher = WatcherDialog(
        SipClient(stack.sip, "udp"), device.presentity, secrets.token_hex(8), secrets.token_hex(4)
    )
    try:
        assert (await asyncio.to_thread(watcher.subscribe)).status == 200
        first = await asyncio.to_thread(device.publish, document(device.presentity, "a", "open"))
        tag = first.headers.get("SIP-ETag")
        for basic in ("closed", "open"):
            response = await asyncio.to_thread(
                device.publish, document(device.presentity, "a", basic), etag=tag
            )
            tag = response.headers.get("SIP-ETag")
    finally:
        device.client.close()
        watcher.client.close()
    versions = await changes_on_bus(stack, events.PresentityChanged, user, 3, timeout=20)
    assert len(versions) == 3
    assert versions == sorted(set(versions)) and versions[0] > 0  # strictly growing


async def test_a_presentity_nobody_watches_puts_no_change_on_the_bus(stack: Stack) -> None:
    """The store asks, under the presentity's lock, whether anyone watches before it
    emits a change: without a watcher there is nobody for the notifier to notify.
    A watcher subscribing afterwards still gets the published state at once."""
    device = Publisher(stack, f"sip:quiet-{secrets.token_hex(3)}@example.com")
    user = device.presentity.removeprefix("sip:").split("@")[0]
    watcher = WatcherDialog(
        SipClient(stack.sip, "udp"), device.presentity, secrets.token_hex(8), secrets.token_hex(4)
    )
    try:
        published = await asyncio.to_thread(
            device.publish, document(device.presentity, "a", "open", note="here")
        )
        assert published.status == 200
        # The change event of a PUBLISH is produced before its reply: none came.
        assert await changes_on_bus(stack, events.PresentityChanged, user, 1, timeout=3) == []
        assert (await asyncio.to_thread(watcher.subscribe)).status == 200
        shown = await asyncio.to_thread(watcher.notify_until, lambda t: t.get("a") == "open")
        assert shown == {"a": "open"}
        # Watched now: the next change goes on the bus.
        closed = await asyncio.to_thread(
            device.publish,
            document(device.presentity, "a", "closed"),
            etag=published.headers.get("SIP-ETag"),
        )
        assert closed.status == 200
        assert len(await changes_on_bus(stack, events.PresentityChanged, user, 1, timeout=20)) == 1
    finally:
        device.client.close()
        watcher.client.close()
