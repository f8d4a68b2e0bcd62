"""dialog (RFC 4235) on the real stack: a PBX and phones publish a line's dialogs,
busy-lamp fields subscribe and see one document; a "terminated" published right
after "early" is never followed by a NOTIFY showing "early", with 3 notifier replicas."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator

import pytest
from lxml import etree

from presence.packages.dialoginfo import dialog_states
from presence.sip.message import SipRequest, SipResponse

from .conftest import Stack, metric_samples, running_stack
from .sip_client import SipClient
from .test_privacy import rules, xcap
from .test_subscribe import WatcherDialog

pytestmark = pytest.mark.integration

DIALOG_TYPE = "application/dialog-info+xml"
NS = "urn:ietf:params:xml:ns:dialog-info"


def dialog_info(entity: str, *dialogs: tuple[str, str], version: int = 0) -> bytes:
    body = "".join(
        f'<dialog id="{ident}" call-id="{ident}@pbx" local-tag="t-{ident}" '
        f'direction="recipient"><state>{state}</state></dialog>'
        for ident, state in dialogs
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><dialog-info xmlns="{NS}" '
        f'version="{version}" state="full" entity="{entity}">{body}</dialog-info>'
    ).encode()


class Publisher:
    """A PBX or a phone: one socket (one device) publishing a line's dialogs."""

    def __init__(self, stack: Stack, name: str) -> None:
        self.client = SipClient(stack.sip, "udp")
        self.from_uri = f"sip:{name}@example.com"

    def request(
        self, line: str, body: bytes, etag: str | None = None, expires: int | None = None
    ) -> bytes:
        headers = [("Event", "dialog")]
        if body:
            headers.append(("Content-Type", DIALOG_TYPE))
        if etag is not None:
            headers.append(("SIP-If-Match", etag))
        if expires is not None:
            headers.append(("Expires", str(expires)))
        return self.client.request("PUBLISH", line, headers, body, from_uri=self.from_uri)

    def publish(self, line: str, body: bytes, **options: str | int | None) -> SipResponse:
        return self.client.transact(self.request(line, body, **options))  # type: ignore[arg-type]

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def pbx(stack: Stack) -> Iterator[Publisher]:
    publisher = Publisher(stack, "pbx")
    yield publisher
    publisher.close()


@pytest.fixture
def lamp(stack: Stack) -> Iterator[WatcherDialog]:
    """A busy-lamp field key watching a colleague's line."""
    client = SipClient(stack.sip, "udp")
    line = f"sip:line-{secrets.token_hex(4)}@example.com"
    yield WatcherDialog(client, line, secrets.token_hex(8), secrets.token_hex(4))
    client.close()


def watch_dialogs(lamp: WatcherDialog) -> SipResponse:
    return lamp.subscribe(Event="dialog", Accept=DIALOG_TYPE)


def shown(notify: SipRequest) -> tuple[int, dict[str, str]]:
    """(version, dialog id -> state) of a NOTIFY's document."""
    root = etree.fromstring(notify.body)
    assert root.get("state") == "full"
    return int(root.get("version") or "-1"), dialog_states(notify.body)


def test_publishers_dialogs_make_one_document_and_a_removed_one_shows_terminated_once(
    stack: Stack, pbx: Publisher, lamp: WatcherDialog
) -> None:
    assert watch_dialogs(lamp).status == 200
    first = lamp.next_notify()
    assert first.headers.get("Event") == "dialog"
    assert first.headers.get("Content-Type") == DIALOG_TYPE
    assert shown(first) == (0, {})  # an idle line
    assert etree.fromstring(first.body).get("entity") == lamp.presentity

    published = pbx.publish(lamp.presentity, dialog_info(lamp.presentity, ("call-1", "early")))
    assert published.status == 200
    assert shown(lamp.next_notify()) == (1, {"call-1": "early"})

    phone = Publisher(stack, "phone")
    try:
        body = dialog_info(lamp.presentity, ("call-1", "confirmed"), ("call-2", "trying"))
        from_phone = phone.publish(lamp.presentity, body)
        assert from_phone.status == 200
        # The phone's newer report of call-1 wins; call-2 joins it.
        assert shown(lamp.next_notify()) == (2, {"call-1": "confirmed", "call-2": "trying"})

        etag = from_phone.headers.get("SIP-ETag")
        assert phone.publish(lamp.presentity, b"", etag=etag, expires=0).status == 200
        # The phone's publication is gone: call-2 (only the phone had it) shows terminated
        # once; call-1 is the PBX's "early" again.
        assert shown(lamp.next_notify()) == (3, {"call-1": "early", "call-2": "terminated"})
    finally:
        phone.close()

    etag = published.headers.get("SIP-ETag")
    body = dialog_info(lamp.presentity, ("call-1", "terminated"))
    assert pbx.publish(lamp.presentity, body, etag=etag).status == 200
    assert shown(lamp.next_notify()) == (4, {"call-1": "terminated"})
    # The metrics' event label covers the package.
    sent = metric_samples(stack, "sip-edge", "presence_sip_notifies_sent_total")
    assert sent.get('event="dialog"', 0) >= 5
    latency = metric_samples(stack, "sip-edge", "presence_publish_to_notify_seconds_count")
    assert latency.get('event="dialog"', 0) >= 4


