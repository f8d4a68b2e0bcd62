"""XCAP node selectors (RFC 4825 §6.3) on pres-rules documents, pure."""

from __future__ import annotations

import pytest
from lxml import etree

from presence.xcap.selectors import (
    XCAP_ATT,
    XCAP_EL,
    XCAP_NS,
    SelectorError,
    UnboundPrefix,
    XcapConflict,
    att_value,
    closest_ancestor,
    delete_node,
    get_node,
    parse_att_value,
    parse_selector,
    put_attribute,
    put_element,
)

CP = "urn:ietf:params:xml:ns:common-policy"
PR = "urn:ietf:params:xml:ns:pres-rules"
BIND = f"xmlns(cr={CP})xmlns(pr={PR})"
DOCUMENT = f"""<?xml version="1.0" encoding="UTF-8"?>
<cr:ruleset xmlns:cr="{CP}" xmlns:pr="{PR}">
  <cr:rule id="a/1"><cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions></cr:rule>
  <cr:rule id="b"><cr:actions><pr:sub-handling>block</pr:sub-handling></cr:actions></cr:rule>
</cr:ruleset>""".encode()


def selector(path: str, query: str = BIND):  # type: ignore[no-untyped-def]
    return parse_selector(path, query, CP)


def test_get_an_element_by_attribute_and_by_position() -> None:
    media_type, body = get_node(DOCUMENT, selector('cr:ruleset/cr:rule[@id="b"]')) or ("", b"")
    assert media_type == XCAP_EL
    # As written in the document: no namespace declarations of its ancestors (§8.3).
    assert body == (
        b'<cr:rule id="b"><cr:actions><pr:sub-handling>block</pr:sub-handling>'
        b"</cr:actions></cr:rule>"
    )
    _, second = get_node(DOCUMENT, selector("cr:ruleset/cr:rule[2]")) or ("", b"")
    assert second == body


def test_an_element_keeps_the_declarations_it_makes_itself() -> None:
    document = f'<ruleset xmlns="{CP}"><rule id="a" xmlns:x="urn:x"><x:y/></rule></ruleset>'
    found = get_node(document.encode(), selector("ruleset/rule"))
    assert found == (XCAP_EL, b'<rule xmlns:x="urn:x" id="a"><x:y/></rule>')


def test_namespace_bindings_in_scope() -> None:
    found = get_node(DOCUMENT, selector("cr:ruleset/cr:rule[1]/namespace::*"))
    assert found is not None and found[0] == XCAP_NS
    bindings = etree.fromstring(found[1])
    assert bindings.nsmap == {"cr": CP, "pr": PR} and len(bindings) == 0


def test_unprefixed_steps_are_in_the_default_namespace_and_ids_may_hold_slashes() -> None:
    found = get_node(DOCUMENT, selector('ruleset/rule[@id="a/1"]/actions/pr:sub-handling'))
    assert found is not None and b">allow<" in found[1]


def test_get_an_attribute() -> None:
    """RFC 4825 §7.9 and §13: the body is the attribute's value as an XML AttValue,
    with its quotes (a GET of @uri answers "sip:nancy@example.com")."""
    assert get_node(DOCUMENT, selector("cr:ruleset/cr:rule[1]/@id")) == (XCAP_ATT, b'"a/1"')
    assert get_node(DOCUMENT, selector("cr:ruleset/cr:rule[1]/@missing")) is None


def test_a_selector_matching_none_or_several_selects_nothing() -> None:
    assert get_node(DOCUMENT, selector('cr:ruleset/cr:rule[@id="zzz"]')) is None
    assert get_node(DOCUMENT, selector("cr:ruleset/cr:rule")) is None  # two rules
    assert get_node(DOCUMENT, selector("cr:other")) is None


def test_position_zero_is_grammatical_and_selects_nothing() -> None:
    assert get_node(DOCUMENT, selector("cr:ruleset/*[0]")) is None


