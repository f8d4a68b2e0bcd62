"""XCAP as real clients use it, over HTTP against the store (RFC 4825): element
GET-then-PUT round trips, creation by position and by attribute predicate, where a
new element goes, cannot-delete, attributes with their media type, namespace::*,
conditional requests, the §11 error bodies, and the xcap-caps document (§12).

Each test's docstring quotes the sentence of the RFC it holds the server to."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from lxml import etree

from .conftest import Stack, make_stack
from .xcap_client import ATT, CP, EL, PR, XCAP_ERROR_NS, User, canonical, xcap

pytestmark = pytest.mark.integration

BINDINGS = f"xmlns(cr={CP})xmlns(pr={PR})"
RULES = f"""<?xml version="1.0" encoding="UTF-8"?>
<ruleset xmlns="{CP}" xmlns:pr="{PR}">
  <rule id="friends">
    <conditions>
      <identity>
        <one id="sip:bob@example.com"/>
        <many domain="example.org"><except id="sip:eve@example.org"/></many>
      </identity>
    </conditions>
    <actions><pr:sub-handling>allow</pr:sub-handling></actions>
    <transformations>
      <pr:provide-services><pr:all-services/></pr:provide-services>
      <pr:provide-persons><pr:all-persons/></pr:provide-persons>
      <pr:provide-note>true</pr:provide-note>
    </transformations>
  </rule>
  <rule id="blocked">
    <conditions><identity><one id="sip:mallory@example.com"/></identity></conditions>
    <actions><pr:sub-handling>block</pr:sub-handling></actions>
  </rule>
</ruleset>""".encode()
# The same rules written with a prefix for common-policy too.
PREFIXED = f"""<?xml version="1.0" encoding="UTF-8"?>
<cr:ruleset xmlns:cr="{CP}" xmlns:pr="{PR}">
  <cr:rule id="friends">
    <cr:conditions><cr:identity><cr:one id="sip:bob@example.com"/></cr:identity></cr:conditions>
    <cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions>
  </cr:rule>
