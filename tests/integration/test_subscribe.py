"""SUBSCRIBE/NOTIFY on the real stack (RFC 6665, RFC 3856): watchers over UDP sockets."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import asyncpg
import pytest
from lxml import etree

from presence.bus import events
from presence.sip.grammar import parse_name_addr
from presence.sip.message import SipRequest, SipResponse

from .conftest import Stack, changes_on_bus, make_stack
from .sip_client import SipClient

pytestmark = pytest.mark.integration

PIDF_NS = "{urn:ietf:params:xml:ns:pidf}"


def pidf(entity: str, basic: str, tuple_id: str = "t1") -> bytes:
    return (
        f'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{entity}">'
        f'<tuple id="{tuple_id}"><status><basic>{basic}</basic></status></tuple></presence>'
    ).encode()


def basics(notify: SipRequest) -> list[str]:
    """The basic status of every tuple of a NOTIFY's document."""
    root = etree.fromstring(notify.body)
    return [element.text or "" for element in root.iter(f"{PIDF_NS}basic")]


@dataclass
class WatcherDialog:
    """A watcher's side of one subscription dialog."""

    client: SipClient
    presentity: str
    call_id: str
    from_tag: str
    to_tag: str | None = None
    cseq: int = 1
    from_uri: str = "sip:watcher@example.com"

    def subscribe(self, expires: int | None = 600, **extra: str) -> SipResponse:
        headers = [
            ("Event", extra.pop("Event", "presence")),
            ("Contact", f"<sip:w@127.0.0.1:{self.client.local_port}>"),
        ]
        if expires is not None:
            headers.append(("Expires", str(expires)))
        headers += list(extra.items())
        uri = self.presentity if self.to_tag is None else "sip:127.0.0.1"
        request = self.client.request(
            "SUBSCRIBE",
            uri,
            headers,
            from_uri=self.from_uri,
            from_tag=self.from_tag,
            to_uri=self.presentity,
            to_tag=self.to_tag,
            call_id=self.call_id,
            cseq=self.cseq,
        )
        self.cseq += 1
        response = self.client.transact(request)
        if response.status == 200 and self.to_tag is None:
            self.to_tag = parse_name_addr(response.headers.get("To") or "").tag
        return response

    def next_notify(self, status: int = 200) -> SipRequest:
        return self.next_notify_within(None, status)

    def next_notify_within(self, timeout: float | None, status: int = 200) -> SipRequest:
        """The next NOTIFY, answered; TimeoutError when none comes within `timeout`."""
        notify = self.client.next_request(timeout)
        assert notify.method == "NOTIFY"
        self.client.answer(notify, status)
        return notify

    def notify_until(
        self, condition: Callable[[dict[str, str]], bool], timeout: float = 20
    ) -> dict[str, str]:
        """Answer NOTIFYs until one's tuples (id -> basic) meet `condition`; those."""
        deadline = time.monotonic() + timeout
        seen: list[dict[str, str]] = []
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no NOTIFY as expected within {timeout}s; seen: {seen}"
            try:
                notify = self.next_notify_within(remaining)
            except TimeoutError:
                continue
            shown = tuples(notify) if notify.body else {}
            seen.append(shown)
            if condition(shown):
                return shown


@pytest.fixture
def watcher(stack: Stack) -> Iterator[WatcherDialog]:
    client = SipClient(stack.sip, "udp")
    presentity = f"sip:user-{secrets.token_hex(4)}@example.com"
    yield WatcherDialog(client, presentity, secrets.token_hex(8), secrets.token_hex(4))
    client.close()


def publish(stack: Stack, presentity: str, basic: str) -> SipResponse:
    client = SipClient(stack.sip, "udp")
    try:
        headers = [("Event", "presence"), ("Content-Type", "application/pidf+xml")]
        return client.transact(
            client.request("PUBLISH", presentity, headers, pidf(presentity, basic))
        )
    finally:
        client.close()


