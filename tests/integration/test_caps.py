"""Caps on what clients create, on the real stack over real SIP sockets: each cap
reached gets its exact code and reason phrase, counted in /metrics, and other users
are still served. The caps are set small here so that the tests are fast."""

from __future__ import annotations

import re
import secrets
import urllib.request
from collections.abc import Iterator

import pytest
from lxml import etree

from presence.packages.watcherinfo import parse_watcherinfo
from presence.sip.grammar import parse_name_addr
from presence.sip.message import SipRequest, SipResponse

from .conftest import Stack, running_stack
from .sip_client import SipClient
from .test_subscribe import WatcherDialog

pytestmark = pytest.mark.integration

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
CAPS = {
    "PRESENCE_MAX_PUBLICATIONS": "3",
    "PRESENCE_MAX_SUBSCRIPTIONS_PER_WATCHER": "3",
    "PRESENCE_MAX_SUBSCRIPTIONS_PER_PRESENTITY": "3",
    "PRESENCE_MAX_CONTACTS": "2",
    "PRESENCE_MAX_DOCUMENT_BYTES": "4096",
}


@pytest.fixture(scope="module")
def capped(test_database: str) -> Iterator[Stack]:
    with running_stack(test_database, PRESENCE_FORCE_ACTIVE="1", **CAPS) as stack:
        yield stack


def new_presentity(prefix: str) -> str:
    return f"sip:{prefix}-{secrets.token_hex(4)}@example.com"


def document(entity: str, tuple_id: str, basic: str = "open", note: str = "") -> bytes:
    note_element = f"<note>{note}</note>" if note else ""
    return (
        f'<?xml version="1.0"?><presence xmlns="{PIDF_NS}" entity="{entity}">'
        f'<tuple id="{tuple_id}"><status><basic>{basic}</basic></status>'
        f"<contact>sip:{tuple_id}@192.0.2.1</contact></tuple>{note_element}</presence>"
    ).encode()


def publish(
    client: SipClient, presentity: str, body: bytes = b"", *, etag: str = "", expires: str = ""
) -> SipResponse:
    headers = [("Event", "presence")]
    if body:
        headers.append(("Content-Type", "application/pidf+xml"))
    if etag:
        headers.append(("SIP-If-Match", etag))
    if expires:
        headers.append(("Expires", expires))
    return client.transact(client.request("PUBLISH", presentity, headers, body))


