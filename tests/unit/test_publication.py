"""RFC 3903 decisions of presence-store, without a database."""

import pytest

from presence.settings import load
from presence_store.publication import Accepted, Answer, PublishKind, classify, success_reply

from .test_events import publish_request

PIDF = (
    '<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
    'entity="sip:alice@example.com"><tuple id="a"><status><basic>unknown</basic>'
    "</status></tuple></presence>"
)
EXPIRY = load({"PRESENCE_MIN_EXPIRES": "60"}).expiry_policy


def test_initial_publication_gets_default_expiry() -> None:
    assert classify(publish_request(body=PIDF), EXPIRY) == Accepted(
        PublishKind.INITIAL, 3600, PIDF, frozenset({"id:a"})
    )


def test_expiry_above_max_is_lowered() -> None:
    decision = classify(publish_request(body=PIDF, expires=99999), EXPIRY)
    assert isinstance(decision, Accepted) and decision.expires == 3600


def test_expiry_below_min_is_423_with_min_expires() -> None:
    assert classify(publish_request(body=PIDF, expires=10), EXPIRY) == Answer(
        423, "Interval Too Brief", [("Min-Expires", "60")]
    )


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        ({"if_match": "t", "body": ""}, PublishKind.REFRESH),
        ({"if_match": "t", "body": PIDF}, PublishKind.MODIFY),
        ({"if_match": "t", "body": "", "expires": 0}, PublishKind.REMOVE),
    ],
)
def test_conditional_kinds(changes: dict[str, object], kind: PublishKind) -> None:
    decision = classify(publish_request(**changes), EXPIRY)
    assert isinstance(decision, Accepted) and decision.kind is kind


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({"body": ""}, 400),  # neither body nor SIP-If-Match
        ({"body": "", "expires": 0}, 400),
        ({"body": PIDF, "content_type": "text/plain"}, 415),
        ({"body": "<presence"}, 400),  # not well-formed
        ({"body": "<note xmlns='urn:x'/>"}, 400),  # not PIDF
        ({"body": '<presence xmlns="urn:ietf:params:xml:ns:pidf"/>'}, 400),  # no entity
    ],
)
def test_refusals(changes: dict[str, object], status: int) -> None:
    decision = classify(publish_request(**changes), EXPIRY)
    assert isinstance(decision, Answer) and decision.status == status


def test_xml_bomb_is_refused_cheaply() -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:a@b">&lol2;</presence>'
    )
    decision = classify(publish_request(body=bomb), EXPIRY)
    assert isinstance(decision, Answer) and decision.status == 400


def test_expires_offset_lowers_the_told_expiry_but_not_below_zero() -> None:
    expiry = load({"PRESENCE_EXPIRES_OFFSET": "30"}).expiry_policy
    assert success_reply("t", 600, expiry).headers == [("SIP-ETag", "t"), ("Expires", "570")]
    assert success_reply("t", 10, expiry).headers == [("SIP-ETag", "t"), ("Expires", "0")]