</cr:ruleset>""".encode()
AUTH_POLICY = "application/auth-policy+xml"
IDENTITY = 'cr:ruleset/cr:rule[@id="friends"]/cr:conditions/cr:identity'


@pytest.fixture(scope="module")
def xcap_stack(test_database: str) -> Iterator[Stack]:
    """presence-store alone: it is the XCAP server (writes still re-judge and publish)."""
    stack = make_stack(test_database, PRESENCE_FORCE_ACTIVE="0")
    try:
        stack.start("presence-store")
        yield stack
    finally:
        stack.close()


def rules_of(stack: Stack, document: bytes = RULES) -> User:
    user = User(stack, "pres-rules", f"sip:xcap-{secrets.token_hex(4)}@example.com", BINDINGS)
    assert user.document("PUT", document, AUTH_POLICY).status == 201
    return user


def stored(user: User) -> bytes:
    answer = user.document("GET")
    assert answer.status == 200
    return answer.body


ELEMENTS = [
    'cr:ruleset/cr:rule[@id="friends"]',
    'cr:ruleset/cr:rule[@id="friends"]/cr:conditions',
    'cr:ruleset/cr:rule[@id="friends"]/cr:conditions/cr:identity',
    'cr:ruleset/cr:rule[@id="friends"]/cr:conditions/cr:identity/cr:one',
    'cr:ruleset/cr:rule[@id="friends"]/cr:conditions/cr:identity/cr:many',
    'cr:ruleset/cr:rule[@id="friends"]/cr:conditions/cr:identity/cr:many/cr:except',
    'cr:ruleset/cr:rule[@id="friends"]/cr:actions',
    'cr:ruleset/cr:rule[@id="friends"]/cr:actions/pr:sub-handling',
    'cr:ruleset/cr:rule[@id="friends"]/cr:transformations',
    'cr:ruleset/cr:rule[@id="friends"]/cr:transformations/pr:provide-services',
    'cr:ruleset/cr:rule[@id="friends"]/cr:transformations/pr:provide-persons/pr:all-persons',
    'cr:ruleset/cr:rule[@id="friends"]/cr:transformations/pr:provide-note',
    "cr:ruleset/cr:rule[2]",
    "cr:ruleset",
]


@pytest.mark.parametrize("selector", ELEMENTS)
def test_every_element_goes_out_and_comes_back_as_it_is(xcap_stack: Stack, selector: str) -> None:
    """RFC 4825 §8.3: "The server MUST NOT add namespace bindings representing
    namespaces used by the element or its children, but declared in ancestor
    elements; the client will either know these bindings already (since it has a
    cached copy of the whole document), or it can learn them by explicitly querying
    for the bindings.", and §8.2.3/§7.4 ask that a GET after a PUT returns the
    content of the PUT: so the element a GET returns, with prefixes bound only in the
    document, is read in the document's namespace context when it is PUT back, and
    the document stays the same."""
    user = rules_of(xcap_stack)
    got = user.node("GET", selector)
    assert got.status == 200 and got.content_type == EL and got.etag is not None
    if selector != "cr:ruleset":  # only the root declares namespaces in this document
        assert b"xmlns" not in got.body, got.body
    put = user.node("PUT", selector, got.body, EL, If_Match=got.etag)
    assert put.status == 200, put.body
    assert canonical(stored(user)) == canonical(RULES)
    assert user.node("GET", selector).body == got.body


def test_prefixed_documents_round_trip_too(xcap_stack: Stack) -> None:
    """RFC 4825 §8.3 (as above): the element comes with its cr: and pr: prefixes and
    without their declarations, which only the document's root makes."""
    user = rules_of(xcap_stack, PREFIXED)
    selector = 'cr:ruleset/cr:rule[@id="friends"]/cr:actions'
    got = user.node("GET", selector)
    assert got.body == b"<cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions>"
    block = got.body.replace(b">allow<", b">block<")
    assert user.node("PUT", selector, block, EL).status == 200
    assert b"<pr:sub-handling>block</pr:sub-handling>" in stored(user)


def test_an_unqualified_element_takes_the_documents_default_namespace(xcap_stack: Stack) -> None:
    """RFC 4825 §8.2.3 and §7.10: the new element is read where it is inserted (a
    client needs the bindings in scope there to write it), so an unprefixed <one>
    under a default-namespace <identity> is a common-policy <one>."""
    user = rules_of(xcap_stack)
    selector = IDENTITY + '/cr:one[@id="sip:carol@example.com"]'
    created = user.node("PUT", selector, b'<one id="sip:carol@example.com"/>', EL)
    assert created.status == 201, created.body
    identity = etree.fromstring(stored(user)).find(f".//{{{CP}}}identity")
    assert identity is not None
    assert [c.get("id") for c in identity.iterchildren(f"{{{CP}}}one")] == [
        "sip:bob@example.com",
        "sip:carol@example.com",
    ]


def rule_ids(user: User) -> list[str | None]:
    return [rule.get("id") for rule in etree.fromstring(stored(user))]


def test_elements_are_created_by_position_and_by_attribute_predicate(xcap_stack: Stack) -> None:
    """RFC 4825 §8.2.3: a PUT whose URI selects no element creates one when the URI
    would select it afterwards: `rule[n]` and `*[n]` make it the n-th (of that name,
    of all elements), `*[@id="x"]` one with that attribute; a position that cannot
    be reached is a 409 <cannot-insert>, which "indicates that the requested PUT
    operation could not be performed because a GET of that resource after the PUT
    would not yield the content of the PUT request" (§11.1)."""
    user = rules_of(xcap_stack)
    assert user.node("PUT", "cr:ruleset/cr:rule[3]", b'<rule id="third"/>', EL).status == 201
    assert user.node("PUT", "cr:ruleset/*[4]", b'<rule id="fourth"/>', EL).status == 201
    by_attribute = user.node("PUT", 'cr:ruleset/*[@id="fifth"]', b'<rule id="fifth"/>', EL)
    assert by_attribute.status == 201
    assert rule_ids(user) == ["friends", "blocked", "third", "fourth", "fifth"]
    for selector in ("cr:ruleset/cr:rule[7]", "cr:ruleset/*[0]"):
        refused = user.node("PUT", selector, b'<rule id="late"/>', EL)
        assert (refused.status, refused.condition()) == (409, "cannot-insert")
    assert user.node("GET", "cr:ruleset/*[0]").status == 404  # grammatical, selects nothing


