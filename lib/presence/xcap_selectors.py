"""XCAP node selectors (RFC 4825 §6.3) on one stored document, pure.

The subset served is what XCAP clients of pres-rules use: element steps with an
optional namespace prefix (or `*`), each with at most a position (`[2]`) and
attribute equality tests (`[@id="r1"]`), then optionally a final attribute step
(`@id`, for GET). Unprefixed names are in the application's default namespace
(common-policy for pres-rules, RFC 5025 §9.4); other prefixes are bound by the
query string's `xmlns(p=urn:...)` expressions (§6.4).

    node = parse_selector("cr:rule[@id=\"r1\"]/cr:actions", "xmlns(cr=urn:...)", default_ns)
    element = select(document_root, node)

Changing a document through a selector (put_element, delete_node) returns the
new document; the caller validates it as a whole, as §8.2.5 requires, and refuses
with 409 when it is no longer a valid ruleset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from lxml import etree

from presence.safexml import XmlRefused, parse_untrusted

XCAP_EL = "application/xcap-el+xml"
XCAP_ATT = "application/xcap-att+xml"
MAX_ELEMENT_BYTES = 256 * 1024

_NAME = r"[A-Za-z_][\w.-]*"
# prefix:name or name or *, then predicates; a predicate is [n] or [@attr="value"].
_STEP = re.compile(
    rf"^(?:(?P<prefix>{_NAME}):)?(?P<name>{_NAME}|\*)(?P<predicates>(?:\[[^\]]*\])*)$"
)
_PREDICATE = re.compile(
    r"\[(?:(?P<position>\d+)"
    r"|@(?P<attribute>[A-Za-z_][\w.:-]*)=(?P<quote>[\"'])(?P<value>.*?)(?P=quote))\]"
)
_XMLNS = re.compile(r"xmlns\((?P<prefix>[A-Za-z_][\w.-]*)?=(?P<uri>[^)]*)\)")


class SelectorError(ValueError):
    """The selector is not one this server understands (404 for XCAP, §8.1.4)."""


@dataclass(frozen=True)
class Step:
    namespace: str | None  # None: any namespace (`*`)
    name: str  # "*" for any element
    position: int | None
    attributes: tuple[tuple[str, str], ...]

    def matches(self, element: etree._Element) -> bool:
        if not isinstance(element.tag, str):
            return False
        qname = etree.QName(element)
        if self.name != "*" and (qname.localname, qname.namespace) != (self.name, self.namespace):
            return False
        return all(element.get(name) == value for name, value in self.attributes)

    def tag(self) -> str:
        return f"{{{self.namespace}}}{self.name}" if self.namespace else self.name


@dataclass(frozen=True)
class NodeSelector:
    steps: tuple[Step, ...]  # from the root element down
    attribute: str | None  # a final @name step selects that attribute


def parse_namespaces(query: str) -> dict[str, str]:
    """The prefix bindings of an XCAP query string: `xmlns(p=urn:x)xmlns(q=urn:y)`."""
    bindings: dict[str, str] = {}
    for match in _XMLNS.finditer(unquote(query)):
        bindings[match["prefix"] or ""] = match["uri"]
    return bindings


def parse_selector(path: str, query: str, default_namespace: str) -> NodeSelector:
    """The node selector part of an XCAP URI (after "~~/"), percent-decoded here."""
    namespaces = parse_namespaces(query)
    parts = _split(unquote(path).strip("/"))
    if not parts:
        raise SelectorError("empty node selector")
    attribute = None
    if parts[-1].startswith("@"):
        attribute = parts.pop()[1:]
        if not attribute or not parts:
            raise SelectorError("attribute selector without an element")
    steps = []
    for part in parts:
        match = _STEP.match(part)
        if match is None:
            raise SelectorError(f"unsupported step {part!r}")
        prefix = match["prefix"]
        if prefix is None:
            namespace: str | None = None if match["name"] == "*" else default_namespace
        elif prefix in namespaces:
            namespace = namespaces[prefix]
        else:
            raise SelectorError(f"unbound prefix {prefix!r}")
        position = None
        attributes = []
        predicates = match["predicates"]
        consumed = "".join(m.group(0) for m in _PREDICATE.finditer(predicates))
        if consumed != predicates:
            raise SelectorError(f"unsupported predicate in {part!r}")
        for predicate in _PREDICATE.finditer(predicates):
            if predicate["position"] is not None:
                if position is not None or int(predicate["position"]) < 1:
                    raise SelectorError(f"bad position in {part!r}")
                position = int(predicate["position"])
            else:
                attributes.append((predicate["attribute"], predicate["value"]))
        steps.append(Step(namespace, match["name"], position, tuple(attributes)))
    return NodeSelector(tuple(steps), attribute)


def _split(path: str) -> list[str]:
    """Split at slashes outside quoted predicate values (a rule id may hold '/')."""
    parts, current, quote = [], "", ""
    for char in path:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "/":
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return [part for part in parts if part] if path else []


def _select_in(parent: etree._Element, step: Step) -> list[etree._Element]:
    """The children of parent that a step selects: the position counts among the
    children that match the name test (RFC 4825 §6.3, like XPath)."""
    named = [child for child in parent if isinstance(child.tag, str)]
    if step.name != "*":
        named = [c for c in named if etree.QName(c).localname == step.name]
        named = [c for c in named if etree.QName(c).namespace == step.namespace]
    if step.position is not None:
        named = named[step.position - 1 : step.position]
    return [c for c in named if all(c.get(n) == v for n, v in step.attributes)]


def select(root: etree._Element, selector: NodeSelector) -> etree._Element | None:
    """The one element the selector's element steps name, or None when they name none
    or several (§6.3: a selector must match exactly one)."""
    first, rest = selector.steps[0], selector.steps[1:]
    if not first.matches(root) or first.position not in (None, 1):
        return None
    current = root
    for step in rest:
        found = _select_in(current, step)
        if len(found) != 1:
            return None
        current = found[0]
    return current


class XcapConflict(ValueError):
    """A change the document cannot take; the tag is the RFC 4825 §11.2 error element
    of the 409 (not-xml-frag, no-parent, cannot-insert)."""

    def __init__(self, tag: str) -> None:
        super().__init__(tag)
        self.tag = tag


def _parse(document: bytes) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.fromstring(document, parser)


def _serialize(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def get_node(document: bytes, selector: NodeSelector) -> tuple[str, bytes] | None:
    """(media type, body) of the selected element or attribute; None when it selects
    nothing (404)."""
    element = select(_parse(document), selector)
    if element is None:
        return None
    if selector.attribute is not None:
        value = element.get(selector.attribute)
        return None if value is None else (XCAP_ATT, value.encode())
    element.tail = None
    return XCAP_EL, etree.tostring(element, encoding="UTF-8", xml_declaration=False)


def put_element(document: bytes, selector: NodeSelector, body: bytes) -> tuple[bytes, bool]:
    """The document with the selected element replaced by `body`, or `body` added
    under the parent the selector names; and whether it was created."""
    if selector.attribute is not None:
        raise XcapConflict("cannot-insert")  # attributes are changed with their element
    try:
        new = parse_untrusted(body, what="element", max_bytes=MAX_ELEMENT_BYTES, max_depth=64)
    except XmlRefused:
        raise XcapConflict("not-xml-frag") from None
    if not selector.steps[-1].matches(new):
        raise XcapConflict("cannot-insert")  # the body is not the element selected
    root = _parse(document)
    existing = select(root, selector)
    if existing is not None:
        if existing is root:
            return _serialize(new), False
        new.tail = existing.tail
        existing.getparent().replace(existing, new)
        return _serialize(root), False
    parent = _parent_of_new(root, selector)
    if parent is None:
        raise XcapConflict("no-parent")
    parent.append(new)
    if select(root, selector) is not new:  # GET(PUT(x)) == x must hold (§8.2.3)
        raise XcapConflict("cannot-insert")
    return _serialize(root), True


def delete_node(document: bytes, selector: NodeSelector) -> bytes | None:
    """The document without the selected element or attribute; None when the
    selector selects nothing (404). The root cannot go this way (§8.2.4)."""
    root = _parse(document)
    element = select(root, selector)
    if element is None:
        return None
    if selector.attribute is not None:
        if selector.attribute not in element.attrib:
            return None
        del element.attrib[selector.attribute]
    elif element is root:
        raise XcapConflict("cannot-delete")
    else:
        element.getparent().remove(element)
    return _serialize(root)


def _parent_of_new(root: etree._Element, selector: NodeSelector) -> etree._Element | None:
    """Where a PUT that selects nothing may create the element: the parent its steps
    name, when the last step names an element without a position (§8.2.3)."""
    if len(selector.steps) < 2 or selector.steps[-1].position is not None:
        return None
    if selector.steps[-1].name == "*":
        return None
    return select(root, NodeSelector(selector.steps[:-1], None))
