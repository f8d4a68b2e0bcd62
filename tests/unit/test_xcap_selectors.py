"""XCAP node selectors (RFC 4825 §6.3) on pres-rules documents, pure."""

from __future__ import annotations

import pytest
from lxml import etree

from presence.xcap_selectors import (
    XCAP_ATT,
    XCAP_EL,
    SelectorError,
    XcapConflict,
    delete_node,
    get_node,
    parse_selector,
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
    assert etree.fromstring(body).get("id") == "b"
    _, second = get_node(DOCUMENT, selector("cr:ruleset/cr:rule[2]")) or ("", b"")
    assert second == body


def test_unprefixed_steps_are_in_the_default_namespace_and_ids_may_hold_slashes() -> None:
    found = get_node(DOCUMENT, selector('ruleset/rule[@id="a/1"]/actions/pr:sub-handling'))
    assert found is not None and b">allow<" in found[1]


def test_get_an_attribute() -> None:
    assert get_node(DOCUMENT, selector("cr:ruleset/cr:rule[1]/@id")) == (XCAP_ATT, b"a/1")
    assert get_node(DOCUMENT, selector("cr:ruleset/cr:rule[1]/@missing")) is None


def test_a_selector_matching_none_or_several_selects_nothing() -> None:
    assert get_node(DOCUMENT, selector('cr:ruleset/cr:rule[@id="zzz"]')) is None
    assert get_node(DOCUMENT, selector("cr:ruleset/cr:rule")) is None  # two rules
    assert get_node(DOCUMENT, selector("cr:other")) is None


@pytest.mark.parametrize(
    "path", ["", "x:ruleset", "cr:ruleset/cr:rule[0]", "cr:ruleset/cr:rule[last()]", "@id", "a b"]
)
def test_unsupported_selectors_are_refused(path: str) -> None:
    with pytest.raises(SelectorError):
        selector(path)


def test_put_replaces_an_existing_element() -> None:
    new_rule = f'<cr:rule xmlns:cr="{CP}" id="b"><cr:actions/></cr:rule>'.encode()
    changed, created = put_element(DOCUMENT, selector('cr:ruleset/cr:rule[@id="b"]'), new_rule)
    assert not created
    root = etree.fromstring(changed)
    assert [rule.get("id") for rule in root] == ["a/1", "b"]
    assert len(root[1].find(f"{{{CP}}}actions")) == 0


def test_put_creates_a_missing_element_under_its_parent() -> None:
    new_rule = f'<rule xmlns="{CP}" id="c"/>'.encode()
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


def test_delete_an_element_or_an_attribute() -> None:
    without_b = delete_node(DOCUMENT, selector('cr:ruleset/cr:rule[@id="b"]'))
    assert without_b is not None
    assert [rule.get("id") for rule in etree.fromstring(without_b)] == ["a/1"]
    without_id = delete_node(DOCUMENT, selector("cr:ruleset/cr:rule[2]/@id"))
    assert without_id is not None and etree.fromstring(without_id)[1].get("id") is None
    assert delete_node(DOCUMENT, selector('cr:ruleset/cr:rule[@id="zzz"]')) is None
    with pytest.raises(XcapConflict):
        delete_node(DOCUMENT, selector("cr:ruleset"))