def test_a_new_element_goes_after_the_last_of_its_name(xcap_stack: Stack) -> None:
    """RFC 4825 §8.2.3 ("earliest last") and its examples: without a position, the new
    element is inserted after the last sibling of the same name (not at the end of
    its parent)."""
    user = rules_of(xcap_stack)
    condition = IDENTITY + '/cr:one[@id="sip:dave@example.com"]'
    assert user.node("PUT", condition, b'<one id="sip:dave@example.com"/>', EL).status == 201
    identity = etree.fromstring(stored(user)).find(f".//{{{CP}}}identity")
    assert identity is not None
    assert [(etree.QName(c).localname, c.get("id") or c.get("domain")) for c in identity] == [
        ("one", "sip:bob@example.com"),
        ("one", "sip:dave@example.com"),
        ("many", "example.org"),
    ]


def test_deleting_what_the_uri_would_still_select_is_refused(xcap_stack: Stack) -> None:
    """RFC 4825 §8.4: "It is possible that, after deletion, the request URI selects
    another element in the document.  If this happens, the server MUST NOT perform
    the deletion, and MUST reject the request with a 409 response." Its body names
    <cannot-delete>, which "indicates that the requested DELETE operation could not
    be performed because it would not be idempotent" (§11.1): deleting rule[1] of two
    would leave rule[1] selecting the other one."""
    user = rules_of(xcap_stack)
    refused = user.node("DELETE", "cr:ruleset/cr:rule[1]")
    assert (refused.status, refused.condition()) == (409, "cannot-delete")
    assert rule_ids(user) == ["friends", "blocked"]
    assert user.node("DELETE", "cr:ruleset/cr:rule[2]").status == 200
    assert user.node("DELETE", 'cr:ruleset/cr:rule[@id="friends"]').status == 200
    assert rule_ids(user) == []


def test_attributes_are_read_written_and_deleted_with_their_media_type(xcap_stack: Stack) -> None:
    """RFC 4825 §7.7, §7.9 and §15.2.2: an attribute is read and written as
    application/xcap-att+xml, its body the attribute value as XML's AttValue, with
    its quotes (the GET of an @uri in §13's example answers "sip:nancy@example.com",
    quotes included); a PUT body that is no AttValue is refused with
    <not-xml-att-value>, which "indicates that the request was supposed to contain a
    valid XML attribute value, but did not" (§11.1); another media type is a 415."""
    user = rules_of(xcap_stack)
    many = 'cr:ruleset/cr:rule[@id="friends"]/cr:conditions/cr:identity/cr:many'
    got = user.node("GET", many + "/@domain")
    assert (got.status, got.content_type, got.body) == (200, ATT, b'"example.org"')
    assert user.node("PUT", many + "/@domain", b'"example.net"', ATT).status == 200
    assert user.node("GET", many + "/@domain").body == b'"example.net"'
    assert user.node("PUT", many + "/@domain", b"'example.com'", ATT).status == 200
    assert user.node("GET", many + "/@domain").body == b'"example.com"'
    assert user.node("PUT", many + "/@domain", b'"example.com"', EL).status == 415
    assert user.node("DELETE", many + "/@domain").status == 200
    assert user.node("GET", many + "/@domain").status == 404
    assert user.node("PUT", many + "/@domain", b'"example.org"', ATT).status == 201
    for bad in (b"example.org", b'"example.org', b'"a"b"', b'"a<b"', b'"a&b"', b'"x" y="z"'):
        refused = user.node("PUT", many + "/@domain", bad, ATT)
        assert (refused.status, refused.condition()) == (409, "not-xml-att-value"), bad
    assert canonical(stored(user)) == canonical(RULES)


