"""The caps on what clients create, in their pure parts: settings, the registrar's
binding count, bounded watcherinfo documents, chunked winfo notices, and the
aggregated document's size limit as the notifier's parser applies it."""

from __future__ import annotations

import pytest

from presence.packages.watcherinfo import (
    Watcher,
    bounded_watcherinfo_document,
    by_priority,
    parse_watcherinfo,
    watcherinfo_document,
)
from presence.pidf.document import PidfError, current_sphere, parse_pidf
from presence.rules import Transformations, filter_document
from presence.settings import SettingsError, load
from presence_store.registrar import Binding, bindings_after, over_contact_cap
from presence_store.subscribe_store import WATCHER_INFO_CHUNK, watcher_info_notices

RESOURCE = "sip:alice@example.com"


def test_cap_defaults() -> None:
    settings = load({})
    assert settings.max_publications == 32
    assert settings.max_subscriptions_per_watcher == 1000
    assert settings.max_subscriptions_per_presentity == 1000
    assert settings.max_contacts == 16
    # 60 KiB: a NOTIFY with it and 4 KiB of headers fits one UDP datagram.
    assert settings.max_document_bytes == settings.max_winfo_bytes == 61440


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PRESENCE_MAX_PUBLICATIONS", "0", "must be between 1 and 10000, got 0"),
        ("PRESENCE_MAX_SUBSCRIPTIONS_PER_WATCHER", "many", "must be an integer"),
        ("PRESENCE_MAX_SUBSCRIPTIONS_PER_PRESENTITY", "-1", "must be between 1 and"),
        ("PRESENCE_MAX_CONTACTS", "0", "must be between 1 and 10000"),
        # Above 256 KiB a NOTIFY record could near Kafka's 1 MiB once JSON-escaped.
        ("PRESENCE_MAX_DOCUMENT_BYTES", "300000", "must be between 1024 and 262144"),
        ("PRESENCE_MAX_WINFO_BYTES", "100", "must be between 1024 and 262144"),
    ],
)
def test_bad_cap_values_are_refused(variable: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as error:
        load({variable: value})
    assert str(error.value).startswith(f"{variable}: {message}")


def test_cap_values_are_read() -> None:
    settings = load({"PRESENCE_MAX_PUBLICATIONS": "2", "PRESENCE_MAX_WINFO_BYTES": "2048"})
    assert (settings.max_publications, settings.max_winfo_bytes) == (2, 2048)


# --- registrar ------------------------------------------------------------------


def test_bindings_after_adds_refreshes_and_removes() -> None:
    live = ["sip:a@h", "sip:b@h"]
    plan = [Binding("sip:a@h", 60, None), Binding("sip:b@h", 0, None), Binding("sip:c@h", 60, 1)]
    assert bindings_after(live, plan) == 2  # a refreshed, b removed, c added


def test_contact_cap_refuses_only_requests_that_add_beyond_it() -> None:
    cap = load({"PRESENCE_MAX_CONTACTS": "2"}).max_contacts
    two = ["sip:a@h", "sip:b@h"]
    assert over_contact_cap(two, [Binding("sip:c@h", 60, None)], cap)
    assert not over_contact_cap(two, [Binding("sip:a@h", 60, None)], cap)  # refresh
    # Replacing one binding by another in one request stays at the cap.
    swap = [Binding("sip:a@h", 0, None), Binding("sip:c@h", 60, None)]
    assert not over_contact_cap(two, swap, cap)
    # A cap lowered below what an AOR holds: refreshes and removals still pass.
    three = [*two, "sip:c@h"]
    assert not over_contact_cap(three, [Binding("sip:c@h", 60, None)], cap)
    assert not over_contact_cap(three, [Binding("sip:c@h", 0, None)], cap)
    assert over_contact_cap(three, [Binding("sip:d@h", 60, None)], cap)


# --- watcherinfo ----------------------------------------------------------------


def watchers(count: int, status: str = "pending") -> list[Watcher]:
    return [
        Watcher(f"tag{i}", f"sip:watcher{i}@example.com", status, "subscribe", 600)
        for i in range(count)
    ]


def test_priority_puts_pending_watchers_first_then_newest_first() -> None:
    oldest_first = [
        Watcher("1", "sip:a@x", "active", "approved"),
        Watcher("2", "sip:b@x", "pending", "subscribe"),
        Watcher("3", "sip:c@x", "active", "subscribe"),
        Watcher("4", "sip:d@x", "pending", "subscribe"),
    ]
    assert [w.id for w in by_priority(oldest_first)] == ["4", "2", "3", "1"]


def test_a_list_that_fits_is_whole() -> None:
    listed = watchers(3)
    document, omitted = bounded_watcherinfo_document(RESOURCE, "presence", 0, "full", listed, 4096)
    assert omitted == 0
    assert document == watcherinfo_document(RESOURCE, "presence", 0, "full", listed)


@pytest.mark.parametrize("limit", [1024, 5000, 65536])
def test_ten_thousand_watchers_are_cut_to_the_largest_prefix_that_fits(limit: int) -> None:
    listed = watchers(10_000)
    document, omitted = bounded_watcherinfo_document(RESOURCE, "presence", 3, "full", listed, limit)
    assert len(document) <= limit
    parsed = parse_watcherinfo(document)
    kept = len(parsed.watchers)
    assert omitted == 10_000 - kept and kept > 0
    assert [w.id for w in parsed.watchers] == [w.id for w in listed[:kept]]
    # One more watcher would not have fitted.
    one_more = watcherinfo_document(RESOURCE, "presence", 3, "full", listed[: kept + 1])
    assert len(one_more) > limit
    assert (parsed.version, parsed.state) == (3, "full")


def test_a_limit_below_one_watcher_gives_an_empty_list() -> None:
    long_uri = Watcher("t", "sip:" + "x" * 2000 + "@example.com", "pending", "subscribe")
    document, omitted = bounded_watcherinfo_document(
        RESOURCE, "presence", 1, "partial", [long_uri], 1024
    )
    assert omitted == 1 and parse_watcherinfo(document).watchers == []


def test_winfo_notices_are_chunked() -> None:
    changed = watchers(2 * WATCHER_INFO_CHUNK + 1, "terminated")
    notices = watcher_info_notices("alice", "example.com", "presence", changed, "cause", 1.0)
    assert [len(n.watchers) for n in notices] == [WATCHER_INFO_CHUNK, WATCHER_INFO_CHUNK, 1]
    assert [w for n in notices for w in n.watchers] == [
        (w.id, w.uri, w.status, w.event) for w in changed
    ]
    assert watcher_info_notices("alice", "example.com", "presence", [], "cause", 1.0) == []


# --- the aggregated document's limit, as the notifier parses ----------------------


def big_document(size: int) -> bytes:
    head = f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{RESOURCE}">'
    head += '<tuple id="t"><status><basic>open</basic></status></tuple><note>'
    tail = "</note></presence>"
    return (head + "n" * (size - len(head) - len(tail)) + tail).encode()


def test_the_notifier_parses_documents_up_to_the_configured_limit() -> None:
    document = big_document(100_000)  # over the one-publication limit of 64 KiB
    with pytest.raises(PidfError, match="too large"):
        parse_pidf(document)
    assert parse_pidf(document, max_bytes=100_000) is not None
    assert current_sphere(document, max_bytes=100_000) is None
    everything = Transformations(declared=False)
    filtered = filter_document(document, everything, default="kamailio", max_bytes=100_000)
    assert filtered == document
    with pytest.raises(PidfError):
        filter_document(document, everything, max_bytes=65536)


ALLOW_ALL = b"""<?xml version="1.0" encoding="UTF-8"?>
<cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy"
            xmlns:pr="urn:ietf:params:xml:ns:pres-rules">
  <cr:rule id="all"><cr:conditions/>
    <cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions>
    <cr:transformations><pr:provide-services><pr:all-services/></pr:provide-services>
    </cr:transformations>
  </cr:rule>
</cr:ruleset>"""


def test_a_document_over_a_lowered_limit_is_withheld_not_a_failed_change() -> None:
    """A document stored before PRESENCE_MAX_DOCUMENT_BYTES was lowered cannot be
    filtered: the watcher gets "nothing known" and the notifier goes on."""
    from datetime import UTC, datetime

    from presence.rules.authorization import Judge
    from presence.subscriptions.notify import Subscription
    from presence.tables.notify_views import as_seen_by

    settings = load({"PRESENCE_MAX_DOCUMENT_BYTES": "4096"})
    subscription = Subscription(
        1, "alice", "example.com", "presence", None, "tt", "ft", "c", 1, 1, "sip:b@h", None,
        2**40, "active", None, RESOURCE, "sip:bob@example.com", "bob", "example.com", "udp:h",
        "e",
    )  # fmt: skip
    judge = Judge(ALLOW_ALL.decode(), settings.authorization_policy, datetime.now(UTC))
    seen = as_seen_by(settings.document_policy, subscription, big_document(5000), RESOURCE, judge)
    root = parse_pidf(seen)
    assert root.get("entity") == RESOURCE and len(root) == 0
    # Within the limit the same rules show the document.
    small = big_document(3000)
    shown = as_seen_by(settings.document_policy, subscription, small, RESOURCE, judge)
    assert b'<tuple id="t">' in shown