@pytest.mark.parametrize(
    "path",
    [
        "",
        "cr:ruleset/cr:rule[last()]",
        "@id",
        "a b",
        "namespace::*",
        "x:ruleset/x:rule[last()]",  # outside the grammar, whatever its prefixes
    ],
)
def test_unsupported_selectors_are_refused(path: str) -> None:
    """RFC 4825 §8: "If the URI includes extension-selectors that the server doesn't
    understand, it MUST reject the request with a 404 (Not Found)." A step outside
    the grammar is one, also when a prefix in it is bound nowhere."""
    with pytest.raises(SelectorError) as refused:
        selector(path)
    assert not isinstance(refused.value, UnboundPrefix)


@pytest.mark.parametrize(
    "path",
    [
        "x:ruleset",
        "cr:ruleset/x:rule",
        "cr:ruleset/cr:rule/@x:id",
        'cr:ruleset/cr:rule[@x:id="a"]',
        "cr:ruleset/cr:rule[1]/x:actions/namespace::*",
    ],
)
def test_a_prefix_the_query_does_not_bind_is_its_own_refusal(path: str) -> None:
    """RFC 4825 §8: "If any qualified names are present that use a namespace prefix,
    and that prefix is not defined in an xmlns() expression, the server MUST reject
    the request with a 400 response." (in element steps, attribute steps and
    attribute tests alike)."""
    with pytest.raises(UnboundPrefix):
        selector(path)
    bound = selector(path, BIND + "xmlns(x=urn:x)")
    assert bound.steps


def test_attribute_values_are_att_values_with_their_quotes() -> None:
    """XML 1.0's AttValue: '"' ([^<&"] | Reference)* '"' | "'" ([^<&'] | Reference)* "'";
    what must be escaped is, and tabs and line ends go as references so that they
    survive attribute-value normalisation."""
    assert att_value("sip:nancy@example.com") == '"sip:nancy@example.com"'
    assert att_value("a&b<c>\"d'e") == '"a&amp;b&lt;c&gt;&quot;d\'e"'
    assert att_value("a\tb\nc") == '"a&#9;b&#10;c"'
    assert att_value("") == '""'
    for value in ("sip:nancy@example.com", "a&b<c>\"d'e", "a\tb\nc\r", "", "é€"):
        assert parse_att_value(att_value(value).encode()) == value


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (b'"sip:nancy@example.com"', "sip:nancy@example.com"),
        (b"'sip:nancy@example.com'", "sip:nancy@example.com"),
        (b"'say \"hi\"'", 'say "hi"'),
        (b'"it\'s"', "it's"),
        (b'"a&amp;b&lt;&gt;&quot;&apos;&#65;&#x42;"', "a&b<>\"'AB"),
        (b'""', ""),
        (b'"a\nb"', "a b"),  # attribute-value normalisation (XML 1.0 §3.3.3)
        ('"\u00e9"'.encode(), "\u00e9"),
    ],
)
def test_an_att_value_body_is_unescaped(body: bytes, value: str) -> None:
    """RFC 4825 §7.7: the body of an attribute PUT is the value as an XML AttValue,
    in double or single quotes."""
    assert parse_att_value(body) == value


@pytest.mark.parametrize(
    "body",
    [
        b"sip:nancy@example.com",  # no quotes
        b'"unterminated',
        b"'mixed\"",
        b'"a"b"',
        b'"a" ',  # nothing may follow it
        b' "a"',
        b'"a"\n',
        b'"a" v="b"',
        b'"a<b"',
        b'"a&b"',
        b'"a&b c;"',
        b'"&undefined;"',
        b'"&#0;"',
        b'"&#x110000;"',
        b"",
        b'"\xff"',
    ],
)
def test_a_body_that_is_no_att_value_is_refused(body: bytes) -> None:
    """RFC 4825 §11.1: <not-xml-att-value> "indicates that the request was supposed
    to contain a valid XML attribute value, but did not"."""
    with pytest.raises(XcapConflict) as refused:
        parse_att_value(body)
    assert refused.value.tag == "not-xml-att-value"