def test_attribute_values_are_escaped_and_put_back_as_they_come(xcap_stack: Stack) -> None:
    """RFC 4825 §7.9: the value comes out as an AttValue, so '&', '<' and the quote are
    escaped as XML requires; §7.7: what a GET returns is an AttValue a PUT takes back
    (§7.4's GET-after-PUT for attributes), and a reference in a PUT body stands for its
    character."""
    user = rules_of(xcap_stack)
    rule_id = "cr:ruleset/cr:rule[2]/@id"
    put = user.node("PUT", rule_id, b"'say \"a&lt;b &amp; c\"'", ATT)
    assert put.status == 200, put.body
    got = user.node("GET", rule_id)
    assert got.body == b'"say &quot;a&lt;b &amp; c&quot;"'
    assert etree.fromstring(stored(user))[1].get("id") == 'say "a<b & c"'
    assert user.node("PUT", rule_id, got.body, ATT, If_Match=got.etag or "").status == 200
    assert etree.fromstring(stored(user))[1].get("id") == 'say "a<b & c"'
    assert user.node("PUT", rule_id, b'"&#98;locked"', ATT).status == 200
    assert user.node("GET", rule_id).body == b'"blocked"'
    assert canonical(stored(user)) == canonical(RULES)


def test_namespace_bindings_are_read_only(xcap_stack: Stack) -> None:
    """RFC 4825 §6.3 (namespace-selector = "namespace::*"), §8.3 and §10: a GET returns
    an application/xcap-ns+xml element of the selected one's name declaring every
    namespace in scope; PUT and DELETE of it are 405 with Allow: GET (§8.2, §8.4)."""
    user = rules_of(xcap_stack)
    selector = 'cr:ruleset/cr:rule[@id="friends"]/cr:actions/namespace::*'
    got = user.node("GET", selector)
    assert got.status == 200 and got.content_type == "application/xcap-ns+xml"
    bindings = etree.fromstring(got.body)
    assert bindings.tag == f"{{{CP}}}actions" and len(bindings) == 0
    assert set(bindings.nsmap.values()) == {CP, PR}
    for method in ("PUT", "DELETE"):
        refused = user.node(method, selector, b"<x/>" if method == "PUT" else None, EL)
        assert refused.status == 405 and refused.headers["allow"] == "GET"


@pytest.mark.parametrize(
    "selector",
    [None, 'cr:ruleset/cr:rule[@id="friends"]/cr:actions', "cr:ruleset/cr:rule[2]/@id"],
)
def test_conditional_reads(xcap_stack: Stack, selector: str | None) -> None:
    """RFC 9110 §13.1.1: "An origin server that evaluates an If-Match condition MUST NOT
    perform the requested method if the condition evaluates to false. Instead, the
    origin server MAY indicate that the conditional request failed by responding with
    a 412 (Precondition Failed) status code."; §13.1.2: for If-None-Match
    "the origin server MUST respond with either a) the 304 (Not Modified) status code
    if the request method is GET or HEAD or b) the 412 (Precondition Failed) status
    code for all other request methods", "*" matching any current representation.
    RFC 4825 §7.11: elements and attributes carry their document's entity tag.
    §13.1.1: "An origin server MUST use the strong comparison function when comparing
    entity tags for If-Match"; §13.1.2: "A recipient MUST use the weak comparison
    function when comparing entity tags for If-None-Match"."""
    user = rules_of(xcap_stack)

    def get(**headers: str):  # type: ignore[no-untyped-def]
        return (
            user.document("GET", **headers)
            if selector is None
            else user.node("GET", selector, **headers)
        )

    tag = get().etag
    assert tag is not None and tag == user.document("GET").etag
    assert get(If_Match='"other"').status == 412
    assert get(If_Match=tag).status == 200
    assert get(If_Match="*").status == 200
    assert get(If_None_Match="*").status == 304
    unchanged = get(If_None_Match=f'"other", {tag}')
    assert unchanged.status == 304 and unchanged.etag == tag and unchanged.body == b""
    assert get(If_None_Match='"other"').status == 200
    # If-Match compares strongly (a weak tag never matches), If-None-Match weakly.
    assert get(If_Match=f"W/{tag}").status == 412
    assert get(If_None_Match=f"W/{tag}").status == 304