def cap_refusals(stack: Stack, service: str, metric: str, label: str) -> float:
    with urllib.request.urlopen(stack.http(service, "/metrics"), timeout=5) as response:
        text = response.read().decode()
    found = re.search(rf"^{metric}\{{{label}\}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
def client(capped: Stack) -> Iterator[SipClient]:
    sip = SipClient(capped.sip, "udp")
    yield sip
    sip.close()


def test_publications_beyond_the_cap_are_refused_and_other_devices_keep_theirs(
    capped: Stack, client: SipClient
) -> None:
    presentity = new_presentity("many-devices")
    tags = {}
    for device in ("a", "b", "c"):
        reply = publish(client, presentity, document(presentity, device))
        assert reply.status == 200
        tags[device] = reply.headers.get("SIP-ETag")

    refused = publish(client, presentity, document(presentity, "d"))
    assert (refused.status, refused.reason) == (403, "Too Many Publications")
    assert cap_refusals(capped, "presence-store", "presence_cap_refusals_total",
                        'cap="publications"') >= 1  # fmt: skip

    # At the cap a device that re-publishes (same tuple and contact) replaces its own
    # publication: counted after the replacement, it is not refused.
    assert publish(client, presentity, document(presentity, "a", "closed")).status == 200
    # Modifying and refreshing an existing publication are never refused.
    modified = publish(client, presentity, document(presentity, "b", "closed"), etag=tags["b"])
    assert modified.status == 200
    assert publish(client, presentity, etag=modified.headers.get("SIP-ETag") or "").status == 200
    # Another user is served as usual.
    other = new_presentity("other")
    assert publish(client, other, document(other, "a")).status == 200
    # A removal frees a place.
    assert publish(client, presentity, etag=tags["c"], expires="0").status == 200
    assert publish(client, presentity, document(presentity, "d")).status == 200


def test_a_publish_that_would_make_the_aggregated_document_too_large_is_refused(
    capped: Stack, client: SipClient
) -> None:
    """PRESENCE_MAX_DOCUMENT_BYTES is 4096 here: two devices with 2000-byte notes
    would merge into more. The watcher keeps getting NOTIFYs it can parse."""
    presentity = new_presentity("big")
    watcher_client = SipClient(capped.sip, "udp")
    try:
        watcher = WatcherDialog(
            watcher_client, presentity, secrets.token_hex(6), "w", from_uri=new_presentity("w")
        )
        assert watcher.subscribe().status == 200
        watcher.next_notify()
        first = publish(client, presentity, document(presentity, "phone", note="p" * 2000))
        assert first.status == 200
        assert b"p" * 2000 in watcher.next_notify().body

        second = publish(client, presentity, document(presentity, "desk", note="d" * 2000))
        assert (second.status, second.reason) == (413, "Aggregated Document Too Large")
        # A modify that would grow the document past the limit is refused as well,
        # and the publication stays as it was.
        grown = document(presentity, "phone", note="q" * 4200)
        too_big = publish(client, presentity, grown, etag=first.headers.get("SIP-ETag") or "")
        assert (too_big.status, too_big.reason) == (413, "Aggregated Document Too Large")
        assert cap_refusals(capped, "presence-store", "presence_cap_refusals_total",
                            'cap="document_size"') >= 2  # fmt: skip

        # What fits still goes through, and its NOTIFY carries both devices.
        small = publish(client, presentity, document(presentity, "desk", note="small"))
        assert small.status == 200
        notify = watcher.next_notify()
        root = etree.fromstring(notify.body)
        ids = {t.get("id") for t in root.iterfind(f"{{{PIDF_NS}}}tuple")}
        assert ids == {"phone", "desk"} and len(notify.body) <= 4096
    finally:
        watcher_client.close()


def test_subscriptions_per_watcher_are_capped_refreshes_pass(capped: Stack) -> None:
    client = SipClient(capped.sip, "udp")
    watcher_uri = new_presentity("busy-watcher")
    try:
        dialogs = []
        for _ in range(3):
            dialog = WatcherDialog(
                client, new_presentity("p"), secrets.token_hex(6), "f", from_uri=watcher_uri
            )
            assert dialog.subscribe().status == 200
            dialog.next_notify()
            dialogs.append(dialog)

        fourth = WatcherDialog(
            client, new_presentity("p"), secrets.token_hex(6), "f", from_uri=watcher_uri
        )
        refused = fourth.subscribe()
        assert (refused.status, refused.reason) == (403, "Too Many Subscriptions")
        assert cap_refusals(capped, "presence-store", "presence_cap_refusals_total",
                            'cap="subscriptions_per_watcher"') >= 1  # fmt: skip

        # A refresh is not a new subscription.
        assert dialogs[0].subscribe().status == 200
        dialogs[0].next_notify()
        # Another watcher may subscribe to the same presentity.
        # (A watcher of its own: the test database holds other tests' subscriptions.)
        other = WatcherDialog(
            client, fourth.presentity, secrets.token_hex(6), "g", from_uri=new_presentity("g")
        )
        assert other.subscribe().status == 200
        other.next_notify()
        # Unsubscribing frees a place.
        assert dialogs[1].subscribe(expires=0).status == 200
        dialogs[1].next_notify()
        fourth.call_id = secrets.token_hex(6)
        assert fourth.subscribe().status == 200
    finally:
        client.close()


def test_watchers_per_presentity_are_capped_per_event_package(capped: Stack) -> None:
    client = SipClient(capped.sip, "udp")
    presentity = new_presentity("popular")
    try:
        for number in range(3):
            dialog = WatcherDialog(
                client, presentity, secrets.token_hex(6), "f",
                from_uri=new_presentity(f"fan{number}"),
            )  # fmt: skip
            assert dialog.subscribe().status == 200
            dialog.next_notify()

        late = WatcherDialog(
            client, presentity, secrets.token_hex(6), "f", from_uri=new_presentity("late")
        )
        refused = late.subscribe()
        assert (refused.status, refused.reason) == (403, "Too Many Watchers")
        assert cap_refusals(capped, "presence-store", "presence_cap_refusals_total",
                            'cap="subscriptions_per_presentity"') >= 1  # fmt: skip

        # The owner can still see who watches (another event package, counted apart).
        owner = WatcherDialog(client, presentity, secrets.token_hex(6), "o", from_uri=presentity)
        assert owner.subscribe(Event="presence.winfo").status == 200
        info = parse_watcherinfo(owner.next_notify().body)
        assert len(info.watchers) == 3
        # Another presentity is watched as usual.
        elsewhere = WatcherDialog(
            client, new_presentity("quiet"), secrets.token_hex(6), "f",
            from_uri=new_presentity("late"),
        )  # fmt: skip
        assert elsewhere.subscribe().status == 200
    finally:
        client.close()


def register(client: SipClient, aor: str, contact: str, expires: str = "300") -> SipResponse:
    request = client.request(
        "REGISTER", "sip:example.com", [("Contact", contact), ("Expires", expires)], to_uri=aor
    )
    return client.transact(request)


def test_registrar_bindings_per_aor_are_capped_as_kamailio_does(
    capped: Stack, client: SipClient
) -> None:
    aor = new_presentity("phones")
    assert register(client, aor, "<sip:desk@192.0.2.1:5060>").status == 200
    assert register(client, aor, "<sip:mobile@192.0.2.2:5060>").status == 200

    refused = register(client, aor, "<sip:tablet@192.0.2.3:5060>")
    assert (refused.status, refused.reason) == (503, "Too Many Registered Contacts")
    assert cap_refusals(capped, "presence-store", "presence_cap_refusals_total",
                        'cap="contacts"') >= 1  # fmt: skip

    refreshed = register(client, aor, "<sip:desk@192.0.2.1:5060>", "600")
    assert refreshed.status == 200 and len(refreshed.headers.get_all("Contact")) == 2
    other = new_presentity("other-phones")
    assert register(client, other, "<sip:tablet@192.0.2.3:5060>").status == 200
    assert register(client, aor, "<sip:mobile@192.0.2.2:5060>", "0").status == 200
    assert register(client, aor, "<sip:tablet@192.0.2.3:5060>").status == 200


def answer_notifies(client: SipClient, dialogs: int) -> None:
    """Answer NOTIFYs 200 until one of each of `dialogs` dialogs arrived (UDP
    retransmissions of one are answered too, and counted once)."""
    seen: set[str | None] = set()
    while len(seen) < dialogs:
        notify = client.next_request()
        client.answer(notify)
        seen.add(notify.headers.get("Call-ID"))


def next_winfo_notify(client: SipClient) -> SipRequest:
    """The next presence.winfo NOTIFY; presence NOTIFYs (retransmissions) are answered."""
    while True:
        notify = client.next_request()
        client.answer(notify)
        if notify.headers.get("Event") == "presence.winfo":
            return notify


def test_winfo_with_many_pending_watchers_is_a_bounded_notify_that_parses(
    test_database: str,
) -> None:
    """Forty pending watchers (no rules: pending) make a watcher list larger than
    PRESENCE_MAX_WINFO_BYTES (2048 here): the owner's full-state NOTIFY is cut to fit,
    pending watchers newest first, and the cut is counted."""
    limit = 2048
    with running_stack(test_database, PRESENCE_MAX_WINFO_BYTES=str(limit)) as stack:
        presentity = new_presentity("watched")
        client = SipClient(stack.sip, "udp")
        try:
            fans = [new_presentity(f"fan{number}") for number in range(40)]
            for fan in fans:
                dialog = WatcherDialog(client, presentity, secrets.token_hex(6), "f", from_uri=fan)
                assert dialog.subscribe().status == 200
            answer_notifies(client, len(fans))

            owner = WatcherDialog(
                client, presentity, secrets.token_hex(6), "o", from_uri=presentity
            )
            assert owner.subscribe(Event="presence.winfo").status == 200
            notify = next_winfo_notify(client)
            assert owner.to_tag == parse_name_addr(notify.headers.get("From") or "").tag
            assert len(notify.body) <= limit
            info = parse_watcherinfo(notify.body)
            assert (info.state, info.version, info.resource) == ("full", 0, presentity)
            listed = [w.uri for w in info.watchers]
            assert 0 < len(listed) < len(fans)
            assert all(w.status == "pending" for w in info.watchers)
            assert listed == list(reversed(fans))[: len(listed)]  # newest first
            # The first NOTIFY of a subscription is built by presence-store.
            assert cap_refusals(stack, "presence-store", "presence_winfo_truncated_total",
                                'state="full"') >= 1  # fmt: skip
        finally:
            client.close()
