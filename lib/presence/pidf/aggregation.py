"""Aggregation: one PIDF document (RFC 3863) from all of a presentity's publications.

presence-store keeps one row per publication (one device's document); a watcher
gets ONE document combining them. Pure: no I/O, no clock. The rules:

* Output: ``<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="...">`` with the
  given entity, UTF-8, with an XML declaration. Nothing to say (no live and no
  closed publication) gives a presence element with no children, which is valid
  PIDF ("nothing is known"), the same bytes as ``empty_document``.
* Order follows pidf.xsd (``tuple*, note*, any##other*``; RFC 4479 makes
  ``dm:person`` and ``dm:device`` ##other children of presence):

    1. tuples of live publications,
    2. tuples of closed publications (see below),
    3. notes,
    4. ``dm:person``, 5. ``dm:device``,
    6. every other extension element (rpid, cipid, vendor ...), verbatim.

  Inside each group publications are taken newest first (highest received_time;
  on a tie the one later in the input), each in its own document order, so a
  watcher that only reads the first tuple or person sees the latest device.
* De-duplication: a top-level element with an ``id`` attribute (tuple, person,
  device or any extension) is unique by (namespace, local name, id): the copy
  from the newest publication wins. Elements without an id are all kept except
  exact duplicates: notes with the same xml:lang and text, other elements with
  the same exclusive canonical XML. An id used by two *different* element types
  from two devices is kept twice (no element type wins over another).
* Tuples of different devices: RFC 3863 wants tuple ids unique in a document, and
  devices of one user often use the same one (baresip writes ``t4109`` on every
  install). A tuple id that live publications of two or more *devices*
  (``Publication.device``, see presence.pidf.device) use is written as
  ``<id>-<tag of the device>`` in each of them, so both devices show; the tag is
  stable while the clash lasts, and the id is plain again once it is over. Within
  one device the newest copy wins, as above.
* Closed publications (just removed or expired): each of their tuples appears
  once as ``<tuple id><status><basic>closed</basic></status><contact/></tuple>``,
  id and contact kept, status extensions, notes and timestamp dropped (they
  described the state that ended), unless a live tuple has the same id, before
  any renaming (live wins). Their persons, devices, notes and extensions are not carried.
* Values are not judged (``<basic>unknown</basic>`` passes through). Top-level
  elements the schema cannot hold (another PIDF element than tuple and note, or
  an element in no namespace) are dropped. A stored body that does not parse is
  skipped, never raised.
* Namespaces: the output root binds the PIDF namespace as default and every
  prefix the carried elements have in scope, first binding (newest publication)
  first. An element whose scope agrees with those bindings is moved into the
  output tree. One whose scope disagrees (two documents bind one prefix to
  different URIs, or it redeclares the default namespace) is serialized on its
  own with every declaration it had in scope. The reason: lxml rewrites moved
  elements to whatever prefix the new parent has for a URI, which breaks
  QName-valued content (``xsi:type="p:x"``, vendor values) that still says ``p``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from presence.pidf.device import tuple_id_suffix
from presence.pidf.document import PIDF_NS, parse_pidf

DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

_PIDF = f"{{{PIDF_NS}}}"
_PRESENCE = f"{_PIDF}presence"
_TUPLE = f"{{{PIDF_NS}}}tuple"
_NOTE = f"{{{PIDF_NS}}}note"
_STATUS = f"{{{PIDF_NS}}}status"
_BASIC = f"{{{PIDF_NS}}}basic"
_CONTACT = f"{{{PIDF_NS}}}contact"
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_SLOT = "presence-aggregation-slot"  # processing instruction standing for a serialized element

# Output groups, in document order.
_LIVE_TUPLES, _CLOSED_TUPLES, _NOTES, _PERSONS, _DEVICES, _OTHERS = range(6)
_GROUP_OF_TAG = {
    _TUPLE: _LIVE_TUPLES,
    _NOTE: _NOTES,
    f"{{{DM_NS}}}person": _PERSONS,
    f"{{{DM_NS}}}device": _DEVICES,
}

_Element = etree._Element
_Bindings = tuple[tuple[str | None, str], ...]


@dataclass(frozen=True)
class Publication:
    """One stored publication: a device's PIDF document as presence-store keeps it."""

    etag: str
    received_time: int  # Unix seconds
    body: str | bytes
    device: str = ""  # the publishing device (presence.pidf.device.device_key); "" unknown


def empty_document(entity: str) -> bytes:
    """The document for a presentity nobody publishes for: no tuples, nothing known."""
    return _serialize(_root(entity, {}), [])


