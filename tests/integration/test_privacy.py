"""Privacy on the real stack (force_active=0): pres-rules stored through the XCAP API
decide each subscription's state and what each watcher sees (RFC 5025)."""

from __future__ import annotations

import base64
import json
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from lxml import etree

from presence.packages.watcherinfo import WatcherInfo, parse_watcherinfo
from presence.sip.message import SipRequest
from presence.xcap.credentials import password_for

from .conftest import XCAP_SECRET, Stack, make_stack, running_stack
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


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def xcap(
    stack: Stack,
    method: str,
    presentity: str,
    body: bytes | None = None,
    *,
    authorization: str | None = "owner",
    content_type: str = "application/auth-policy+xml",
    node: str | None = None,
    **headers: str,
) -> tuple[int, bytes, str | None]:
    """(status, body, ETag) of one XCAP request, by default with the presentity's own
    credentials (HTTP Basic); `node` is a node selector with its namespace bindings
    ("cr:ruleset/cr:rule[@id=\"x\"]?xmlns(cr=...)"); headers with _ for - (If_Match)."""
    xui = urllib.parse.quote(presentity, safe="")
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    if authorization == "owner":
        authorization = basic(presentity, password_for(XCAP_SECRET, presentity))
    if authorization is not None:
        sent["Authorization"] = authorization
    if body is not None:
        sent["Content-Type"] = content_type
    path = f"/xcap-root/pres-rules/users/{xui}/index"
    if node is not None:
        selector, _, query = node.partition("?")
        path += "/~~/" + urllib.parse.quote(selector, safe="/:@")
        path += "?" + urllib.parse.quote(query, safe="=()") if query else ""
    request = urllib.request.Request(
        stack.http("presence-store", path),
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
    with running_stack(test_database, PRESENCE_FORCE_ACTIVE="0") as stack:
        yield stack


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


def test_xcap_requires_the_owners_credentials(private_stack: Stack) -> None:
    alice = f"sip:alice-{secrets.token_hex(3)}@example.com"
    bob = f"sip:bob-{secrets.token_hex(3)}@example.com"
    # No credentials: a challenge (RFC 9110 §11.6.1).
    request = urllib.request.Request(
        private_stack.http(
            "presence-store",
            f"/xcap-root/pres-rules/users/{urllib.parse.quote(alice, safe='')}/index",
        )
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    assert refused.value.headers.get("WWW-Authenticate").startswith('Basic realm="presence-xcap"')
    assert xcap(private_stack, "PUT", alice, rules("allow"), authorization=None)[0] == 401
    # A wrong password, or bob's own valid credentials on alice's document.
    assert (
        xcap(private_stack, "PUT", alice, rules("allow"), authorization=basic(alice, "x"))[0] == 401
    )
    bobs = basic(bob, password_for(XCAP_SECRET, bob))
    assert xcap(private_stack, "PUT", alice, rules("allow"), authorization=bobs)[0] == 403
    assert xcap(private_stack, "GET", alice, authorization=bobs)[0] == 403
    # Alice's password under bob's name opens nothing either.
    alices_password_as_bob = basic(bob, password_for(XCAP_SECRET, alice))
    assert xcap(private_stack, "GET", alice, authorization=alices_password_as_bob)[0] == 401
    assert xcap(private_stack, "GET", alice)[0] == 404  # nothing stored by the refusals
    # The owner, by Basic (user name with or without "sip:") or as a Bearer token.
    without_scheme = basic(alice.removeprefix("sip:"), password_for(XCAP_SECRET, alice))
    assert xcap(private_stack, "PUT", alice, rules("allow"), authorization=without_scheme)[0] == 201
    bearer = "Bearer " + password_for(XCAP_SECRET, alice)
    assert xcap(private_stack, "GET", alice, authorization=bearer)[0] == 200
    assert xcap(private_stack, "DELETE", alice, authorization=bearer)[0] == 200


def xcap_error(body: bytes) -> str:
    root = etree.fromstring(body)
    assert root.tag == "{urn:ietf:params:xml:ns:xcap-error}xcap-error"
    return etree.QName(root[0]).localname


def test_xcap_error_cases(private_stack: Stack) -> None:
    presentity = f"sip:errors-{secrets.token_hex(3)}@example.com"
    # RFC 4825 §8.2.1: a body that is not XML at all, and one that is XML but not a
    # common-policy ruleset, are both 409 with the condition named in the body.
    status, body, _ = xcap(private_stack, "PUT", presentity, b"<cr:ruleset")
    assert (status, xcap_error(body)) == (409, "not-well-formed")
    not_rules = b'<other xmlns="urn:example"/>'
    status, body, _ = xcap(private_stack, "PUT", presentity, not_rules)
    assert (status, xcap_error(body)) == (409, "schema-validation-error")
    unknown_action = rules("allow").replace(b"pr:sub-handling>allow<", b"pr:sub-handling>maybe<")
    status, body, _ = xcap(private_stack, "PUT", presentity, unknown_action)
    assert (status, xcap_error(body)) == (409, "schema-validation-error")
    # The wrong media type (RFC 4825 §8.2.1: 415), an xui that names no user (404).
    assert xcap(private_stack, "PUT", presentity, rules("allow"), content_type="text/xml")[0] == 415
    assert xcap(private_stack, "GET", "sip:example.com", authorization=None)[0] in (401, 404)
    assert xcap(private_stack, "GET", presentity)[0] == 404  # nothing was stored
    assert xcap(private_stack, "DELETE", presentity)[0] == 404


def test_openapi_describes_the_xcap_api(private_stack: Stack) -> None:
    with urllib.request.urlopen(private_stack.http("presence-store", "/openapi.json")) as answer:
        schema = json.loads(answer.read())
    for auid in ("pres-rules", "resource-lists"):
        document = f"/xcap-root/{auid}/users/{{xui}}/index"
        assert set(schema["paths"][document]) == {"get", "put", "delete"}
        assert set(schema["paths"][document + "/~~/{selector}"]) == {"get", "put", "delete"}
    assert set(schema["paths"]["/xcap-root/xcap-caps/global/index"]) == {"get", "put", "delete"}
    # XML in and out, in the media types the server really uses.
    rules = schema["paths"]["/xcap-root/pres-rules/users/{xui}/index"]
    assert set(rules["get"]["responses"]["200"]["content"]) == {"application/auth-policy+xml"}
    assert set(rules["put"]["requestBody"]["content"]) == {"application/auth-policy+xml"}
    assert set(rules["put"]["responses"]["409"]["content"]) == {"application/xcap-error+xml"}
    node = schema["paths"]["/xcap-root/resource-lists/users/{xui}/index/~~/{selector}"]
    assert set(node["get"]["responses"]["200"]["content"]) == {
        "application/xcap-el+xml",
        "application/xcap-att+xml",
        "application/xcap-ns+xml",
    }
    assert set(node["put"]["requestBody"]["content"]) == {
        "application/xcap-el+xml",
        "application/xcap-att+xml",
    }
    with urllib.request.urlopen(private_stack.http("presence-store", "/docs")) as answer:
        assert answer.status == 200 and b"swagger" in answer.read().lower()


def test_xcap_without_a_secret_is_closed(test_database: str) -> None:
    stack = make_stack(test_database, PRESENCE_XCAP_SECRET="")
    try:
        stack.start("presence-store")
        status, body, _ = xcap(stack, "GET", "sip:anyone@example.com")
        assert status == 503 and b"PRESENCE_XCAP_SECRET" in body
    finally:
        stack.close()


def test_withdrawn_permission_can_mean_probation(test_database: str) -> None:
    stack = make_stack(
        test_database,
        PRESENCE_FORCE_ACTIVE="0",
        PRESENCE_WITHDRAWN_REASON="probation",
        PRESENCE_PROBATION_RETRY_AFTER="120",
    )
    presentity = f"sip:moody-{secrets.token_hex(3)}@example.com"
    try:
        stack.start_all()
        assert xcap(stack, "PUT", presentity, rules("allow"))[0] == 201
        owner_client = SipClient(stack.sip, "udp")
        watcher_client = SipClient(stack.sip, "udp")
        try:
            owner = WatcherDialog(
                owner_client, presentity, secrets.token_hex(6), "o", from_uri=presentity
            )
            assert owner.subscribe(Event="presence.winfo").status == 200
            owner.next_notify()
            watcher = WatcherDialog(watcher_client, presentity, secrets.token_hex(6), "w")
            assert watcher.subscribe().status == 200
            assert watcher.next_notify().headers.get("Subscription-State").startswith("active")
            assert winfo(owner.next_notify()).watchers[0].status == "active"

            assert xcap(stack, "PUT", presentity, rules("confirm"))[0] == 200
            ended = watcher.next_notify()
            assert ended.headers.get("Subscription-State") == (
                "terminated;reason=probation;retry-after=120"
            )
            told = winfo(owner.next_notify())
            assert [(w.status, w.event) for w in told.watchers] == [("terminated", "probation")]
        finally:
            owner_client.close()
            watcher_client.close()
    finally:
        stack.close()


CP_BINDINGS = (
    "?xmlns(cr=urn:ietf:params:xml:ns:common-policy)xmlns(pr=urn:ietf:params:xml:ns:pres-rules)"
)


def test_xcap_element_selectors_change_one_rule(private_stack: Stack) -> None:
    presentity = f"sip:selective-{secrets.token_hex(3)}@example.com"
    handling = 'cr:ruleset/cr:rule[@id="friends"]/cr:actions/pr:sub-handling' + CP_BINDINGS
    element = "application/xcap-el+xml"
    assert xcap(private_stack, "PUT", presentity, rules("confirm"))[0] == 201
    status, body, document_tag = xcap(private_stack, "GET", presentity, node=handling)
    assert status == 200 and b">confirm<" in body and document_tag is not None

    client = SipClient(private_stack.sip, "udp")
    try:
        watcher = WatcherDialog(client, presentity, secrets.token_hex(6), secrets.token_hex(3))
        assert watcher.subscribe().status == 200
        assert watcher.next_notify().headers.get("Subscription-State").startswith("pending")
        allow = (
            b'<pr:sub-handling xmlns:pr="urn:ietf:params:xml:ns:pres-rules">allow</pr:sub-handling>'
        )
        status, _, new_tag = xcap(
            private_stack, "PUT", presentity, allow, content_type=element, node=handling
        )
        assert status == 200 and new_tag not in (None, document_tag)
        # Changing one element re-judges the subscriptions like a whole document.
        assert watcher.next_notify().headers.get("Subscription-State").startswith("active")
    finally:
        client.close()
    assert b">allow<" in xcap(private_stack, "GET", presentity)[1]

    # A value the schema does not allow leaves the document as it was.
    maybe = allow.replace(b">allow<", b">maybe<")
    status, body, _ = xcap(
        private_stack, "PUT", presentity, maybe, content_type=element, node=handling
    )
    assert status == 409 and b"schema-validation-error" in body
    # A new rule is created under the ruleset; an attribute can be read alone.
    second = 'cr:ruleset/cr:rule[@id="others"]' + CP_BINDINGS
    rule = b'<cr:rule xmlns:cr="urn:ietf:params:xml:ns:common-policy" id="others"/>'
    assert xcap(private_stack, "PUT", presentity, rule, content_type=element, node=second)[0] == 201
    attribute = xcap(
        private_stack, "GET", presentity, node="cr:ruleset/cr:rule[2]/@id" + CP_BINDINGS
    )
    assert attribute[:2] == (200, b'"others"')  # an AttValue, quotes included
    assert xcap(private_stack, "DELETE", presentity, node=second)[0] == 200
    assert xcap(private_stack, "GET", presentity, node=second)[0] == 404
    assert xcap(private_stack, "GET", presentity, node="cr:ruleset/cr:y" + CP_BINDINGS)[0] == 404
    # A prefix no xmlns() binds is a bad request (RFC 4825 §8).
    assert xcap(private_stack, "GET", presentity, node="cr:ruleset/x:y" + CP_BINDINGS)[0] == 400
