"""Buddy lists kept on the server (RFC 4826 §3, resource-lists over XCAP), over HTTP
against the store: stored, read and edited like pres-rules, checked against the
schema and the uniqueness constraints, each user's own."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from lxml import etree

from .conftest import Stack, make_stack
from .xcap_client import EL, RL, User, canonical, owner_of, xcap

pytestmark = pytest.mark.integration

RESOURCE_LISTS = "application/resource-lists+xml"
BINDINGS = f"xmlns(rl={RL})"
BUDDIES = f"""<?xml version="1.0" encoding="UTF-8"?>
<resource-lists xmlns="{RL}">
  <list name="friends">
    <display-name>Friends</display-name>
    <entry uri="sip:bob@example.com"><display-name>Bob</display-name></entry>
    <entry uri="sip:carol@example.com"/>
  </list>
  <list name="work">
    <entry-ref ref="resource-lists/users/sip:boss@example.com/index/~~/resource-lists/list%5b1%5d"/>
  </list>
</resource-lists>""".encode()
FRIENDS = 'rl:resource-lists/rl:list[@name="friends"]'


@pytest.fixture(scope="module")
def xcap_stack(test_database: str) -> Iterator[Stack]:
    stack = make_stack(test_database)
    try:
        stack.start("presence-store")
        yield stack
    finally:
        stack.close()


def buddies_of(stack: Stack) -> User:
    xui = f"sip:lists-{secrets.token_hex(4)}@example.com"
    return User(stack, "resource-lists", xui, BINDINGS)


def test_a_user_stores_reads_and_deletes_their_buddy_lists(xcap_stack: Stack) -> None:
    """RFC 4826 §3.4: the resource-lists application usage, AUID "resource-lists",
    MIME type "application/resource-lists+xml", one document per user (xcap-root/
    resource-lists/users/<xui>/index), with the ETags of RFC 4825 §7.11."""
    user = buddies_of(xcap_stack)
    assert user.document("GET").status == 404
    assert user.document("PUT", BUDDIES, "application/auth-policy+xml").status == 415
    stored = user.document("PUT", BUDDIES, RESOURCE_LISTS)
    assert stored.status == 201 and stored.etag is not None
    got = user.document("GET")
    assert got.status == 200 and got.content_type == RESOURCE_LISTS and got.body == BUDDIES
    assert got.etag == stored.etag
    assert user.document("GET", If_None_Match=stored.etag).status == 304
    assert user.document("PUT", BUDDIES, RESOURCE_LISTS, If_None_Match="*").status == 412
    # The user's pres-rules are another document.
    rules = User(xcap_stack, "pres-rules", user.xui)
    assert rules.document("GET").status == 404
    assert user.document("DELETE", If_Match=stored.etag).status == 200
    assert user.document("GET").status == 404


def test_buddies_are_added_renamed_and_removed_one_by_one(xcap_stack: Stack) -> None:
    """RFC 4825 §8.2.3 and §8.4 on a resource-lists document: an <entry> is created
    by its uri predicate (after the last <entry>), its display name read and PUT
    back in the document's namespace context, an entry deleted by its uri, and a
    list renamed through its name attribute, an AttValue with its quotes (§7.7,
    §7.9)."""
    user = buddies_of(xcap_stack)
    assert user.document("PUT", BUDDIES, RESOURCE_LISTS).status == 201
    dave = FRIENDS + '/rl:entry[@uri="sip:dave@example.com"]'
    body = b'<entry uri="sip:dave@example.com"><display-name>Dave</display-name></entry>'
    assert user.node("PUT", dave, body, EL).status == 201
    friends = etree.fromstring(user.document("GET").body)[0]
    assert [e.get("uri") for e in friends.iterchildren(f"{{{RL}}}entry")] == [
        "sip:bob@example.com",
        "sip:carol@example.com",
        "sip:dave@example.com",
    ]
    name = FRIENDS + '/rl:entry[@uri="sip:bob@example.com"]/rl:display-name'
    got = user.node("GET", name)
    assert got.body == b"<display-name>Bob</display-name>"
    renamed = got.body.replace(b"Bob", b"Robert")
    assert user.node("PUT", name, renamed, EL, If_Match=got.etag or "").status == 200
    assert user.node("GET", name).body == renamed
    assert user.node("GET", FRIENDS + "/@name").body == b'"friends"'
    assert user.node("DELETE", dave).status == 200
    assert user.node("GET", dave).status == 404
    # A new list, and its name changed as an attribute.
    family = 'rl:resource-lists/rl:list[@name="family"]'
    assert user.node("PUT", family, b'<list name="family"/>', EL).status == 201
    rename = user.node(
        "PUT", "rl:resource-lists/rl:list[3]/@name", b'"kin"', "application/xcap-att+xml"
    )
    assert rename.status == 200
    assert [list_.get("name") for list_ in etree.fromstring(user.document("GET").body)] == [
        "friends",
        "work",
        "kin",
    ]


def test_the_schema_and_the_uniqueness_constraints_are_enforced(xcap_stack: Stack) -> None:
    """RFC 4826 §3.4.5 (additional constraints): "The "name" attribute in a <list>
    element MUST be unique amongst all other "name" attributes of <list> elements
    within the same parent element.", and so must the 'uri' of <entry>, the 'ref' of
    <entry-ref> and the 'anchor' of <external>; a document that breaks one is
    refused with RFC 4825's 409 <uniqueness-failure>, one that breaks the schema
    with <schema-validation-error>, and the stored one stays."""
    user = buddies_of(xcap_stack)
    assert user.document("PUT", BUDDIES, RESOURCE_LISTS).status == 201
    carol_again = user.node(
        "PUT", FRIENDS + "/rl:entry[3]", b'<entry uri="sip:carol@example.com"/>', EL
    )
    assert (carol_again.status, carol_again.condition()) == (409, "uniqueness-failure")
    exists = carol_again.error()[0]
    assert exists.get("field") == "resource-lists/list%5B@name=%22friends%22%5D/entry/@uri"
    twins = BUDDIES.replace(b'<list name="work">', b'<list name="friends">')
    refused = user.document("PUT", twins, RESOURCE_LISTS)
    assert (refused.status, refused.condition()) == (409, "uniqueness-failure")
    assert refused.error()[0].get("field") == "resource-lists/list/@name"
    assert [alt.text for alt in refused.error()[0]] == ["friends-2"]
    no_uri = user.node("PUT", FRIENDS + "/rl:entry[3]", b"<entry/>", EL)
    assert (no_uri.status, no_uri.condition()) == (409, "schema-validation-error")
    stray = user.node("PUT", FRIENDS + "/rl:buddy", b"<buddy/>", EL)
    assert (stray.status, stray.condition()) == (409, "schema-validation-error")
    broken = user.document("PUT", b"<resource-lists", RESOURCE_LISTS)
    assert (broken.status, broken.condition()) == (409, "not-well-formed")
    assert canonical(user.document("GET").body) == canonical(BUDDIES)


def test_only_the_owner_reads_or_changes_the_lists(xcap_stack: Stack) -> None:
    """RFC 4826 §3.4.9 (authorization policies: the default of RFC 4825 §5.7, only the
    user reads and writes their own documents): 401 without credentials, 403 with
    another user's."""
    user = buddies_of(xcap_stack)
    assert user.document("PUT", BUDDIES, RESOURCE_LISTS).status == 201
    path = (
        f"/xcap-root/resource-lists/users/{user.xui.replace(':', '%3A').replace('@', '%40')}/index"
    )
    assert xcap(xcap_stack, "GET", path).status == 401
    stranger = owner_of("sip:stranger@example.com")
    assert xcap(xcap_stack, "GET", path, authorization=stranger).status == 403
    assert xcap(xcap_stack, "DELETE", path, authorization=stranger).status == 403
    assert user.document("GET").status == 200
