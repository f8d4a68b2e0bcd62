"""XCAP application usages, document checks, error bodies and xcap-caps, pure."""

from __future__ import annotations

import pytest
from lxml import etree

from presence.xcap.errors import XCAP_ERROR_NS, Exists, XcapConflict, error_body
from presence.xcap.usages import (
    PRES_RULES,
    RESOURCE_LISTS_USAGE,
    XCAP_CAPS_DOCUMENT,
    check_document,
)

CP = "urn:ietf:params:xml:ns:common-policy"
E = f"{{{XCAP_ERROR_NS}}}"


def condition(document: bytes, usage=PRES_RULES) -> XcapConflict:  # type: ignore[no-untyped-def]
    with pytest.raises(XcapConflict) as refused:
        check_document(usage, document)
    return refused.value


def test_documents_are_checked_in_the_order_the_rfc_gives() -> None:
    assert condition(b"\xff<x/>").tag == "not-utf-8"
    assert condition(b"<ruleset").tag == "not-well-formed"
    assert condition(b'<other xmlns="urn:x"/>').tag == "schema-validation-error"
    assert condition(b'<resource-lists xmlns="urn:x"/>', RESOURCE_LISTS_USAGE).tag == (
        "schema-validation-error"
    )
    valid = f'<ruleset xmlns="{CP}"><rule id="a"/></ruleset>'
    assert check_document(PRES_RULES, valid.encode()) == valid


def test_rule_ids_are_unique() -> None:
    twice = condition(f'<ruleset xmlns="{CP}"><rule id="a"/><rule id="a"/></ruleset>'.encode())
    assert twice.tag == "uniqueness-failure"
    assert twice.exists == (Exists("ruleset/rule/@id", ("a-2",)),)


def test_error_bodies_carry_the_schemas_fields() -> None:
    parent = etree.fromstring(
        error_body(XcapConflict("no-parent", "no parent", ancestor=""), "http://x/index")
    )
    assert parent.tag == f"{E}xcap-error"
    assert parent[0].tag == f"{E}no-parent" and parent[0].get("phrase") == "no parent"
    assert parent[0].findtext(f"{E}ancestor") == "http://x/index"
    unique = etree.fromstring(
        error_body(XcapConflict("uniqueness-failure", exists=(Exists("a/@b", ("c", "d")),)))
    )
    exists = unique[0].find(f"{E}exists")
    assert exists is not None and exists.get("field") == "a/@b"
    assert [alt.text for alt in exists.findall(f"{E}alt-value")] == ["c", "d"]
    assert etree.fromstring(error_body(XcapConflict("cannot-delete")))[0].attrib == {}


def test_xcap_caps_lists_the_usages_and_their_namespaces() -> None:
    caps = etree.fromstring(XCAP_CAPS_DOCUMENT.encode())
    ns = "{urn:ietf:params:xml:ns:xcap-caps}"
    assert [a.text for a in caps.iterfind(f"{ns}auids/{ns}auid")] == [
        "xcap-caps",
        "pres-rules",
        "resource-lists",
    ]
    assert [child.tag for child in caps] == [f"{ns}auids", f"{ns}extensions", f"{ns}namespaces"]
    namespaces = {n.text for n in caps.iterfind(f"{ns}namespaces/{ns}namespace")}
    assert {CP, "urn:ietf:params:xml:ns:resource-lists", XCAP_ERROR_NS} <= namespaces
