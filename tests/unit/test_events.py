import json

import pytest

from presence.bus import events
from presence.bus.topics import Topics


def publish_request(**changes: object) -> events.PublishRequest:
    values: dict[str, object] = dict(
        request_id="r1",
        edge_id="e1",
        received_at=1.5,
        username="alice",
        domain="example.com",
        event="presence",
        expires=None,
        if_match=None,
        content_type="application/pidf+xml",
        body="<presence/>",
        flow="udp:127.0.0.1:5060",
    )
    values.update(changes)
    return events.PublishRequest(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "event",
    [
        publish_request(),
        publish_request(expires=0, if_match="etag", body="", content_type=None),
        events.SipReply("r1", 200, "OK", [("SIP-ETag", "x"), ("Expires", "60")]),
        events.PresentityChanged("alice", "example.com", "presence", "r1", 2.0),
    ],
)
def test_round_trip(event: events.Event) -> None:
    assert events.decode(events.encode(event)) == event


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"type": "mystery", "v": 1}', "unknown event type"),
        (b'{"type": "reply", "v": 99}', "unsupported version"),
        (b'{"type": "reply", "v": 1, "request_id": "r"}', "missing reason, status"),
    ],
)
def test_undecodable_records_raise_one_error_type(data: bytes, message: str) -> None:
    with pytest.raises(events.EventDecodeError, match=message):
        events.decode(data)


def test_a_publish_request_of_version_1_still_decodes() -> None:
    """A version 1 record (the flow was called `source`) from an edge of the previous
    release, or a dead letter put back, decodes as the current version."""
    old = (
        b'{"type":"publish","v":1,"request_uri":"sip:alice@example.com","authorization":null,'
        b'"identity":null,"request_id":"r1","edge_id":"e1","received_at":1.5,'
        b'"username":"alice","domain":"example.com","event":"presence","expires":null,'
        b'"if_match":null,"content_type":"application/pidf+xml","body":"<presence/>",'
        b'"source":"udp:127.0.0.1:5060","instance":null}'
    )
    decoded = events.decode(old)
    assert decoded == publish_request(request_uri="sip:alice@example.com")
    assert isinstance(decoded, events.PublishRequest) and decoded.flow == "udp:127.0.0.1:5060"
    without_flow = old.replace(b',"source":"udp:127.0.0.1:5060"', b"")
    with pytest.raises(events.EventDecodeError, match="missing flow"):
        events.decode(without_flow)


def test_a_publish_request_is_written_as_version_2_with_flow() -> None:
    payload = json.loads(events.encode(publish_request()))
    assert payload["v"] == 2 and payload["flow"] == "udp:127.0.0.1:5060"
    assert "source" not in payload
    with pytest.raises(events.EventDecodeError, match="unsupported version 3"):
        events.decode(json.dumps({**payload, "v": 3}).encode())


def test_presentity_is_the_kafka_key() -> None:
    assert publish_request().presentity == "alice@example.com"


def test_namespace_prefixes_topics_and_groups() -> None:
    assert Topics().requests == "sip.requests"
    assert Topics().edge_inbox("e1") == "sip.edge.e1"
    spaced = Topics("test-1")
    assert (spaced.requests, spaced.changes, spaced.group("notifier")) == (
        "test-1.sip.requests",
        "test-1.presence.changes",
        "test-1.notifier",
    )