def test_conditional_writes_of_elements_and_attributes(xcap_stack: Stack) -> None:
    """RFC 9110 §13.1.1 (as above) for PUT and DELETE of an element or attribute: a
    stale tag is a 412 and changes nothing; the current one lets the change through."""
    user = rules_of(xcap_stack)
    actions = 'cr:ruleset/cr:rule[@id="friends"]/cr:actions'
    before = user.node("GET", actions)
    block = b"<actions><pr:sub-handling>block</pr:sub-handling></actions>"
    assert user.node("PUT", actions, block, EL, If_Match='"stale"').status == 412
    assert user.node("PUT", actions, block, EL, If_None_Match="*").status == 412
    assert user.node("DELETE", "cr:ruleset/cr:rule[2]/@id", If_Match='"stale"').status == 412
    rule_id = "cr:ruleset/cr:rule[2]/@id"
    assert user.node("PUT", rule_id, b'"other"', ATT, If_Match='"stale"').status == 412
    assert user.node("PUT", rule_id, b'"other"', ATT, If_None_Match="*").status == 412
    assert canonical(stored(user)) == canonical(RULES)
    changed = user.node("PUT", actions, block, EL, If_Match=before.etag or "")
    assert changed.status == 200 and changed.etag not in (None, before.etag)
    assert user.node("GET", actions).body == block
    renamed = user.node("PUT", rule_id, b'"other"', ATT, If_Match=changed.etag or "")
    assert renamed.status == 200 and renamed.etag not in (None, changed.etag)
    assert user.node("GET", rule_id).body == b'"other"'


def test_error_bodies_carry_their_conditions_and_fields(xcap_stack: Stack) -> None:
    """RFC 4825 §11: a 409 carries an application/xcap-error+xml body naming the
    condition, with the fields its schema defines: <no-parent> "can contain an
    optional <ancestor> element, which provides an HTTP URI that represents the
    closest parent that would be a valid point of insertion"; <uniqueness-failure> has an
    <exists> element whose "field" attribute "contains a relative URI identifying the
    XML element or attribute whose value needs to be unique, but wasn't", with
    <alt-value> suggestions; <schema-validation-error> "indicates that the document
    was not compliant to the schema after the requested operation was performed";
    every condition may carry a "phrase" attribute. The <ancestor> URI is
    percent-encoded: "its node selector component MUST be percent-encoded"."""
    user = rules_of(xcap_stack)
    e = f"{{{XCAP_ERROR_NS}}}"
    broken = user.node("PUT", 'cr:ruleset/cr:rule[@id="x"]', b"<rule id='x'", EL)
    assert (broken.status, broken.condition()) == (409, "not-xml-frag")
    assert broken.error().get("phrase")

    orphan = user.node(
        "PUT",
        'cr:ruleset/cr:rule[@id="blocked"]/cr:transformations/pr:provide-note',
        b"<pr:provide-note>true</pr:provide-note>",
        EL,
    )
    assert (orphan.status, orphan.condition()) == (409, "no-parent")
    ancestor = orphan.error().findtext(f"{e}ancestor")
    assert ancestor is not None and ancestor.startswith("http://127.0.0.1:")
    # The deepest element that exists, as an HTTP URI a client can GET.
    assert "/~~/cr:ruleset/cr:rule%5B@id=%22blocked%22%5D?xmlns(" in ancestor, ancestor
    path = ancestor.removeprefix(user.stack.http("presence-store", ""))
    found = xcap(user.stack, "GET", path, authorization=user.authorization)
    assert found.status == 200 and found.body.startswith(b'<rule id="blocked">')

    mismatch = user.node("PUT", 'cr:ruleset/cr:rule[@id="x"]', b'<rule id="y"/>', EL)
    assert (mismatch.status, mismatch.condition()) == (409, "cannot-insert")

    twice = RULES.replace(b'<rule id="blocked">', b'<rule id="friends">')
    unique = user.document("PUT", twice, AUTH_POLICY)
    assert (unique.status, unique.condition()) == (409, "uniqueness-failure")
    exists = unique.error().find(f"{e}exists")
    assert exists is not None and exists.get("field") == "ruleset/rule/@id"
    assert [alt.text for alt in exists.iterfind(f"{e}alt-value")] == ["friends-2"]

    invalid = user.node(
        "PUT",
        'cr:ruleset/cr:rule[@id="friends"]/cr:actions/pr:sub-handling',
        b"<pr:sub-handling>maybe</pr:sub-handling>",
        EL,
    )
    assert (invalid.status, invalid.condition()) == (409, "schema-validation-error")
    assert invalid.error().get("phrase")

    refused = user.node("DELETE", "cr:ruleset/cr:rule[1]")
    assert refused.condition() == "cannot-delete"
    not_utf8 = user.node("PUT", 'cr:ruleset/cr:rule[@id="x"]', b'<rule id="\xff"/>', EL)
    assert (not_utf8.status, not_utf8.condition()) == (409, "not-utf-8")
    assert canonical(stored(user)) == canonical(RULES)  # none of these changed anything


