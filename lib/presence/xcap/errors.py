"""XCAP error conditions and their bodies (RFC 4825 §11), pure.

A change the server refuses with 409 names its condition in an
application/xcap-error+xml body, with the fields the §11.3 schema gives it: a
`phrase` attribute on every condition, the closest existing `<ancestor>` URI for
`no-parent`, and one `<exists field="...">` (with suggested `<alt-value>`s) per
value that had to be unique for `uniqueness-failure`.

    raise XcapConflict("no-parent", "the parent does not exist", ancestor=uri)
    body = error_body(conflict)
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from lxml import etree

XCAP_ERROR_NS = "urn:ietf:params:xml:ns:xcap-error"
XCAP_ERROR = "application/xcap-error+xml"


@dataclass(frozen=True)
class Exists:
    """One `<exists>` of a uniqueness-failure: the node selector (relative to the
    document, so starting at the root element) of the value that had to be unique,
    and values that would have been. The body carries it percent-encoded, as the
    relative URI it is (§11.2)."""

    field: str
    alt_values: tuple[str, ...] = ()


class XcapConflict(ValueError):
    """A request the document cannot take (409); the tag is the RFC 4825 §11.2
    condition (not-xml-frag, no-parent, cannot-insert, cannot-delete,
    not-xml-att-value, not-well-formed, not-utf-8, schema-validation-error,
    uniqueness-failure, constraint-failure)."""

    def __init__(
        self,
        tag: str,
        phrase: str | None = None,
        *,
        ancestor: str | None = None,
        exists: tuple[Exists, ...] = (),
    ) -> None:
        super().__init__(phrase or tag)
        self.tag = tag
        self.phrase = phrase
        self.ancestor = ancestor  # no-parent: a node selector path, "" for the document
        self.exists = exists


def error_body(conflict: XcapConflict, ancestor_uri: str | None = None) -> bytes:
    """The xcap-error document of a conflict; `ancestor_uri` is the HTTP URI of the
    closest existing ancestor (no-parent), made by the caller, which knows the
    request's URI."""
    root = etree.Element(f"{{{XCAP_ERROR_NS}}}xcap-error", nsmap={None: XCAP_ERROR_NS})
    condition = etree.SubElement(root, f"{{{XCAP_ERROR_NS}}}{conflict.tag}")
    if conflict.phrase:
        condition.set("phrase", conflict.phrase)
    if conflict.tag == "no-parent" and ancestor_uri is not None:
        etree.SubElement(condition, f"{{{XCAP_ERROR_NS}}}ancestor").text = ancestor_uri
    for exists in conflict.exists:
        field = etree.SubElement(
            condition, f"{{{XCAP_ERROR_NS}}}exists", field=node_selector_uri(exists.field)
        )
        for value in exists.alt_values:
            etree.SubElement(field, f"{{{XCAP_ERROR_NS}}}alt-value").text = value
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def node_selector_uri(selector: str) -> str:
    """A node selector as a URI path: '[', ']' and quotes percent-encoded (RFC 4825
    §6: "its node selector component MUST be percent-encoded")."""
    return quote(selector, safe="/:@*=()'")


def alternative(taken: set[str], value: str) -> str:
    """A value like `value` that is not taken yet (for an alt-value)."""
    number = 2
    while f"{value}-{number}" in taken:
        number += 1
    return f"{value}-{number}"