def test_put_replaces_an_existing_element() -> None:
    new_rule = b'<cr:rule id="b"><cr:actions/></cr:rule>'  # cr: bound by the document
    changed, created = put_element(DOCUMENT, selector('cr:ruleset/cr:rule[@id="b"]'), new_rule)
    assert not created
    root = etree.fromstring(changed)
    assert [rule.get("id") for rule in root] == ["a/1", "b"]
    assert len(root[1].find(f"{{{CP}}}actions")) == 0


def test_put_creates_a_missing_element_under_its_parent() -> None:
    new_rule = f'<rule xmlns="{CP}" id="c"/>'.encode()  # its own declaration works too
    changed, created = put_element(DOCUMENT, selector('cr:ruleset/cr:rule[@id="c"]'), new_rule)
    assert created
    assert [rule.get("id") for rule in etree.fromstring(changed)] == ["a/1", "b", "c"]


def test_put_refuses_what_cannot_hold() -> None:
    rule_c = f'<cr:rule xmlns:cr="{CP}" id="c"/>'.encode()
    with pytest.raises(XcapConflict) as mismatch:  # the body is not what the selector names
        put_element(DOCUMENT, selector('cr:ruleset/cr:rule[@id="d"]'), rule_c)
    assert mismatch.value.tag == "cannot-insert"
    with pytest.raises(XcapConflict) as orphan:
        put_element(DOCUMENT, selector('cr:ruleset/cr:nothing/cr:rule[@id="c"]'), rule_c)
    assert orphan.value.tag == "no-parent"
    with pytest.raises(XcapConflict) as broken:
        put_element(DOCUMENT, selector('cr:ruleset/cr:rule[@id="c"]'), b"<cr:rule")
    assert broken.value.tag == "not-xml-frag"
    with pytest.raises(XcapConflict) as two:
        put_element(DOCUMENT, selector('cr:ruleset/cr:rule[@id="c"]'), rule_c + rule_c)
    assert two.value.tag == "not-xml-frag"
    with pytest.raises(XcapConflict) as unbound:  # q: is bound nowhere
        put_element(DOCUMENT, selector('cr:ruleset/cr:rule[@id="c"]'), b'<q:rule id="c"/>')
    assert unbound.value.tag == "not-xml-frag"


def test_an_unqualified_body_takes_the_documents_default_namespace() -> None:
    document = f'<ruleset xmlns="{CP}"><rule id="a"/><rule id="b"/></ruleset>'.encode()
    changed, created = put_element(document, selector('ruleset/rule[@id="c"]'), b'<rule id="c"/>')
    assert created
    assert [etree.QName(rule).namespace for rule in etree.fromstring(changed)] == [CP] * 3


SIBLINGS = f"""<ruleset xmlns="{CP}" xmlns:x="urn:x">
  <rule id="a"/><rule id="b"/><x:other/>
</ruleset>""".encode()


def ids(document: bytes) -> list[str]:
    return [child.get("id") or etree.QName(child).localname for child in etree.fromstring(document)]


def test_a_new_element_goes_after_its_last_namesake() -> None:
    changed, _ = put_element(SIBLINGS, selector('ruleset/rule[@id="c"]'), b'<rule id="c"/>')
    assert ids(changed) == ["a", "b", "c", "other"]


def test_an_element_is_created_by_position() -> None:
    changed, created = put_element(SIBLINGS, selector("ruleset/rule[3]"), b'<rule id="c"/>')
    assert created and ids(changed) == ["a", "b", "c", "other"]
    changed, created = put_element(SIBLINGS, selector("ruleset/*[4]"), b'<rule id="d"/>')
    assert created and ids(changed) == ["a", "b", "other", "d"]
    for unsatisfiable in ("ruleset/rule[0]", "ruleset/rule[5]", "ruleset/*[0]"):
        with pytest.raises(XcapConflict) as refused:
            put_element(SIBLINGS, selector(unsatisfiable), b'<rule id="e"/>')
        assert refused.value.tag == "cannot-insert"