def test_the_state_published_before_the_subscription_is_in_the_first_notify(
    pbx: Publisher, lamp: WatcherDialog
) -> None:
    body = dialog_info(lamp.presentity, ("c", "confirmed"))
    assert pbx.publish(lamp.presentity, body).status == 200
    assert watch_dialogs(lamp).status == 200
    assert shown(lamp.next_notify()) == (0, {"c": "confirmed"})


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<dialog-info", "dialog-info document is not well-formed XML"),
        (
            b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@example.com"/>',
            "Body is not a dialog-info document",
        ),
        (
            f'<dialog-info xmlns="{NS}" version="0" state="full"/>'.encode(),
            "dialog-info entity missing or not a URI",
        ),
        (
            f'<dialog-info xmlns="{NS}" version="x" state="full" entity="sip:a@b"/>'.encode(),
            "dialog-info version missing or not a number",
        ),
    ],
)
def test_a_bad_document_is_400_with_the_reason(pbx: Publisher, body: bytes, reason: str) -> None:
    response = pbx.publish("sip:bad-dialog@example.com", body)
    assert (response.status, response.reason) == (400, reason)


def test_another_body_type_is_415_with_accept(stack: Stack) -> None:
    client = SipClient(stack.sip, "udp")
    try:
        headers = [("Event", "dialog"), ("Content-Type", "application/pidf+xml")]
        request = client.request("PUBLISH", "sip:d415@example.com", headers, b"<presence/>")
        response = client.transact(request)
    finally:
        client.close()
    assert response.status == 415
    assert response.headers.get("Accept") == DIALOG_TYPE


def test_pres_rules_decide_who_sees_a_line(test_database: str) -> None:
    with running_stack(test_database, PRESENCE_FORCE_ACTIVE="0") as stack:
        line = f"sip:private-line-{secrets.token_hex(3)}@example.com"
        pbx = Publisher(stack, "pbx")
        client = SipClient(stack.sip, "udp")
        try:
            body = dialog_info(line, ("call-9", "confirmed"))
            assert pbx.publish(line, body).status == 200
            lamp = WatcherDialog(client, line, secrets.token_hex(6), secrets.token_hex(3))
            assert watch_dialogs(lamp).status == 200
            pending = lamp.next_notify()
            assert pending.headers.get("Subscription-State").startswith("pending")
            assert pending.body == b""

            assert xcap(stack, "PUT", line, rules("allow"))[0] == 201
            allowed = lamp.next_notify()
            assert allowed.headers.get("Subscription-State").startswith("active")
            assert shown(allowed)[1] == {"call-9": "confirmed"}

            assert xcap(stack, "PUT", line, rules("polite-block"))[0] == 200
            # polite-block: the watcher stays subscribed and sees an idle line.
            assert shown(lamp.next_notify())[1] == {}
        finally:
            client.close()
            pbx.close()


# --- the out-of-order case, with 3 notifier replicas -------------------------------

LINES = 3
CALLS_PER_LINE = 20  # below PRESENCE_MAX_PUBLICATIONS: every call stays published


def ring_and_hang_up(stack: Stack, line: str) -> None:
    """For each call, "early" then "terminated" sent back to back, without waiting for
    the first answer (the second, an initial PUBLISH about the same dialog from the
    same device, replaces the first)."""
    pbx = Publisher(stack, "pbx")
    try:
        for call in range(CALLS_PER_LINE):
            ident = f"call-{call}"
            pbx.client.send(pbx.request(line, dialog_info(line, (ident, "early"))))
            pbx.client.send(pbx.request(line, dialog_info(line, (ident, "terminated"))))
            answers = [pbx.client.receive(), pbx.client.receive()]
            assert [getattr(a, "status", None) for a in answers] == [200, 200]
    finally:
        pbx.close()


def watch_until_all_terminated(lamp: WatcherDialog, timeout: float = 60) -> list[dict[str, str]]:
    """Every document the lamp is sent, in arrival order, until every call shows
    terminated."""
    seen: list[dict[str, str]] = []
    versions: list[int] = []
    deadline = time.monotonic() + timeout
    everything_over = {f"call-{call}": "terminated" for call in range(CALLS_PER_LINE)}
    while not seen or seen[-1] != everything_over:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"the calls never all showed terminated; last: {seen[-1:]}"
        try:
            notify = lamp.next_notify_within(remaining)
        except TimeoutError:
            continue
        version, states = shown(notify)
        versions.append(version)
        seen.append(states)
    assert versions == sorted(set(versions)), f"versions not increasing: {versions}"
    return seen


async def test_terminated_after_early_is_never_followed_by_early(three_notifiers: Stack) -> None:
    stack = three_notifiers
    clients = [SipClient(stack.sip, "udp") for _ in range(LINES)]
    lamps = [
        WatcherDialog(
            client,
            f"sip:busy-{secrets.token_hex(4)}@example.com",
            secrets.token_hex(8),
            secrets.token_hex(4),
        )
        for client in clients
    ]
    try:
        for lamp in lamps:
            assert watch_dialogs(lamp).status == 200
            assert shown(lamp.next_notify())[1] == {}
        watching = [asyncio.to_thread(watch_until_all_terminated, lamp) for lamp in lamps]
        publishing = [asyncio.to_thread(ring_and_hang_up, stack, lamp.presentity) for lamp in lamps]
        results = await asyncio.gather(*watching, *publishing)
    finally:
        for client in clients:
            client.close()
    for documents in results[:LINES]:
        ended: set[str] = set()
        for states in documents:
            for ident in ended:
                assert states.get(ident) == "terminated", f"{ident} came back: {documents}"
            ended |= {ident for ident, state in states.items() if state == "terminated"}
