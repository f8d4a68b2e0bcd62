"""Message summaries (RFC 3842): the parser and the package's state."""

import pytest

from presence.packages.message_summary import (
    NO_MESSAGES,
    Counts,
    SummaryError,
    parse_message_summary,
)
from presence.packages.registry import PACKAGES, Aggregation, Authorization
from presence.pidf.aggregation import Publication
from presence.settings import load

ENTITY = "sip:alice@example.com"
# RFC 3842 §5.2's example.
RFC_EXAMPLE = (
    b"Messages-Waiting: yes\r\n"
    b"Message-Account: sip:alice@vmail.example.com\r\n"
    b"Voice-Message: 4/8 (1/2)\r\n"
    b"\r\n"
    b"To: <alice@atlanta.example.com>\r\n"
    b"From: <bob@biloxi.example.com>\r\n"
    b"Subject: carpool tomorrow?\r\n"
)


def test_the_rfc_example_parses() -> None:
    summary = parse_message_summary(RFC_EXAMPLE)
    assert summary.waiting
    assert summary.account == "sip:alice@vmail.example.com"
    assert summary.messages == {"voice-message": Counts(4, 8, 1, 2)}
    assert summary.headers[2] == ("Subject", "carpool tomorrow?")


def test_a_minimal_body_and_bare_line_feeds_parse() -> None:
    assert not parse_message_summary(b"Messages-Waiting: no").waiting
    summary = parse_message_summary(b"messages-waiting:YES\nVoice-Message: 2/8\nFax-Message: 0/1\n")
    assert summary.waiting
    assert summary.messages == {"voice-message": Counts(2, 8), "fax-message": Counts(0, 1)}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "Empty message summary"),
        (b"Voice-Message: 2/8\r\n", "must start with Messages-Waiting"),
        (b"Messages-Waiting: maybe\r\n", "yes or no"),
        (b"Messages-Waiting: yes\r\nVoice-Message: two/8\r\n", "counts must be new/old"),
        (b"Messages-Waiting: yes\r\nVoice-Message: 2/8 (1)\r\n", "counts must be new/old"),
        (b"Messages-Waiting: yes\r\nVoice-Message: 2/8\r\nVoice-Message: 1/1\r\n", "twice"),
        (b"Messages-Waiting: yes\r\nSmoke-Signal: 1/0\r\n", "Unknown message context class"),
        (b"Messages-Waiting: yes\r\nnot a header\r\n", "Bad message summary line 2"),
        (b"Messages-Waiting: yes\r\nMessage-Account: alice\r\n", "not a URI"),
        (b"Messages-Waiting: yes\r\n\r\nno colon here\r\n", "Bad message header line 3"),
        (b"Messages-Waiting: yes\r\nVoice-Message: \xff/1\r\n", "not UTF-8"),
        (b"<?xml version='1.0'?><presence/>", "must start with Messages-Waiting"),
        (b"Messages-Waiting: yes\r\n" + b"X" * 20000, "larger than"),
    ],
)
def test_a_bad_body_says_what_is_wrong(body: bytes, reason: str) -> None:
    with pytest.raises(SummaryError, match=reason):
        parse_message_summary(body)


def test_the_package_shows_the_newest_summary_to_its_owner_only() -> None:
    package = PACKAGES["message-summary"]
    assert package.aggregation is Aggregation.NEWEST
    assert package.authorization is Authorization.OWNER
    assert package.publish_types == ("application/simple-message-summary",)
    older = Publication("a", 10, "Messages-Waiting: yes\r\nVoice-Message: 1/0\r\n")
    newer = Publication("b", 20, "Messages-Waiting: no\r\n")
    policy = load({}).document_policy
    assert package.state(ENTITY, [newer, older], [], policy) == b"Messages-Waiting: no\r\n"
    assert package.state(ENTITY, [older], [newer], policy) == older.body.encode()


def test_with_nothing_published_the_state_is_no_messages_or_no_body() -> None:
    package = PACKAGES["message-summary"]
    assert package.state(ENTITY, [], [], load({}).document_policy) == NO_MESSAGES
    off = load({"PRESENCE_MESSAGE_SUMMARY_EMPTY_BODY": "0"}).document_policy
    assert package.state(ENTITY, [], [], off) == b""
    assert package.empty_state(ENTITY, off) == b""


def test_every_summary_marks_the_same_device() -> None:
    package = PACKAGES["message-summary"]
    first = package.device_marks(package.check_body(b"Messages-Waiting: yes\r\n"))
    second = package.device_marks(package.check_body(b"Messages-Waiting: no\r\n"))
    assert first == second != frozenset()
