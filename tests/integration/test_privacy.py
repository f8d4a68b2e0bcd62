"""Privacy on the real stack (force_active=0): pres-rules stored through the XCAP API
decide each subscription's state and what each watcher sees (RFC 5025)."""

from __future__ import annotations

import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from lxml import etree

from presence.sip.message import SipRequest
from presence.watcherinfo import WatcherInfo, parse_watcherinfo

from .conftest import Stack, make_stack
from .sip_client import SipClient
from .test_subscribe import WatcherDialog, publish_device

pytestmark = pytest.mark.integration

PIDF = "urn:ietf:params:xml:ns:pidf"
WATCHER = "sip:watcher@example.com"  # WatcherDialog's From


def rules(sub_handling: str, *, transformations: str = "") -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy"
            xmlns:pr="urn:ietf:params:xml:ns:pres-rules">
  <cr:rule id="friends">
    <cr:conditions><cr:identity><cr:one id="{WATCHER}"/></cr:identity></cr:conditions>
    <cr:actions><pr:sub-handling>{sub_handling}</pr:sub-handling></cr:actions>
    <cr:transformations>{transformations}</cr:transformations>
  </cr:rule>
</cr:ruleset>""".encode()


def xcap(
    stack: Stack, method: str, presentity: str, body: bytes | None = None, **headers: str
) -> tuple[int, bytes, str | None]:
    """(status, body, ETag) of one XCAP request; headers with _ for - (If_Match)."""
    xui = urllib.parse.quote(presentity, safe="")
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    if body is not None:
        sent["Content-Type"] = "application/auth-policy+xml"
    request = urllib.request.Request(
        stack.http("presence-store", f"/xcap-root/pres-rules/users/{xui}/index"),
        data=body,
        method=method,
        headers=sent,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), response.headers.get("ETag")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("ETag")


@pytest.fixture(scope="module")
def private_stack(test_database: str) -> Iterator[Stack]:
    stack = make_stack(test_database, PRESENCE_FORCE_ACTIVE="0")
    try:
        for name in ("presence-store", "notifier", "sip-edge"):
            stack.start(name)
        yield stack
    finally:
        stack.close()


def device_document(entity: str) -> bytes:
    return (
        f'<presence xmlns="{PIDF}" entity="{entity}"><tuple id="desk">'
        f"<status><basic>open</basic></status></tuple><note>in a meeting</note></presence>"
    ).encode()


def test_rules_move_a_watcher_from_pending_to_allowed_to_blocked(private_stack: Stack) -> None:
    presentity = f"sip:private-{secrets.token_hex(3)}@example.com"
    assert publish_device(private_stack, presentity, device_document(presentity)).status == 200
    client = SipClient(private_stack.sip, "udp")
    try:
        watcher = WatcherDialog(client, presentity, secrets.token_hex(6), secrets.token_hex(3))
        assert watcher.subscribe().status == 200
        pending = watcher.next_notify()
        assert pending.headers.get("Subscription-State").startswith("pending")
        assert pending.body == b""

        # allow, with the services (tuples) but not the notes.
        grant = "<pr:provide-services><pr:all-services/></pr:provide-services>"
        status, _, _ = xcap(private_stack, "PUT", presentity, rules("allow", transformations=grant))
        assert status == 201
        allowed = watcher.next_notify()
        assert allowed.headers.get("Subscription-State").startswith("active")
        root = etree.fromstring(allowed.body)
        assert root.findtext(f"{{{PIDF}}}tuple/{{{PIDF}}}status/{{{PIDF}}}basic") == "open"
        assert root.find(f"{{{PIDF}}}note") is None  # provide-note not granted

        status, _, _ = xcap(private_stack, "PUT", presentity, rules("block"))
        assert status == 200  # replaced
        ended = watcher.next_notify()
        assert ended.headers.get("Subscription-State") == "terminated;reason=rejected"

        again = WatcherDialog(client, presentity, secrets.token_hex(6), secrets.token_hex(3))
        assert again.subscribe().status == 403  # block refuses a new subscription
    finally:
        client.close()


def test_polite_block_looks_like_an_offline_presentity(private_stack: Stack) -> None:
    presentity = f"sip:polite-{secrets.token_hex(3)}@example.com"
    assert publish_device(private_stack, presentity, device_document(presentity)).status == 200
    assert xcap(private_stack, "PUT", presentity, rules("polite-block"))[0] == 201
    client = SipClient(private_stack.sip, "udp")
    try:
        watcher = WatcherDialog(client, presentity, secrets.token_hex(6), secrets.token_hex(3))
        assert watcher.subscribe().status == 200
        notify = watcher.next_notify()
    finally:
        client.close()
    assert notify.headers.get("Subscription-State").startswith("active")
    root = etree.fromstring(notify.body)
    assert [b.text for b in root.iter(f"{{{PIDF}}}basic")] == ["closed"]
    assert b"meeting" not in notify.body and b"desk" not in notify.body


def test_xcap_api_stores_refuses_and_deletes(private_stack: Stack) -> None:
    presentity = f"sip:api-{secrets.token_hex(3)}@example.com"
    assert xcap(private_stack, "GET", presentity)[0] == 404
    assert xcap(private_stack, "PUT", presentity, rules("allow"))[0] == 201
    status, body, tag = xcap(private_stack, "GET", presentity)
    assert status == 200 and b"<pr:sub-handling>allow</pr:sub-handling>" in body
    assert tag is not None
    assert xcap(private_stack, "GET", presentity, If_None_Match=tag)[0] == 304
    # Conditional writes: a stale entity tag or "must not exist yet" fail with 412.
    assert xcap(private_stack, "PUT", presentity, rules("block"), If_Match='"stale"')[0] == 412
    assert xcap(private_stack, "PUT", presentity, rules("block"), If_None_Match="*")[0] == 412
    assert xcap(private_stack, "GET", presentity)[1] == rules("allow")  # unchanged
    status, body, _ = xcap(private_stack, "PUT", presentity, b"<ruleset")
    assert status == 409 and b"xcap-error" in body
    assert xcap(private_stack, "GET", presentity)[1] == rules("allow")  # unchanged
    assert xcap(private_stack, "DELETE", presentity, If_Match=tag)[0] == 200
    assert xcap(private_stack, "GET", presentity)[0] == 404


def winfo(notify: SipRequest) -> WatcherInfo:
    assert notify.headers.get("Content-Type") == "application/watcherinfo+xml"
    assert notify.headers.get("Event") == "presence.winfo"
    return parse_watcherinfo(notify.body)


def test_owner_sees_a_pending_watcher_in_winfo_and_approves_it(private_stack: Stack) -> None:
    """The issue's whole story: a confirm rule keeps a watcher pending (NOTIFY without
    body); the owner's presence.winfo subscription shows it; the owner PUTs an allow
    rule over HTTP; the watcher receives the state, and winfo says it was approved."""
    presentity = f"sip:owner-{secrets.token_hex(3)}@example.com"
    assert publish_device(private_stack, presentity, device_document(presentity)).status == 200
    assert xcap(private_stack, "PUT", presentity, rules("confirm"))[0] == 201
    owner_client = SipClient(private_stack.sip, "udp")
    watcher_client = SipClient(private_stack.sip, "udp")
    try:
        owner = WatcherDialog(
            owner_client, presentity, secrets.token_hex(6), "o1", from_uri=presentity
        )
        assert owner.subscribe(Event="presence.winfo").status == 200
        first = winfo(owner.next_notify())
        assert (first.version, first.state, first.resource) == (0, "full", presentity)
        assert first.package == "presence" and first.watchers == []

        watcher = WatcherDialog(watcher_client, presentity, secrets.token_hex(6), "w1")
        assert watcher.subscribe().status == 200
        pending = watcher.next_notify()
        assert pending.headers.get("Subscription-State").startswith("pending")
        assert pending.body == b""

        news = winfo(owner.next_notify())
        assert (news.version, news.state) == (1, "partial")
        [entry] = news.watchers
        assert (entry.uri, entry.status, entry.event) == (WATCHER, "pending", "subscribe")
        assert entry.id == watcher.to_tag

        assert xcap(private_stack, "PUT", presentity, rules("allow"))[0] == 200
        allowed = watcher.next_notify()
        assert allowed.headers.get("Subscription-State").startswith("active")
        assert allowed.headers.get("Content-Type") == "application/pidf+xml"
        assert etree.fromstring(allowed.body).get("entity") == presentity

        approved = winfo(owner.next_notify())
        assert (approved.version, approved.state) == (2, "partial")
        assert [(w.id, w.status, w.event) for w in approved.watchers] == [
            (watcher.to_tag, "active", "approved")
        ]

        # A refresh of the winfo subscription brings the full list again (RFC 3858 §4.4).
        assert owner.subscribe(Event="presence.winfo").status == 200
        full = winfo(owner.next_notify())
        assert (full.version, full.state) == (3, "full")
        assert [(w.uri, w.status, w.event) for w in full.watchers] == [
            (WATCHER, "active", "approved")
        ]

        # The watcher leaves: to winfo, its subscription timed out.
        assert watcher.subscribe(expires=0).status == 200
        assert watcher.next_notify().headers.get("Subscription-State").startswith("terminated")
        gone = winfo(owner.next_notify())
        assert (gone.version, gone.state) == (4, "partial")
        assert [(w.status, w.event) for w in gone.watchers] == [("terminated", "timeout")]
    finally:
        owner_client.close()
        watcher_client.close()


def test_only_the_owner_may_see_the_watcher_list(private_stack: Stack) -> None:
    presentity = f"sip:secretive-{secrets.token_hex(3)}@example.com"
    client = SipClient(private_stack.sip, "udp")
    try:
        snoop = WatcherDialog(client, presentity, secrets.token_hex(6), "s1")  # From: watcher
        assert snoop.subscribe(Event="presence.winfo").status == 403
    finally:
        client.close()


def test_winfo_reports_a_blocked_watcher_as_rejected(private_stack: Stack) -> None:
    presentity = f"sip:blocker-{secrets.token_hex(3)}@example.com"
    assert xcap(private_stack, "PUT", presentity, rules("block"))[0] == 201
    owner_client = SipClient(private_stack.sip, "udp")
    watcher_client = SipClient(private_stack.sip, "udp")
    try:
        owner = WatcherDialog(
            owner_client, presentity, secrets.token_hex(6), "o1", from_uri=presentity
        )
        assert owner.subscribe(Event="presence.winfo").status == 200
        assert winfo(owner.next_notify()).watchers == []
        watcher = WatcherDialog(watcher_client, presentity, secrets.token_hex(6), "w1")
        assert watcher.subscribe().status == 403
        news = winfo(owner.next_notify())
        assert [(w.uri, w.status, w.event) for w in news.watchers] == [
            (WATCHER, "terminated", "rejected")
        ]
    finally:
        owner_client.close()
        watcher_client.close()
