"""Watcher information documents (RFC 3858) and the pieces around them, pure."""

from __future__ import annotations

import pytest
from lxml import etree

from presence.packages.watcherinfo import (
    WATCHERINFO_NS,
    Watcher,
    parse_watcherinfo,
    watcher_event,
    watcherinfo_document,
)
from presence.pidf.document import current_sphere
from presence.subscriptions.notify import Subscription, build_notify, subscription_state

RESOURCE = "sip:alice@example.com"


def test_full_document_lists_each_watcher_with_status_event_and_id() -> None:
    body = watcherinfo_document(
        RESOURCE,
        "presence",
        0,
        "full",
        [
            Watcher("t1", "sip:bob@example.com", "pending", "subscribe", 3600),
            Watcher("t2", "sip:carol@example.com", "active", "approved", 10),
        ],
    )
    root = etree.fromstring(body)
    assert root.tag == f"{{{WATCHERINFO_NS}}}watcherinfo"
    assert (root.get("version"), root.get("state")) == ("0", "full")
    (watcher_list,) = root
    assert (watcher_list.get("resource"), watcher_list.get("package")) == (RESOURCE, "presence")
    watchers = [(w.get("id"), w.text, w.get("status"), w.get("event"), w.get("expiration"))
                for w in watcher_list]  # fmt: skip
    assert watchers == [
        ("t1", "sip:bob@example.com", "pending", "subscribe", "3600"),
        ("t2", "sip:carol@example.com", "active", "approved", "10"),
    ]


def test_document_round_trips_through_the_parser() -> None:
    watchers = [Watcher("t9", "sip:dave@example.org", "terminated", "rejected")]
    parsed = parse_watcherinfo(watcherinfo_document(RESOURCE, "presence", 7, "partial", watchers))
    assert (parsed.version, parsed.state, parsed.resource, parsed.package) == (
        7, "partial", RESOURCE, "presence",
    )  # fmt: skip
    assert parsed.watchers == watchers


def test_empty_watcher_list_is_a_valid_full_document() -> None:
    parsed = parse_watcherinfo(watcherinfo_document(RESOURCE, "presence", 0, "full", []))
    assert parsed.watchers == [] and parsed.state == "full"


def test_watcher_uri_is_escaped_not_injected() -> None:
    body = watcherinfo_document(
        RESOURCE,
        "presence",
        1,
        "partial",
        [Watcher("x", "sip:a@b.c;x=<evil/>", "active", "subscribe")],
    )
    assert parse_watcherinfo(body).watchers[0].uri == "sip:a@b.c;x=<evil/>"


def test_state_must_be_full_or_partial() -> None:
    with pytest.raises(ValueError):
        watcherinfo_document(RESOURCE, "presence", 0, "delta", [])


@pytest.mark.parametrize(
    ("status", "reason", "recorded", "expected"),
    [
        ("pending", None, "subscribe", "subscribe"),
        ("active", None, "approved", "approved"),
        ("active", None, None, "subscribe"),
        ("terminated", "rejected", "subscribe", "rejected"),
        ("terminated", "probation", "approved", "probation"),
        ("terminated", "timeout", "approved", "timeout"),
        ("terminated", "nonsense", "approved", "deactivated"),
    ],
)
def test_watcher_event_of_a_subscription(
    status: str, reason: str | None, recorded: str | None, expected: str
) -> None:
    assert watcher_event(status, reason, recorded) == expected


def test_parser_refuses_other_documents() -> None:
    with pytest.raises(ValueError):
        parse_watcherinfo(b"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='sip:a@b'/>")
    with pytest.raises(ValueError):
        parse_watcherinfo(b"<watcherinfo")


RPID = "urn:ietf:params:xml:ns:pidf:rpid"
DM = "urn:ietf:params:xml:ns:pidf:data-model"


def pidf_with_sphere(sphere: str) -> bytes:
    return (
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="{DM}" xmlns:rpid="{RPID}" '
        f'entity="{RESOURCE}"><dm:person id="p">{sphere}</dm:person></presence>'
    ).encode()


def test_current_sphere_reads_text_and_element_forms() -> None:
    assert current_sphere(pidf_with_sphere("<rpid:sphere>work</rpid:sphere>")) == "work"
    assert current_sphere(pidf_with_sphere("<rpid:sphere><rpid:home/></rpid:sphere>")) == "home"
    assert current_sphere(pidf_with_sphere("")) is None
    assert current_sphere(b"not xml") is None


def subscription(**overrides: object) -> Subscription:
    values: dict[str, object] = dict(
        id=1, to_user="alice", to_domain="example.com", event="presence.winfo", event_id=None,
        to_tag="tt", from_tag="ft", callid="c", local_cseq=3, version=1,
        contact="sip:alice@192.0.2.1", record_route=None, expires=2_000, status="active",
        reason=None, local_uri=RESOURCE, remote_uri=RESOURCE, from_user="alice",
        from_domain="example.com", flow="", edge_id="e",
    )  # fmt: skip
    values.update(overrides)
    return Subscription(**values)  # type: ignore[arg-type]


def test_winfo_notify_carries_the_watcherinfo_type() -> None:
    notify, final = build_notify(
        subscription(), document=b"<x/>", now=1_000, contact_uri="sip:s", notify_id="n"
    )
    headers = dict(notify.headers)
    assert headers["Content-Type"] == "application/watcherinfo+xml"
    assert headers["Event"] == "presence.winfo"
    assert headers["Subscription-State"] == "active;expires=999"  # rounded (subscriptions.expiry)
    assert not final


def test_probation_tells_the_watcher_when_to_retry() -> None:
    ended = subscription(event="presence", status="terminated", reason="probation")
    assert subscription_state(ended, 1_000, retry_after=600) == (
        "terminated;reason=probation;retry-after=600",
        True,
    )
    deactivated = subscription(event="presence", status="terminated", reason="deactivated")
    assert subscription_state(deactivated, 1_000, retry_after=600) == (
        "terminated;reason=deactivated",
        True,
    )
