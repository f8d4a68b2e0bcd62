"""message-summary (RFC 3842) on the real stack: a voicemail server publishes a
mailbox's summary, its owner's phone subscribes and gets the newest one."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import asyncpg
import pytest

from presence.sip.message import SipResponse

from .conftest import Stack, running_stack
from .sip_client import SipClient
from .test_subscribe import WatcherDialog

pytestmark = pytest.mark.integration

SUMMARY_TYPE = "application/simple-message-summary"
TWO_NEW = b"Messages-Waiting: yes\r\nMessage-Account: sip:vm@example.com\r\nVoice-Message: 2/8\r\n"
NONE_NEW = b"Messages-Waiting: no\r\nVoice-Message: 0/10\r\n"


class VoicemailServer:
    """Publishes summaries from one socket (one device), afresh each time."""

    def __init__(self, stack: Stack) -> None:
        self.client = SipClient(stack.sip, "udp")

    def publish(self, mailbox: str, body: bytes, content_type: str = SUMMARY_TYPE) -> SipResponse:
        headers = [("Event", "message-summary"), ("Content-Type", content_type)]
        return self.client.transact(
            self.client.request(
                "PUBLISH", mailbox, headers, body, from_uri="sip:voicemail@example.com"
            )
        )

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def voicemail(stack: Stack) -> Iterator[VoicemailServer]:
    server = VoicemailServer(stack)
    yield server
    server.close()


@pytest.fixture
def phone(stack: Stack) -> Iterator[WatcherDialog]:
    """The mailbox owner's phone: it subscribes to its own address."""
    client = SipClient(stack.sip, "udp")
    mailbox = f"sip:mb-{secrets.token_hex(4)}@example.com"
    yield WatcherDialog(
        client, mailbox, secrets.token_hex(8), secrets.token_hex(4), from_uri=mailbox
    )
    client.close()


def subscribe_to_summary(dialog: WatcherDialog) -> SipResponse:
    return dialog.subscribe(Event="message-summary", Accept=SUMMARY_TYPE)


async def test_the_phone_sees_no_messages_then_each_newest_summary(
    stack: Stack, db: asyncpg.Connection, phone: WatcherDialog, voicemail: VoicemailServer
) -> None:
    assert (await asyncio.to_thread(subscribe_to_summary, phone)).status == 200
    first = await asyncio.to_thread(phone.next_notify)
    assert first.headers.get("Event") == "message-summary"
    assert first.headers.get("Content-Type") == SUMMARY_TYPE
    assert first.body == b"Messages-Waiting: no\r\n"  # nothing published yet

    assert (await asyncio.to_thread(voicemail.publish, phone.presentity, TWO_NEW)).status == 200
    second = await asyncio.to_thread(phone.next_notify)
    assert second.body == TWO_NEW
    assert second.headers.get("Content-Type") == SUMMARY_TYPE

    # The server publishes afresh (no SIP-If-Match): its new summary replaces the old.
    assert (await asyncio.to_thread(voicemail.publish, phone.presentity, NONE_NEW)).status == 200
    third = await asyncio.to_thread(phone.next_notify)
    assert third.body == NONE_NEW
    user = phone.presentity.removeprefix("sip:").split("@")[0]
    rows = await db.fetchval(
        "SELECT count(*) FROM presentity WHERE username = $1 AND event = 'message-summary'",
        user,
    )
    assert rows == 1


def test_a_summary_published_before_the_subscription_is_in_the_first_notify(
    phone: WatcherDialog, voicemail: VoicemailServer
) -> None:
    assert voicemail.publish(phone.presentity, TWO_NEW).status == 200
    assert subscribe_to_summary(phone).status == 200
    assert phone.next_notify().body == TWO_NEW


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"Voice-Message: 2/8\r\n", "Message summary must start with Messages-Waiting"),
        (b"Messages-Waiting: perhaps\r\n", "Messages-Waiting must be yes or no"),
        (
            b"Messages-Waiting: yes\r\nVoice-Message: lots\r\n",
            "Voice-Message counts must be new/old",
        ),
    ],
)
def test_a_bad_summary_is_400_with_the_reason(
    voicemail: VoicemailServer, body: bytes, reason: str
) -> None:
    response = voicemail.publish("sip:bad-mwi@example.com", body)
    assert (response.status, response.reason) == (400, reason)


def test_another_body_type_is_415_with_accept(voicemail: VoicemailServer) -> None:
    response = voicemail.publish("sip:mwi-415@example.com", b"hello", "text/plain")
    assert response.status == 415
    assert response.headers.get("Accept") == SUMMARY_TYPE


def test_someone_else_s_mailbox_is_403(stack: Stack) -> None:
    client = SipClient(stack.sip, "udp")
    try:
        snoop = WatcherDialog(
            client, "sip:private-mb@example.com", secrets.token_hex(8), secrets.token_hex(4)
        )
        assert subscribe_to_summary(snoop).status == 403
    finally:
        client.close()


def test_turned_off_packages_get_489_and_the_empty_body_can_be_left_out(
    test_database: str,
) -> None:
    with running_stack(
        test_database,
        PRESENCE_EVENT_PACKAGES="presence,message-summary",
        PRESENCE_MESSAGE_SUMMARY_EMPTY_BODY="0",
    ) as stack:
        client = SipClient(stack.sip, "udp")
        try:
            mailbox = f"sip:mb-{secrets.token_hex(4)}@example.com"
            winfo = WatcherDialog(client, mailbox, secrets.token_hex(8), "w1", from_uri=mailbox)
            refused = winfo.subscribe(Event="presence.winfo")
            assert refused.status == 489
            assert refused.headers.get("Allow-Events") == "presence, message-summary"
            phone = WatcherDialog(client, mailbox, secrets.token_hex(8), "p1", from_uri=mailbox)
            assert subscribe_to_summary(phone).status == 200
            first = phone.next_notify()
            assert first.body == b""
            assert first.headers.get("Content-Type") is None
        finally:
            client.close()
