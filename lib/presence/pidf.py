"""PIDF documents (RFC 3863): safe parsing and the checks a PUBLISH body must pass.

The parser is hardened against hostile XML: no DTD loading, no entity expansion,
no network, bounded size and depth, so an XML bomb costs nothing. Values are
not judged (deployed clients publish things like <basic>unknown</basic>);
well-formedness, the root element, its namespace and entity are.
"""

from __future__ import annotations

from lxml import etree

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
MAX_DOCUMENT_BYTES = 64 * 1024
MAX_DEPTH = 32

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
)


class PidfError(ValueError):
    """Why a document is not acceptable, short enough for a SIP reason phrase."""


def parse_pidf(body: bytes) -> etree._Element:
    if len(body) > MAX_DOCUMENT_BYTES:
        raise PidfError("PIDF document too large")
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise PidfError("DTDs are not allowed in PIDF")
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError:
        raise PidfError("Body is not well-formed XML") from None
    if root.tag != f"{{{PIDF_NS}}}presence":
        raise PidfError("Body is not a PIDF document")
    entity = root.get("entity")
    if not entity or not entity.startswith(("pres:", "sip:", "sips:")):
        raise PidfError("PIDF entity missing or not a URI")
    if _depth(root) > MAX_DEPTH:
        raise PidfError("PIDF document nested too deeply")
    return root


def device_marks(root: etree._Element) -> frozenset[str]:
    """What identifies the device behind a document: its tuple ids and contact URIs
    (RFC 3903 has no device identity; these are what phones keep stable)."""
    marks = {f"id:{t.get('id')}" for t in root.iterchildren(f"{{{PIDF_NS}}}tuple")}
    marks |= {
        f"contact:{(c.text or '').strip()}"
        for c in root.iterfind(f"{{{PIDF_NS}}}tuple/{{{PIDF_NS}}}contact")
        if (c.text or "").strip()
    }
    return frozenset(marks)


def _depth(element: etree._Element) -> int:
    deepest, stack = 0, [(element, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in node)
    return deepest