def aggregate(
    entity: str, publications: Sequence[Publication], *, closed: Sequence[Publication] = ()
) -> bytes:
    """One PIDF document combining ``publications``, with ``closed`` ones shown closed."""
    groups: list[list[_Element]] = [[] for _ in range(_OTHERS + 1)]
    seen: set[tuple[object, ...]] = set()
    live = _newest_first(publications)
    live_ids, shared = _tuple_ids(live)
    for root, device in live:
        for element in root:
            group = _group(element)
            if group == _LIVE_TUPLES:
                ident = element.get("id")
                if ident in shared:
                    element.set("id", f"{ident}-{tuple_id_suffix(device)}")
            if group is not None and _first(element, seen):
                groups[group].append(element)
    for root, _ in _newest_first(closed):
        for element in root.iterchildren(_TUPLE):
            if element.get("id") not in live_ids and _first(element, seen):
                groups[_CLOSED_TUPLES].append(_closed_tuple(element))
    kept = [(element, _scope(element)) for group in groups for element in group]
    nsmap: dict[str | None, str] = {None: PIDF_NS}
    for _, scope in kept:
        for prefix, uri in scope:
            nsmap.setdefault(prefix, uri)
    root = _root(entity, nsmap)
    pieces: list[bytes] = []
    for element, scope in kept:
        if all(nsmap[prefix] == uri for prefix, uri in scope):
            root.append(element)
        else:
            root.append(etree.ProcessingInstruction(_SLOT, str(len(pieces))))
            pieces.append(etree.tostring(element, encoding="UTF-8", with_tail=False))
    return _serialize(root, pieces)


def _newest_first(publications: Sequence[Publication]) -> list[tuple[_Element, str]]:
    """Each parsable publication's root with its device, newest first."""
    order = sorted(
        range(len(publications)),
        key=lambda index: (publications[index].received_time, index),
        reverse=True,
    )
    roots = ((_parse(publications[i].body), publications[i].device) for i in order)
    return [(root, device) for root, device in roots if root is not None]


def _tuple_ids(live: list[tuple[_Element, str]]) -> tuple[set[str], set[str]]:
    """The tuple ids of live publications, and those that more than one device uses."""
    devices: dict[str, set[str]] = {}
    for root, device in live:
        for tuple_ in root.iterchildren(_TUPLE):
            ident = tuple_.get("id")
            if ident is not None:
                devices.setdefault(ident, set()).add(device)
    return set(devices), {ident for ident, owners in devices.items() if len(owners) > 1}


def _parse(body: str | bytes) -> _Element | None:
    try:
        # Bodies are stored as text; presence-store validated them as UTF-8 bytes.
        return parse_pidf(body.encode() if isinstance(body, str) else body)
    except (ValueError, etree.LxmlError):  # PidfError and UnicodeError are ValueErrors
        return None


def _group(element: _Element) -> int | None:
    tag = element.tag
    if not isinstance(tag, str) or not tag.startswith("{"):
        return None  # not an element, or an element in no namespace
    group = _GROUP_OF_TAG.get(tag)
    if group is None and not tag.startswith(_PIDF):
        return _OTHERS
    return group


def _first(element: _Element, seen: set[tuple[object, ...]]) -> bool:
    """True the first time an element with this identity is offered (newest wins)."""
    ident = element.get("id")
    if ident is not None:
        key: tuple[object, ...] = ("id", element.tag, ident)
    elif element.tag == _NOTE:
        key = ("note", element.get(XML_LANG), element.text or "")
    else:
        key = ("xml", etree.tostring(element, method="c14n", exclusive=True, with_tail=False))
    if key in seen:
        return False
    seen.add(key)
    return True


def _closed_tuple(tuple_: _Element) -> _Element:
    closed = etree.Element(_TUPLE, nsmap={None: PIDF_NS})
    ident = tuple_.get("id")
    if ident is not None:
        closed.set("id", ident)
    status = etree.SubElement(closed, _STATUS)
    etree.SubElement(status, _BASIC).text = "closed"
    contact = tuple_.find(_CONTACT)
    if contact is not None:
        etree.SubElement(closed, _CONTACT, attrib=dict(contact.attrib)).text = contact.text
    return closed


def _scope(element: _Element) -> _Bindings:
    """Every namespace binding in scope anywhere in the subtree, in document order."""
    return tuple(
        dict.fromkeys(
            binding for node in element.iter(etree.Element) for binding in node.nsmap.items()
        )
    )


def _root(entity: str, nsmap: dict[str | None, str]) -> _Element:
    root = etree.Element(_PRESENCE, nsmap=nsmap or {None: PIDF_NS})
    root.set("entity", entity)
    return root


def _serialize(root: _Element, pieces: list[bytes]) -> bytes:
    root.text = "\n" if len(root) else None
    for child in root:
        child.tail = "\n"
    document = etree.tostring(root, encoding="UTF-8")
    for index, piece in enumerate(pieces):
        document = document.replace(f"<?{_SLOT} {index}?>".encode(), piece, 1)
    return _DECLARATION + document