def test_subscribe_before_publish(stack: Stack, watcher: WatcherDialog) -> None:
    response = watcher.subscribe()
    assert response.status == 200
    assert watcher.to_tag is not None and watcher.to_tag.startswith("10")  # to_tag_pref
    assert response.headers.get("Expires") == "600"
    assert response.headers.get("Contact") == f"<sip:{stack.sip[0]}:{stack.sip[1]}>"

    first = watcher.next_notify()
    assert first.headers.get("Event") == "presence"
    assert first.headers.get("Subscription-State").startswith("active;expires=")
    assert first.headers.get("Content-Type") == "application/pidf+xml"
    assert basics(first) == []  # nothing is known yet
    assert first.headers.get("CSeq") == "1 NOTIFY"
    assert parse_name_addr(first.headers.get("From")).tag == watcher.to_tag
    assert parse_name_addr(first.headers.get("To")).tag == watcher.from_tag
    assert first.headers.get("Call-ID") == watcher.call_id

    assert publish(stack, watcher.presentity, "open").status == 200
    second = watcher.next_notify()
    assert basics(second) == ["open"]
    assert second.headers.get("CSeq") == "2 NOTIFY"


def test_publish_then_subscribe_gets_the_state_at_once(
    stack: Stack, watcher: WatcherDialog
) -> None:
    assert publish(stack, watcher.presentity, "closed").status == 200
    assert watcher.subscribe().status == 200
    assert basics(watcher.next_notify()) == ["closed"]


def test_subscribe_without_expires_gets_the_default_capped_by_max(watcher: WatcherDialog) -> None:
    response = watcher.subscribe(expires=None)
    assert response.headers.get("Expires") == "3600"
    watcher.next_notify()


def test_refresh_stale_cseq_and_unsubscribe(watcher: WatcherDialog) -> None:
    assert watcher.subscribe().status == 200
    watcher.next_notify()
    refreshed = watcher.subscribe(expires=300)
    assert refreshed.status == 200 and refreshed.headers.get("Expires") == "300"
    notify = watcher.next_notify()
    state = notify.headers.get("Subscription-State")
    assert state.startswith("active;expires=") and int(state.split("=")[1]) <= 300

    watcher.cseq -= 2  # an old request arriving late
    assert watcher.subscribe().status == 500
    watcher.cseq += 2

    assert watcher.subscribe(expires=0).status == 200
    final = watcher.next_notify()
    assert final.headers.get("Subscription-State") == "terminated;reason=timeout"


async def test_unsubscribe_removes_the_dialog(stack: Stack, db: asyncpg.Connection) -> None:
    client = SipClient(stack.sip, "udp")
    dialog = WatcherDialog(client, f"sip:u-{secrets.token_hex(3)}@example.com", "c1x", "f1")
    try:
        assert (await asyncio.to_thread(dialog.subscribe)).status == 200
        await asyncio.to_thread(dialog.next_notify)
        assert (await asyncio.to_thread(dialog.subscribe, 0)).status == 200
        final = await asyncio.to_thread(dialog.next_notify)
    finally:
        client.close()
    assert final.headers.get("Subscription-State") == "terminated;reason=timeout"
    # The dialog ends once the edge reports the final NOTIFY's outcome.
    await rows_gone(db, dialog.to_tag)