def test_xcap_caps_tells_what_the_server_supports(xcap_stack: Stack) -> None:
    """RFC 4825 §12: the xcap-caps document at xcap-root/xcap-caps/global/index lists
    the application usages (auids), extensions and namespaces the server supports.
    By §5.7 and §12.9 only trusted users may modify a global document; this server
    has none, so a PUT or DELETE is 405 (a choice of ours: the RFC names no status)."""
    caps = xcap(xcap_stack, "GET", "/xcap-root/xcap-caps/global/index")
    assert caps.status == 200 and caps.content_type == "application/xcap-caps+xml"
    ns = "{urn:ietf:params:xml:ns:xcap-caps}"
    root = etree.fromstring(caps.body)
    assert [a.text for a in root.iterfind(f"{ns}auids/{ns}auid")] == [
        "xcap-caps",
        "pres-rules",
        "resource-lists",
    ]
    namespaces = {n.text for n in root.iterfind(f"{ns}namespaces/{ns}namespace")}
    assert {CP, PR, "urn:ietf:params:xml:ns:resource-lists"} <= namespaces
    second = xcap(
        xcap_stack, "GET", "/xcap-root/xcap-caps/global/index/~~/xcap-caps/auids/auid%5B2%5D"
    )
    assert (second.status, second.body) == (200, b"<auid>pres-rules</auid>")
    assert (
        xcap(
            xcap_stack, "GET", "/xcap-root/xcap-caps/global/index", If_None_Match=caps.etag or ""
        ).status
        == 304
    )
    refused = xcap(
        xcap_stack, "PUT", "/xcap-root/xcap-caps/global/index", b"<x/>", "application/xcap-caps+xml"
    )
    assert refused.status == 405 and refused.headers["allow"] == "GET"


def test_selectors_are_percent_decoded_once(xcap_stack: Stack) -> None:
    """RFC 4825 §6: the node selector is percent-encoded in the URI, so a rule id
    holding '/' or a literal "%41" is selected by its encoded form, decoded once."""
    odd = RULES.replace(b'<rule id="blocked">', b'<rule id="50%41/off">')
    user = rules_of(xcap_stack, odd)
    got = user.node("GET", 'cr:ruleset/cr:rule[@id="50%41/off"]/@id')
    assert (got.status, got.body) == (200, b'"50%41/off"')


