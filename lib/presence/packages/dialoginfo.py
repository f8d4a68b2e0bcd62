"""Dialog state (RFC 4235, event package dialog): checking published documents and
combining them into the one document a watcher gets. Pure: no I/O, no clock.

A busy-lamp field watches a line: a PBX, or the phones themselves, PUBLISH
``application/dialog-info+xml`` documents for the line's address. The rules:

* A published document must be well-formed, have the root
  ``<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info">`` with an ``entity``
  URI, a ``version`` that is a non-negative integer and a ``state`` of ``full`` or
  ``partial``; each ``<dialog>`` needs an ``id`` and a ``<state>`` of trying,
  proceeding, early, confirmed or terminated. Anything else is refused with the
  reason (a SIP 400). A publication is its publisher's whole view of the line
  (RFC 4235 defines partial state for NOTIFYs only): ``partial`` is accepted from
  phones that write it and read the same way.
* The aggregated document (``state="full"``, the entity of the presentity) is the
  union of the live publications' dialogs, one per dialog ``id``: the copy from the
  newest publication wins (a PBX and a phone reporting the same call agree on its
  id; the later report is the newer state). Publications are taken newest first,
  each in document order.
* A publication that was removed or expired shows each of its dialogs once as
  ``<dialog id=...><state>terminated</state></dialog>`` (its identifying attributes
  kept, the rest dropped), unless a live publication still has that dialog: a lamp
  never stays lit because its publisher went away.
* ``version`` counts the NOTIFYs of one subscription from 0 (RFC 4235 §4.1): the
  aggregated document carries 0 and ``with_version`` stamps each subscription's.
* A stored body that does not parse is skipped, never raised.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lxml import etree

from presence.pidf.aggregation import Publication
from presence.safexml import XmlRefused, parse_untrusted

DIALOG_INFO_NS = "urn:ietf:params:xml:ns:dialog-info"
CONTENT_TYPE = "application/dialog-info+xml"
MAX_DOCUMENT_BYTES = 64 * 1024
MAX_DEPTH = 32
STATES = ("trying", "proceeding", "early", "confirmed", "terminated")
# Attributes of <dialog> that identify it (RFC 4235 §4.1.1), kept on a terminated copy.
IDENTIFYING = ("id", "call-id", "local-tag", "remote-tag", "direction")

_ROOT = f"{{{DIALOG_INFO_NS}}}dialog-info"
_DIALOG = f"{{{DIALOG_INFO_NS}}}dialog"
_STATE = f"{{{DIALOG_INFO_NS}}}state"
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_VERSION = re.compile(rb'(<dialog-info\b[^>]*?\sversion=")\d+(")')


class DialogInfoError(ValueError):
    """Why a document is not acceptable, short enough for a SIP reason phrase."""


def parse_dialog_info(body: bytes, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> etree._Element:
    """The checked document's root; raises DialogInfoError saying what is wrong."""
    try:
        root = parse_untrusted(
            body, what="dialog-info document", max_bytes=max_bytes, max_depth=MAX_DEPTH
        )
    except XmlRefused as error:
        raise DialogInfoError(str(error)) from None
    if root.tag != _ROOT:
        raise DialogInfoError("Body is not a dialog-info document")
    entity = root.get("entity")
    if not entity or not entity.startswith(("sip:", "sips:", "tel:", "pres:")):
        raise DialogInfoError("dialog-info entity missing or not a URI")
    version = root.get("version")
    if version is None or not version.isdigit() or not version.isascii():
        raise DialogInfoError("dialog-info version missing or not a number")
    if root.get("state") not in ("full", "partial"):
        raise DialogInfoError("dialog-info state must be full or partial")
    for dialog in root.iterchildren(_DIALOG):
        if not dialog.get("id"):
            raise DialogInfoError("dialog without id")
        state = dialog.find(_STATE)
        if state is None or (state.text or "").strip() not in STATES:
            raise DialogInfoError(f"dialog state must be one of {', '.join(STATES)}")
    return root


def dialog_ids(root: etree._Element) -> frozenset[str]:
    """What identifies the publishing device in a document: its dialog ids (a device
    that publishes afresh about the same dialog replaces its own publication)."""
    return frozenset(f"dialog:{d.get('id')}" for d in root.iterchildren(_DIALOG))


def empty_dialog_info(entity: str) -> bytes:
    """The document of a line nobody publishes for: no dialogs, idle."""
    return _serialize(_root(entity))


def aggregate_dialogs(
    entity: str, publications: Sequence[Publication], *, closed: Sequence[Publication] = ()
) -> bytes:
    """One full-state document: the union of the live publications' dialogs, newest
    copy of each id, then the closed publications' dialogs shown terminated once."""
    root = _root(entity)
    seen: set[str] = set()
    for document in _newest_first(publications):
        for dialog in document.iterchildren(_DIALOG):
            ident = dialog.get("id") or ""
            if ident not in seen:
                seen.add(ident)
                root.append(dialog)
    for document in _newest_first(closed):
        for dialog in document.iterchildren(_DIALOG):
            ident = dialog.get("id") or ""
            if ident not in seen:
                seen.add(ident)
                root.append(_terminated(dialog))
    return _serialize(root)


def with_version(document: bytes, version: int) -> bytes:
    """The document with its version attribute set (a document of this module)."""
    return _VERSION.sub(rb"\g<1>%d\g<2>" % version, document, count=1)


def dialog_states(document: bytes) -> dict[str, str]:
    """Dialog id -> state of a document (for tests, admin views and logs)."""
    root = parse_dialog_info(document, max_bytes=max(len(document), MAX_DOCUMENT_BYTES))
    return {
        d.get("id") or "": (d.findtext(_STATE) or "").strip() for d in root.iterchildren(_DIALOG)
    }


def _newest_first(publications: Sequence[Publication]) -> list[etree._Element]:
    order = sorted(
        range(len(publications)),
        key=lambda index: (publications[index].received_time, index),
        reverse=True,
    )
    documents = []
    for index in order:
        body = publications[index].body
        try:
            documents.append(parse_dialog_info(body.encode() if isinstance(body, str) else body))
        except (ValueError, etree.LxmlError):  # DialogInfoError and UnicodeError too
            continue
    return documents


def _terminated(dialog: etree._Element) -> etree._Element:
    ended = etree.Element(_DIALOG, nsmap={None: DIALOG_INFO_NS})
    for name in IDENTIFYING:
        value = dialog.get(name)
        if value is not None:
            ended.set(name, value)
    etree.SubElement(ended, _STATE).text = "terminated"
    return ended


def _root(entity: str) -> etree._Element:
    root = etree.Element(_ROOT, nsmap={None: DIALOG_INFO_NS})
    root.set("version", "0")
    root.set("state", "full")
    root.set("entity", entity)
    return root


def _serialize(root: etree._Element) -> bytes:
    root.text = "\n" if len(root) else None
    for child in root:
        child.tail = "\n"
    return _DECLARATION + etree.tostring(root, encoding="UTF-8")