async def rows_gone(db: asyncpg.Connection, to_tag: str | None, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while await db.fetchval("SELECT count(*) FROM active_watchers WHERE to_tag = $1", to_tag):
        assert time.monotonic() < deadline, f"subscription {to_tag} still there"
        await asyncio.sleep(0.05)


def test_in_dialog_subscribe_for_unknown_dialog_is_481(watcher: WatcherDialog) -> None:
    watcher.to_tag = "10nosuchdialog"
    assert watcher.subscribe().status == 481


def test_unacceptable_body_type_is_406(watcher: WatcherDialog) -> None:
    response = watcher.subscribe(Accept="text/plain")
    assert response.status == 406
    assert response.headers.get("Accept") == "application/pidf+xml"


async def test_notify_answered_481_ends_the_subscription(
    stack: Stack, db: asyncpg.Connection
) -> None:
    client = SipClient(stack.sip, "udp")
    dialog = WatcherDialog(client, f"sip:u-{secrets.token_hex(3)}@example.com", "c2x", "f2")
    try:
        assert (await asyncio.to_thread(dialog.subscribe)).status == 200
        await asyncio.to_thread(dialog.next_notify, 481)  # "I know no such subscription"
    finally:
        client.close()
    await rows_gone(db, dialog.to_tag)


def tuples(notify: SipRequest) -> dict[str, str]:
    """tuple id -> basic status, from a NOTIFY's document."""
    root = etree.fromstring(notify.body)
    return {
        t.get("id"): t.findtext(f"{PIDF_NS}status/{PIDF_NS}basic")
        for t in root.iter(f"{PIDF_NS}tuple")
    }


def publish_device(stack: Stack, presentity: str, body: bytes, **headers: str) -> SipResponse:
    client = SipClient(stack.sip, "udp")
    try:
        extra = [("Event", "presence"), *headers.items()]
        if body:
            extra.append(("Content-Type", "application/pidf+xml"))
        return client.transact(client.request("PUBLISH", presentity, extra, body))
    finally:
        client.close()


def test_three_devices_aggregate_and_a_removed_one_shows_closed_once(
    stack: Stack, watcher: WatcherDialog
) -> None:
    dm = "urn:ietf:params:xml:ns:pidf:data-model"
    rpid = "urn:ietf:params:xml:ns:pidf:rpid"

    def device_document(tuple_id: str, basic: str, activity: str) -> bytes:
        return (
            f'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
            f'xmlns:dm="{dm}" xmlns:rpid="{rpid}" entity="{watcher.presentity}">'
            f'<tuple id="{tuple_id}"><status><basic>{basic}</basic></status></tuple>'
            f'<dm:person id="p1"><rpid:activities><rpid:{activity}/></rpid:activities>'
            f"</dm:person></presence>"
        ).encode()

    assert watcher.subscribe().status == 200
    watcher.next_notify()
    tags = {}
    for tuple_id, basic, activity in [
        ("desk", "open", "busy"),
        ("mobile", "open", "away"),
        ("laptop", "closed", "on-the-phone"),
    ]:
        response = publish_device(
            stack, watcher.presentity, device_document(tuple_id, basic, activity)
        )
        assert response.status == 200
        tags[tuple_id] = response.headers.get("SIP-ETag")
        latest = watcher.next_notify()
    assert tuples(latest) == {"desk": "open", "mobile": "open", "laptop": "closed"}
    root = etree.fromstring(latest.body)
    persons = root.findall(f"{{{dm}}}person")
    assert len(persons) == 1  # one person element, de-duplicated by id: the newest wins
    assert persons[0].find(f".//{{{rpid}}}on-the-phone") is not None

    removed = publish_device(
        stack, watcher.presentity, b"", **{"SIP-If-Match": tags["desk"], "Expires": "0"}
    )
    assert removed.status == 200
    after_removal = watcher.next_notify()
    assert tuples(after_removal) == {"mobile": "open", "laptop": "closed", "desk": "closed"}

    # The next change no longer mentions the removed device at all.
    modified = publish_device(
        stack,
        watcher.presentity,
        device_document("mobile", "closed", "away"),
        **{"SIP-If-Match": tags["mobile"]},
    )
    assert modified.status == 200
    assert tuples(watcher.next_notify()) == {"mobile": "closed", "laptop": "closed"}


def test_one_watchers_subscriptions_with_different_event_ids_are_separate_dialogs(
    stack: Stack,
) -> None:
    client = SipClient(stack.sip, "udp")
    presentity = f"sip:multi-{secrets.token_hex(3)}@example.com"
    try:
        first = WatcherDialog(client, presentity, secrets.token_hex(6), secrets.token_hex(3))
        second = WatcherDialog(client, presentity, secrets.token_hex(6), secrets.token_hex(3))
        assert first.subscribe(Event="presence;id=1").status == 200
        notify_one = first.next_notify()
        assert second.subscribe(Event="presence;id=2").status == 200
        notify_two = second.next_notify()
    finally:
        client.close()
    assert first.to_tag != second.to_tag
    assert notify_one.headers.get("Event") == "presence;id=1"
    assert notify_two.headers.get("Event") == "presence;id=2"
    assert {notify_one.headers.get("Call-ID"), notify_two.headers.get("Call-ID")} == {
        first.call_id,
        second.call_id,
    }


@pytest.mark.parametrize("ends", ["1", "0"])
async def test_unanswered_notify_ends_the_subscription_unless_configured_not_to(
    test_database: str, ends: str
) -> None:
    stack = make_stack(
        test_database,
        PRESENCE_FORCE_ACTIVE="1",
        PRESENCE_SIP_T1_MS="50",  # Timer F = 3.2 s
        PRESENCE_NOTIFY_TIMEOUT_ENDS_SUBSCRIPTION=ends,
    )
    client = SipClient(stack.sip, "udp")
    try:
        for name in ("presence-store", "notifier", "sip-edge"):
            await asyncio.to_thread(stack.start, name)
        dialog = WatcherDialog(client, f"sip:mute-{secrets.token_hex(3)}@example.com", "c9", "f9")
        assert (await asyncio.to_thread(dialog.subscribe)).status == 200
        # The watcher never answers its NOTIFY: the edge gives up after Timer F. An
        # outcome that ends the subscription goes to the store; one that does not is
        # only the edge's to log.
        if ends == "1":
            service, needle = "presence-store", f"answered 408: subscription {dialog.to_tag} ended"
        else:
            service, needle = "sip-edge", f"({dialog.to_tag}) -> 408 Request Timeout"
        deadline = time.monotonic() + 20
        while needle not in stack.processes[service].log():
            assert time.monotonic() < deadline, f"no '{needle}' in the log of {service}"
            await asyncio.sleep(0.1)
        connection = await asyncpg.connect(stack.db_url)
        try:
            count = await connection.fetchval(
                "SELECT count(*) FROM active_watchers WHERE to_tag = $1", dialog.to_tag
            )
        finally:
            await connection.close()
        assert count == (0 if ends == "1" else 1)
    finally:
        client.close()
        await asyncio.to_thread(stack.close)


def test_without_force_active_a_subscription_is_pending_and_sees_no_document(
    test_database: str,
) -> None:
    """The seed: force_active=0 and no XCAP rules -> pending, NOTIFYs without body."""
    stack = make_stack(test_database, PRESENCE_FORCE_ACTIVE="0")
    client = SipClient(stack.sip, "udp")
    try:
        stack.start_all()
        presentity = f"sip:private-{secrets.token_hex(3)}@example.com"
        assert publish(stack, presentity, "open").status == 200
        watcher = WatcherDialog(client, presentity, secrets.token_hex(6), secrets.token_hex(3))
        assert watcher.subscribe().status == 200
        notify = watcher.next_notify()
    finally:
        client.close()
        stack.close()
    assert notify.headers.get("Subscription-State").startswith("pending;expires=")
    assert notify.body == b""
    assert notify.headers.get("Content-Type") is None


async def test_a_watcher_change_nobody_watches_puts_no_winfo_change_on_the_bus(
    stack: Stack,
) -> None:
    """A new watcher changes the presentity's watcher list, but when nobody subscribes
    to that list (presence.winfo) the store emits no winfo change: asked under the
    presentity's lock, as the owner's winfo SUBSCRIBE takes it. Once the owner
    watches the list, the next new watcher's change goes on the bus."""
    presentity = f"sip:winfo-quiet-{secrets.token_hex(3)}@example.com"
    user = presentity.removeprefix("sip:").split("@")[0]
    first = WatcherDialog(SipClient(stack.sip, "udp"), presentity, secrets.token_hex(8), "a")
    owner = WatcherDialog(
        SipClient(stack.sip, "udp"), presentity, secrets.token_hex(8), "o", from_uri=presentity
    )
    second = WatcherDialog(
        SipClient(stack.sip, "udp"), presentity, secrets.token_hex(8), "b",
        from_uri="sip:second@example.com",
    )  # fmt: skip
    try:
        assert (await asyncio.to_thread(first.subscribe)).status == 200
        await asyncio.to_thread(first.next_notify)
        assert await changes_on_bus(stack, events.WatcherInfoChanged, user, 1, timeout=3) == []
        assert (await asyncio.to_thread(owner.subscribe, Event="presence.winfo")).status == 200
        listing = await asyncio.to_thread(owner.next_notify)
        assert b"sip:watcher@example.com" in listing.body  # the first watcher is listed
        assert (await asyncio.to_thread(second.subscribe)).status == 200
        assert len(await changes_on_bus(stack, events.WatcherInfoChanged, user, 1, 20)) == 1
    finally:
        for dialog in (first, owner, second):
            dialog.client.close()