def test_an_element_is_created_by_attribute_predicate() -> None:
    changed, created = put_element(SIBLINGS, selector('ruleset/*[@id="c"]'), b'<rule id="c"/>')
    assert created and ids(changed) == ["a", "b", "c", "other"]
    with pytest.raises(XcapConflict) as refused:  # the body's id is not the URI's
        put_element(SIBLINGS, selector('ruleset/*[@id="c"]'), b'<rule id="d"/>')
    assert refused.value.tag == "cannot-insert"


def test_no_parent_names_the_closest_ancestor() -> None:
    missing = selector('cr:ruleset/cr:rule[@id="b"]/cr:conditions/cr:identity')
    assert closest_ancestor(DOCUMENT, missing) == 'cr:ruleset/cr:rule[@id="b"]'
    assert closest_ancestor(DOCUMENT, selector("cr:other/cr:rule")) == ""


def test_attributes_are_put_as_attribute_values() -> None:
    """RFC 4825 §7.7: the body is an AttValue, quotes included; what a GET returns
    (§7.9) is what a PUT takes back."""
    rule_id = selector("cr:ruleset/cr:rule[2]/@id")
    changed, created = put_attribute(DOCUMENT, rule_id, b'"c&amp;d"')
    assert not created and etree.fromstring(changed)[1].get("id") == "c&d"
    assert get_node(changed, rule_id) == (XCAP_ATT, b'"c&amp;d"')
    changed, created = put_attribute(DOCUMENT, selector("cr:ruleset/cr:rule[2]/@x"), b"'1'")
    assert created and etree.fromstring(changed)[1].get("x") == "1"
    for bad in (b"1", b'"a"b"', b'"a<b"', b'"a&b"', b'"\xff"'):
        with pytest.raises(XcapConflict) as refused:
            put_attribute(DOCUMENT, selector("cr:ruleset/cr:rule[2]/@x"), bad)
        assert refused.value.tag == "not-xml-att-value"
    with pytest.raises(XcapConflict) as moved:  # the URI would no longer select it
        put_attribute(DOCUMENT, selector('cr:ruleset/cr:rule[@id="b"]/@id'), b'"z"')
    assert moved.value.tag == "cannot-insert"
    with pytest.raises(XcapConflict) as orphan:
        put_attribute(DOCUMENT, selector("cr:ruleset/cr:rule[3]/@id"), b'"z"')
    assert orphan.value.tag == "no-parent"


def test_delete_an_element_or_an_attribute() -> None:
    without_b = delete_node(DOCUMENT, selector('cr:ruleset/cr:rule[@id="b"]'))
    assert without_b is not None
    assert [rule.get("id") for rule in etree.fromstring(without_b)] == ["a/1"]
    without_id = delete_node(DOCUMENT, selector("cr:ruleset/cr:rule[2]/@id"))
    assert without_id is not None and etree.fromstring(without_id)[1].get("id") is None
    assert delete_node(DOCUMENT, selector('cr:ruleset/cr:rule[@id="zzz"]')) is None
    with pytest.raises(XcapConflict):
        delete_node(DOCUMENT, selector("cr:ruleset"))


def test_deleting_what_the_uri_would_still_select_is_refused() -> None:
    with pytest.raises(XcapConflict) as refused:  # rule[1] would then be the second rule
        delete_node(DOCUMENT, selector("cr:ruleset/cr:rule[1]"))
    assert refused.value.tag == "cannot-delete"
    assert delete_node(DOCUMENT, selector("cr:ruleset/cr:rule[2]")) is not None
