"""What one watcher may see of a PIDF document, given a rules ``Decision``. Pure, no I/O.

RFC 5025 transformations are positive grants: what no matching rule grants is
removed. ``filter_document`` with ``default="rfc5025"`` applies them so:

* Top level: a ``<tuple>`` (service) is kept only if ``provide-services``
  grants it (``all-services``, or its ``id`` as ``occurrence-id``, its
  ``rpid:class``, its ``<contact>`` URI as ``service-uri``, or that URI's scheme
  as ``service-uri-scheme``); a ``dm:person`` only if ``provide-persons`` grants
  it (``all-persons``, ``occurrence-id``, ``class``); a ``dm:device`` only if
  ``provide-devices`` grants it (``all-devices``, ``occurrence-id``, ``class``,
  its ``dm:deviceID`` as ``deviceID``). A top-level ``<note>`` needs
  ``provide-note``; any other top-level element is an unknown attribute.
* Inside a kept tuple, ``<status>`` with its ``<basic>``, ``<contact>`` and
  ``<timestamp>`` always stay (basic status is what being allowed means); inside a
  kept person or device, ``dm:timestamp`` stays, and a device keeps its
  ``dm:deviceID`` (it names the device; ``provide-deviceID`` governs the
  ``dm:deviceID`` of tuples).
* Every other child of a kept tuple, person or device, and every child of a
  tuple's ``<status>`` other than ``<basic>``, is a presence attribute: the RPID
  (RFC 4480) ``activities``, ``class``, ``mood``, ``place-is``, ``place-type``,
  ``privacy``, ``relationship``, ``sphere``, ``status-icon`` and ``time-offset``
  elements and ``dm:deviceID`` need their boolean ``provide-<name>``; notes
  (``<note>``, ``dm:note``) need ``provide-note``; ``rpid:user-input`` follows
  ``provide-user-input``: ``bare`` keeps the element without its
  ``idle-threshold`` and ``last-input`` attributes, ``thresholds`` keeps
  ``idle-threshold`` only, ``full`` keeps both. Anything else (``rpid:
  service-class``, CIPID, ``caps:servcaps``, ``im:im``, vendor elements) needs a
  ``provide-unknown-attribute`` naming its namespace and local name.
  ``provide-all-attributes`` grants every attribute (user-input in full).
* A kept attribute is kept whole, with its own children and attributes.

So a watcher whose rules say ``allow`` but grant nothing gets a ``<presence>``
element with no tuples, persons, devices or notes: RFC 5025 provides nothing
that is not granted (section 3.3). The ``entity`` and the root's namespace
declarations stay.

``default="kamailio"``: when no matching rule carried any transformation
(``Transformations.declared`` is false), the document passes through unchanged,
as Kamailio's presence_xml does (it filters only the element kinds a rule's
transformations name). With at least one transformation, RFC 5025 filtering
applies in full: this module does not copy Kamailio's partial filtering.

``polite_block_document`` is what a polite-blocked watcher sees (RFC 5025 section
3.2.1): one service, basic status closed, no contact, persons or devices.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from lxml import etree

from presence.pidf.document import MAX_DOCUMENT_BYTES, PIDF_NS, parse_pidf
from presence.rules.policy import (
    ATTRIBUTE_NAMES,
    ComponentGrant,
    Transformations,
    UserInputLevel,
)

DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"
RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"

_Element = etree._Element
_TUPLE = f"{{{PIDF_NS}}}tuple"
_STATUS = f"{{{PIDF_NS}}}status"
_BASIC = f"{{{PIDF_NS}}}basic"
_CONTACT = f"{{{PIDF_NS}}}contact"
_PIDF_NOTE = f"{{{PIDF_NS}}}note"
_PERSON = f"{{{DM_NS}}}person"
_DEVICE = f"{{{DM_NS}}}device"
_DEVICE_ID = f"{{{DM_NS}}}deviceID"
_DM_NOTE = f"{{{DM_NS}}}note"
_CLASS = f"{{{RPID_NS}}}class"
_USER_INPUT = f"{{{RPID_NS}}}user-input"
# Children of a kept tuple, person or device that are not presence attributes.
_ALWAYS_KEPT = frozenset({_CONTACT, f"{{{PIDF_NS}}}timestamp", f"{{{DM_NS}}}timestamp"})
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

Default = Literal["rfc5025", "kamailio"]


def filter_document(
    pidf: bytes,
    transformations: Transformations,
    *,
    default: Default = "rfc5025",
    max_bytes: int = MAX_DOCUMENT_BYTES,
) -> bytes:
    """The part of ``pidf`` the watcher may see; raises PidfError if it does not parse
    (or is larger than ``max_bytes``: the aggregated document's limit)."""
    if default not in ("rfc5025", "kamailio"):
        raise ValueError(f"unknown default {default!r}")
    root = parse_pidf(pidf, max_bytes=max_bytes)
    if default == "kamailio" and not transformations.declared:
        return pidf
    for child in list(root):
        if not _keep_top_level(child, transformations):
            root.remove(child)
    return _DECLARATION + etree.tostring(root, encoding="UTF-8")


def polite_block_document(entity: str) -> bytes:
    """A document that says only "closed": what a polite-blocked watcher gets."""
    root = etree.Element(f"{{{PIDF_NS}}}presence", nsmap={None: PIDF_NS})
    root.set("entity", entity)
    tuple_ = etree.SubElement(root, _TUPLE)
    # An id that differs per presentity but says nothing: a fixed one would mark
    # every polite-blocked document as such.
    tuple_.set("id", "t" + hashlib.sha256(entity.encode()).hexdigest()[:12])
    etree.SubElement(etree.SubElement(tuple_, _STATUS), _BASIC).text = "closed"
    root.text, tuple_.tail = "\n", "\n"
    return _DECLARATION + etree.tostring(root, encoding="UTF-8")


def _keep_top_level(element: _Element, transformations: Transformations) -> bool:
    tag = element.tag
    if tag == _TUPLE:
        grant, kind = transformations.services, "tuple"
    elif tag == _PERSON:
        grant, kind = transformations.persons, "person"
    elif tag == _DEVICE:
        grant, kind = transformations.devices, "device"
    elif tag == _PIDF_NOTE:
        return transformations.grants_attribute("note")
    else:
        return _keep_attribute(element, transformations)
    if not _grants_component(grant, element, kind):
        return False
    for child in list(element):
        if not _keep_component_child(child, kind, transformations):
            element.remove(child)
    return True


def _grants_component(grant: ComponentGrant, element: _Element, kind: str) -> bool:
    if grant.all:
        return True
    if element.get("id") in grant.occurrence_ids:
        return True
    classes = {(c.text or "").strip() for c in element.iterchildren(_CLASS)}
    if classes & grant.classes:
        return True
    if kind == "device":
        device_ids = {(d.text or "").strip() for d in element.iterchildren(_DEVICE_ID)}
        return bool(device_ids & grant.device_ids)
    if kind == "tuple":
        contact = _normal_uri(element.findtext(_CONTACT) or "")
        if contact and contact in {_normal_uri(uri) for uri in grant.service_uris}:
            return True
        scheme, colon, _ = contact.partition(":")
        return bool(colon) and scheme in grant.service_uri_schemes
    return False


def _keep_component_child(child: _Element, kind: str, transformations: Transformations) -> bool:
    tag = child.tag
    if tag in _ALWAYS_KEPT or (tag == _DEVICE_ID and kind == "device"):
        return True
    if tag == _STATUS and kind == "tuple":
        for status_child in list(child):
            if status_child.tag != _BASIC and not _keep_attribute(status_child, transformations):
                child.remove(status_child)
        return True
    return _keep_attribute(child, transformations)


def _keep_attribute(element: _Element, transformations: Transformations) -> bool:
    """Whether a presence attribute is granted; trims user-input to its level."""
    tag = element.tag
    if not isinstance(tag, str):
        return False  # not an element (the parser drops comments and PIs already)
    qname = etree.QName(element)
    namespace, name = qname.namespace or "", qname.localname
    if tag in (_PIDF_NOTE, _DM_NOTE):
        return transformations.grants_attribute("note")
    if tag == _DEVICE_ID:
        return transformations.grants_attribute("deviceID")
    if tag == _USER_INPUT:
        level = transformations.user_input_level()
        if level < UserInputLevel.THRESHOLDS:
            element.attrib.pop("idle-threshold", None)
        if level < UserInputLevel.FULL:
            element.attrib.pop("last-input", None)
        return level > UserInputLevel.FALSE
    if namespace == RPID_NS and name in ATTRIBUTE_NAMES:
        return transformations.grants_attribute(name)
    return transformations.grants_unknown(namespace, name)


def _normal_uri(uri: str) -> str:
    scheme, colon, rest = uri.strip().partition(":")
    return f"{scheme.lower()}:{rest}" if colon else uri.strip()
