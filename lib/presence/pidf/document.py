"""PIDF documents (RFC 3863): safe parsing and the checks a PUBLISH body must pass.

The parser is hardened against hostile XML (presence.safexml). Values are
not judged (deployed clients publish things like <basic>unknown</basic>);
well-formedness, the root element, its namespace and entity are.
"""

from __future__ import annotations

from lxml import etree

from presence.safexml import XmlRefused, parse_untrusted

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
# The largest body of one PUBLISH. The aggregated document of all of a presentity's
# publications has its own limit, PRESENCE_MAX_DOCUMENT_BYTES (Settings.max_document_bytes):
# the store refuses a PUBLISH that would pass it, the notifier parses up to it.
MAX_DOCUMENT_BYTES = 64 * 1024
MAX_DEPTH = 32


class PidfError(ValueError):
    """Why a document is not acceptable, short enough for a SIP reason phrase."""


def parse_pidf(body: bytes, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> etree._Element:
    try:
        root = parse_untrusted(body, what="PIDF document", max_bytes=max_bytes, max_depth=MAX_DEPTH)
    except XmlRefused as error:
        raise PidfError(str(error)) from None
    if root.tag != f"{{{PIDF_NS}}}presence":
        raise PidfError("Body is not a PIDF document")
    entity = root.get("entity")
    if not entity or not entity.startswith(("pres:", "sip:", "sips:")):
        raise PidfError("PIDF entity missing or not a URI")
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


RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"


def current_sphere(document: bytes, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> str | None:
    """The presentity's sphere (RFC 4480 §3.5: <rpid:sphere>work</rpid:sphere> or
    <rpid:sphere><rpid:work/></rpid:sphere>) in an aggregated document, which pres-rules'
    sphere conditions test (RFC 4745 §7.2); None when it states none."""
    try:
        root = parse_pidf(document, max_bytes=max_bytes)
    except PidfError:
        return None
    for sphere in root.iter(f"{{{RPID_NS}}}sphere"):
        text = (sphere.text or "").strip()
        if text:
            return text
        for child in sphere:
            if isinstance(child.tag, str):
                return etree.QName(child).localname
    return None
