"""Parsing XML from the network (PIDF bodies, pres-rules documents), hardened.

No DTD loading, no entity expansion, no network access, bounded size and depth:
an XML bomb or an external-entity trick costs nothing and reveals nothing.
"""

from __future__ import annotations

from lxml import etree

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
)


class XmlRefused(ValueError):
    """Why a document was refused, in a few words (usable as a SIP reason phrase)."""


def parse_untrusted(body: bytes, *, what: str, max_bytes: int, max_depth: int) -> etree._Element:
    if len(body) > max_bytes:
        raise XmlRefused(f"{what} too large")
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise XmlRefused(f"DTDs are not allowed in {what}")
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError:
        raise XmlRefused(f"{what} is not well-formed XML") from None
    if root.getroottree().docinfo.internalDTD is not None:  # e.g. UTF-16 hides the byte check
        raise XmlRefused(f"DTDs are not allowed in {what}")
    depth = deepest = 0
    for event, _ in etree.iterwalk(root, events=("start", "end")):
        depth += 1 if event == "start" else -1
        deepest = max(deepest, depth)
    if deepest > max_depth:
        raise XmlRefused(f"{what} nested too deeply")
    return root