def selector_path(user: User, raw: str) -> str:
    """The URI path of a node selector written as it goes on the wire."""
    path = f"/xcap-root/pres-rules/users/{user.xui.replace(':', '%3A').replace('@', '%40')}"
    return path + f"/index/~~/{raw}?" + BINDINGS


def every_method(user: User, path: str) -> list[tuple[str, int]]:
    """(method, status) of a GET, an element PUT and a DELETE of the path."""
    answers = []
    for method, body, media in (
        ("GET", None, None),
        ("PUT", b"<rule/>", EL),
        ("DELETE", None, None),
    ):
        answer = xcap(user.stack, method, path, body, media, authorization=user.authorization)
        answers.append((method, answer.status))
    return answers


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "ruleset/rule%5B@id=%22x",  # unterminated quote
        "ruleset/@",
        "ruleset/namespace::*/rule",
        "ruleset/rule%5B1%5D%5B2%5D",
        "ruleset/%FF",
        "ruleset/rule%5Blast()%5D",
        "ruleset/x:rule%5Blast()%5D",  # outside the grammar, and an unbound prefix
        "%00",
    ],
)
def test_malformed_selectors_select_nothing(xcap_stack: Stack, raw: str) -> None:
    """RFC 4825 §8: "If the URI includes extension-selectors that the server doesn't
    understand, it MUST reject the request with a 404 (Not Found)." A step that fits
    no other production of the §6.3 grammar is an extension-selector (anything but
    "/"), so every method gets a 404, never a server error (a PUT of an element body
    where an attribute is named: 415)."""
    user = rules_of(xcap_stack)
    for method, status in every_method(user, selector_path(user, raw)):
        assert status in (404, 415), (method, raw, status)
    assert canonical(stored(user)) == canonical(RULES)


@pytest.mark.parametrize(
    "raw",
    [
        "ruleset/x:rule",
        "x:ruleset",
        "ruleset/rule/@x:id",
        "ruleset/rule%5B@x:id=%22friends%22%5D",
        "ruleset/rule%5B1%5D/x:actions/namespace::*",
    ],
)
def test_a_prefix_no_xmlns_binds_is_a_bad_request(xcap_stack: Stack, raw: str) -> None:
    """RFC 4825 §8 (for GET, PUT and DELETE alike): "If any qualified names are
    present that use a namespace prefix, and that prefix is not defined in an xmlns()
    expression, the server MUST reject the request with a 400 response." Also when
    the document does not exist, and the prefixes the query does bind (cr, pr) do
    not count for x."""
    user = rules_of(xcap_stack)
    for method, status in every_method(user, selector_path(user, raw)):
        assert status == 400, (method, raw, status)
    assert canonical(stored(user)) == canonical(RULES)
    nobody = User(xcap_stack, "pres-rules", f"sip:none-{secrets.token_hex(4)}@example.com")
    for method, status in every_method(nobody, selector_path(nobody, raw)):
        assert status == 400, (method, raw, status)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"just text",
        b"<rule id='x'/><rule id='y'/>",
        b"<rule id='x'/>trailing",
        b'<!DOCTYPE rule [<!ENTITY e "x">]><rule id="&e;"/>',
        b"<rule id='x'>" + b"<a>" * 100 + b"</a>" * 100 + b"</rule>",
        b"</rule>",
        b'<?xml version="1.0"?><rule id="x"/><?xml version="1.0"?>',
    ],
)
def test_malformed_element_bodies_are_not_xml_fragments(xcap_stack: Stack, body: bytes) -> None:
    """RFC 4825 §11.1: <not-xml-frag> "indicates that the request was supposed to
    contain a valid XML fragment body, but did not.  Most likely this is because the
    XML in the body was malformed or not balanced." (§8.2.2: a well-balanced fragment
    "including only a single element"; here also: nothing around it, and no DTD)."""
    user = rules_of(xcap_stack)
    answer = user.node("PUT", 'cr:ruleset/cr:rule[@id="x"]', body, EL)
    assert (answer.status, answer.condition()) == (409, "not-xml-frag"), answer.body
