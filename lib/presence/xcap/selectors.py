"""XCAP node selectors (RFC 4825 §6.3) on one stored document, pure.

Element steps with an optional namespace prefix (or `*`), each with at most a
position (`[2]`) and attribute equality tests (`[@id="r1"]`), then optionally a
terminal selector: an attribute (`@id`) or the namespace bindings in scope
(`namespace::*`, GET only). Unprefixed names are in the application's default
namespace (common-policy for pres-rules, RFC 5025 §9.4); other prefixes are bound
by the query string's `xmlns(p=urn:...)` expressions (§6.4).

    node = parse_selector("cr:rule[@id=\"r1\"]/cr:actions", "xmlns(cr=urn:...)", default_ns)
    element = select(document_root, node)

What a GET returns is what a PUT takes back: an element comes out as it is written
in the document, with its own namespace declarations and none of its ancestors'
(§8.3), and an element body is read in the namespace context of the document where
it goes (§8.2.3), so its prefixes may be the document's. An attribute goes out
and comes back as an XML AttValue, with its quotes (§7.7, §7.9): `"sip:a@b"`.

Changing a document through a selector (put_element, put_attribute, delete_node)
returns the new document; the caller validates it as a whole, as §8.2.5 requires,
and refuses with 409 when it is no longer valid.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from urllib.parse import unquote
from xml.sax.saxutils import escape

from lxml import etree

from presence.safexml import XmlRefused, parse_untrusted
from presence.xcap.errors import XcapConflict

XCAP_EL = "application/xcap-el+xml"
XCAP_ATT = "application/xcap-att+xml"
XCAP_NS = "application/xcap-ns+xml"
MAX_ELEMENT_BYTES = 256 * 1024
NAMESPACE_SELECTOR = "namespace::*"

_NAME = r"[A-Za-z_][\w.-]*"
# prefix:name or name or *, then predicates; a predicate is [n] or [@attr="value"].
_STEP = re.compile(
    rf"^(?:(?P<prefix>{_NAME}):)?(?P<name>{_NAME}|\*)(?P<predicates>(?:\[[^\]]*\])*)$"
)
_PREDICATE = re.compile(
    r"\[(?:(?P<position>\d+)"
    r"|@(?P<attribute>[A-Za-z_][\w.:-]*)=(?P<quote>[\"'])(?P<value>.*?)(?P=quote))\]"
)
_ATTRIBUTE = re.compile(rf"^(?:(?P<prefix>{_NAME}):)?(?P<name>{_NAME})$")
_XMLNS = re.compile(r"xmlns\((?P<prefix>[A-Za-z_][\w.-]*)?=(?P<uri>[^)]*)\)")
_XML_DECLARATION = re.compile(rb"^\s*<\?xml\s[^>]*\?>")
# XML 1.0's AttValue: '"' ([^<&"] | Reference)* '"' | "'" ([^<&'] | Reference)* "'".
_REFERENCE = r"&(?:[A-Za-z_:][\w.:-]*|#[0-9]+|#x[0-9A-Fa-f]+);"
_ATT_VALUE = re.compile(rf"\"(?:[^<&\"]|{_REFERENCE})*\"|'(?:[^<&']|{_REFERENCE})*'")


class SelectorError(ValueError):
    """The selector is not one this server understands (404 for XCAP, §8.1.4)."""


class UnboundPrefix(SelectorError):
    """The selector is grammatical, but a qualified name in it uses a prefix that no
    xmlns() expression of the query binds (400 for XCAP, RFC 4825 §8)."""


@dataclass(frozen=True)
class Step:
    namespace: str | None  # None: any namespace (`*`)
    name: str  # "*" for any element
    position: int | None  # 0 is grammatical; it selects nothing and creates nothing
    attributes: tuple[tuple[str, str], ...]  # (Clark name, value)
    source: str = ""  # the step as the URI wrote it (for an <ancestor> URI)

    def matches(self, element: etree._Element) -> bool:
        """Whether the element passes the name test and the attribute tests."""
        if not isinstance(element.tag, str):
            return False
        qname = etree.QName(element)
        if self.name != "*" and (qname.localname, qname.namespace) != (self.name, self.namespace):
            return False
        return all(element.get(name) == value for name, value in self.attributes)

    def named(self, element: etree._Element) -> bool:
        """Whether the element passes the name test alone (what a position counts)."""
        if not isinstance(element.tag, str):
            return False
        if self.name == "*":
            return True
        qname = etree.QName(element)
        return (qname.localname, qname.namespace) == (self.name, self.namespace)


@dataclass(frozen=True)
class NodeSelector:
    steps: tuple[Step, ...]  # from the root element down
    attribute: str | None  # a final @name step selects that attribute (Clark name)
    namespaces: bool = False  # a final namespace::* step (GET only, §6.3)


def parse_namespaces(query: str) -> dict[str, str]:
    """The prefix bindings of an XCAP query string: `xmlns(p=urn:x)xmlns(q=urn:y)`."""
    bindings: dict[str, str] = {}
    for match in _XMLNS.finditer(unquote(query)):
        bindings[match["prefix"] or ""] = match["uri"]
    return bindings


def parse_selector(path: str, query: str, default_namespace: str) -> NodeSelector:
    """The node selector part of an XCAP URI (after "~~/"), percent-decoded here.

    SelectorError when it is outside the grammar this server understands;
    UnboundPrefix when it is inside it but uses a prefix the query does not bind
    (the grammar is checked to the end first, so a selector that is both is the
    former)."""
    namespaces = _Bindings(parse_namespaces(query))
    parts = _split(unquote(path).strip("/"))
    if not parts:
        raise SelectorError("empty node selector")
    attribute = None
    namespace_selector = False
    if parts[-1] == NAMESPACE_SELECTOR:
        parts.pop()
        namespace_selector = True
    elif parts[-1].startswith("@"):
        attribute = _attribute_name(parts.pop()[1:], namespaces)
    if not parts:
        raise SelectorError("a terminal selector without an element")
    steps = []
    for part in parts:
        match = _STEP.match(part)
        if match is None:
            raise SelectorError(f"unsupported step {part!r}")
        prefix = match["prefix"]
        if prefix is None:
            namespace: str | None = None if match["name"] == "*" else default_namespace
        else:
            namespace = namespaces.resolve(prefix)
        position = None
        attributes = []
        predicates = match["predicates"]
        consumed = "".join(m.group(0) for m in _PREDICATE.finditer(predicates))
        if consumed != predicates:
            raise SelectorError(f"unsupported predicate in {part!r}")
        for predicate in _PREDICATE.finditer(predicates):
            if predicate["position"] is not None:
                if position is not None:
                    raise SelectorError(f"two positions in {part!r}")
                position = int(predicate["position"])
            else:
                name = _attribute_name(predicate["attribute"], namespaces)
                attributes.append((name, predicate["value"]))
        steps.append(Step(namespace, match["name"], position, tuple(attributes), part))
    if namespaces.unbound:
        raise UnboundPrefix(f"prefix {namespaces.unbound[0]!r} is bound by no xmlns() in the query")
    return NodeSelector(tuple(steps), attribute, namespace_selector)


class _Bindings:
    """The query's prefix bindings, noting the prefixes asked for that it lacks."""

    def __init__(self, bindings: dict[str, str]) -> None:
        self.bindings = bindings
        self.unbound: list[str] = []

    def resolve(self, prefix: str) -> str:
        if prefix in self.bindings:
            return self.bindings[prefix]
        self.unbound.append(prefix)
        return ""


def _attribute_name(name: str, namespaces: _Bindings) -> str:
    """The Clark name of an attribute test or step: unprefixed attributes are in no
    namespace (XML Namespaces §6.2), prefixed ones in the query's binding."""
    match = _ATTRIBUTE.match(name)
    if match is None:
        raise SelectorError(f"bad attribute name {name!r}")
    if match["prefix"] is None:
        return match["name"]
    return f"{{{namespaces.resolve(match['prefix'])}}}{match['name']}"


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
    children that pass the name test (RFC 4825 §6.3, like XPath)."""
    named = [child for child in parent if step.named(child)]
    if step.position is not None:
        named = named[step.position - 1 : step.position] if step.position >= 1 else []
    return [c for c in named if all(c.get(n) == v for n, v in step.attributes)]


def select(root: etree._Element, selector: NodeSelector) -> etree._Element | None:
    """The one element the selector's element steps name, or None when they name none
    or several (§6.3: a selector must match exactly one)."""
    return _walk(root, selector.steps)


def _walk(root: etree._Element, steps: tuple[Step, ...]) -> etree._Element | None:
    first, rest = steps[0], steps[1:]
    if not first.matches(root) or first.position not in (None, 1):
        return None
    current = root
    for step in rest:
        found = _select_in(current, step)
        if len(found) != 1:
            return None
        current = found[0]
    return current


def closest_ancestor(document: bytes, selector: NodeSelector) -> str:
    """The node selector (steps as the URI wrote them) of the deepest element the
    selector's leading steps select; "" when not even the root matches. Names the
    <ancestor> of a no-parent error (§11.2)."""
    root = _parse(document)
    for length in range(len(selector.steps), 0, -1):
        if _walk(root, selector.steps[:length]) is not None:
            return "/".join(step.source for step in selector.steps[:length])
    return ""


def _parse(document: bytes) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.fromstring(document, parser)


def _serialize(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _as_written(element: etree._Element) -> bytes:
    """The element as it stands in its document: with the namespace declarations it
    makes itself and none of those it inherits (§8.3). lxml writes a lone element with
    every binding in scope, so the whole document is written between two markers and
    the element cut out of it."""
    element.tail = None
    marker = f"xcap-cut-{secrets.token_hex(8)}"
    element.addprevious(etree.ProcessingInstruction(marker, "cut"))
    element.addnext(etree.ProcessingInstruction(marker, "cut"))
    written = etree.tostring(element.getroottree(), encoding="UTF-8")
    cut = f"<?{marker} cut?>".encode()
    return written.split(cut)[1]


def get_node(document: bytes, selector: NodeSelector) -> tuple[str, bytes] | None:
    """(media type, body) of the selected element, attribute or namespace bindings;
    None when it selects nothing (404)."""
    element = select(_parse(document), selector)
    if element is None:
        return None
    if selector.attribute is not None:
        value = element.get(selector.attribute)
        return None if value is None else (XCAP_ATT, att_value(value).encode())
    if selector.namespaces:
        # An element of the selected one's name declaring every binding in scope (§8.3).
        bindings = etree.Element(element.tag, nsmap=element.nsmap)
        return XCAP_NS, etree.tostring(bindings, encoding="UTF-8", xml_declaration=False)
    return XCAP_EL, _as_written(element)


def _escape_attribute(value: str) -> str:
    """The value escaped for double quotes: '&', '<' and '"' as XML requires, and tab,
    newline and carriage return as references, which attribute-value normalisation
    would otherwise turn into spaces (XML 1.0 §3.3.3)."""
    return escape(value, {'"': "&quot;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"})


def att_value(value: str) -> str:
    """An attribute's value as an application/xcap-att+xml body: an XML AttValue, with
    its quotes (RFC 4825 §7.9 and §13: a GET of @uri answers "sip:nancy@example.com")."""
    return f'"{_escape_attribute(value)}"'


def parse_att_value(body: bytes) -> str:
    """The value an application/xcap-att+xml body stands for: the body is an XML
    AttValue (`"..."` or `'...'`, no '<', '&' only in a reference, the quote only as a
    reference) with nothing around it (RFC 4825 §7.7). 409 not-xml-att-value
    otherwise (§11.1), also when it is not UTF-8 or refers to an entity XML does not
    predefine."""
    if len(body) > MAX_ELEMENT_BYTES:
        raise XcapConflict("not-xml-att-value", "the attribute value is too large")
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise XcapConflict("not-xml-att-value", "not UTF-8") from None
    if _ATT_VALUE.fullmatch(text) is None:
        raise XcapConflict(
            "not-xml-att-value",
            "the body must be an XML AttValue: the value in double or single quotes,"
            " without '<', '&' only in a reference",
        )
    # The parser unescapes it and checks what the pattern leaves open: references to
    # undefined entities or to characters XML does not allow.
    try:
        holder = parse_untrusted(
            f"<value v={text}/>".encode(), what="value", max_bytes=len(body) + 16, max_depth=1
        )
    except XmlRefused:
        raise XcapConflict("not-xml-att-value", "not an XML attribute value") from None
    return holder.get("v") or ""


def put_element(document: bytes, selector: NodeSelector, body: bytes) -> tuple[bytes, bool]:
    """The document with the selected element replaced by `body`, or `body` created
    where the selector names it (§8.2.3); and whether it was created."""
    if selector.attribute is not None or selector.namespaces:
        raise XcapConflict("cannot-insert", "an element body for a terminal selector")
    root = _parse(document)
    existing = select(root, selector)
    if existing is not None:
        parent = existing.getparent()
        new = _element_in_context(body, parent)
        if not selector.steps[-1].matches(new):
            raise XcapConflict("cannot-insert", "the body is not the element the URI selects")
        if parent is None:
            return _serialize(new), False
        new.tail = existing.tail
        parent.replace(existing, new)
        _must_select(root, selector, new)
        return _serialize(root), False
    parent = _walk(root, selector.steps[:-1]) if len(selector.steps) > 1 else None
    if parent is None:
        raise XcapConflict("no-parent", "the parent of the new element does not exist")
    new = _element_in_context(body, parent)
    last = selector.steps[-1]
    if not last.matches(new):
        raise XcapConflict("cannot-insert", "the body is not the element the URI selects")
    _insert(parent, last, new)
    _must_select(root, selector, new)
    return _serialize(root), True


def _must_select(root: etree._Element, selector: NodeSelector, new: etree._Element) -> None:
    """GET of what was PUT must give it back (§8.2.3): the URI selects the new element."""
    if select(root, selector) is not new:
        raise XcapConflict("cannot-insert", "the URI would not select the element afterwards")


def _insert(parent: etree._Element, step: Step, new: etree._Element) -> None:
    """Put a new element among parent's children where the last step says: with a
    position, so that it is the n-th of the children passing the name test (`*[n]`
    counts all elements); without one, after the last sibling of its own expanded
    name, or after all children when it has none (§8.2.3's examples)."""
    if step.position is not None:
        named = [child for child in parent if step.named(child)]
        if not 1 <= step.position <= len(named) + 1:
            raise XcapConflict("cannot-insert", f"position {step.position} cannot be created")
        if step.position <= len(named):
            named[step.position - 1].addprevious(new)
            new.tail = new.getprevious().tail if new.getprevious() is not None else parent.text
            return
        anchor = named[-1] if named else None
    else:
        same = [child for child in parent if child.tag == new.tag]
        anchor = same[-1] if same else None
    if anchor is None:
        elements = [child for child in parent if isinstance(child.tag, str)]
        anchor = elements[-1] if elements else None
    if anchor is None:
        parent.append(new)
        return
    new.tail = anchor.tail
    if anchor.getnext() is None:  # the last child's tail closes the parent: indent as before it
        before = anchor.getprevious()
        anchor.tail = parent.text if before is None else before.tail
    anchor.addnext(new)


def _element_in_context(body: bytes, parent: etree._Element | None) -> etree._Element:
    """The one element of an application/xcap-el+xml body, its names read with the
    namespace bindings in scope at `parent` (§8.2.3: what a GET returns without its
    ancestors' declarations must be PUT back as it is). 409 not-xml-frag otherwise."""
    if len(body) > MAX_ELEMENT_BYTES:
        raise XcapConflict("not-xml-frag", "the element is too large")
    body = _XML_DECLARATION.sub(b"", body, count=1)
    bindings = {} if parent is None else parent.nsmap
    declarations = "".join(
        f' xmlns{":" + prefix if prefix else ""}="{_escape_attribute(uri)}"'
        for prefix, uri in bindings.items()
    )
    wrapped = f"<xcap-context{declarations}>".encode() + body + b"</xcap-context>"
    try:
        holder = parse_untrusted(wrapped, what="element", max_bytes=len(wrapped), max_depth=65)
    except XmlRefused as refused:
        raise XcapConflict("not-xml-frag", str(refused)) from None
    elements = [child for child in holder if isinstance(child.tag, str)]
    stray = (holder.text or "").strip() or any((c.tail or "").strip() for c in holder)
    if len(elements) != 1 or stray or len(holder) != 1:
        raise XcapConflict("not-xml-frag", "the body must be exactly one element")
    return elements[0]


def put_attribute(document: bytes, selector: NodeSelector, body: bytes) -> tuple[bytes, bool]:
    """The document with the selected attribute set to the value `body` stands for, an
    AttValue with its quotes (§7.7, application/xcap-att+xml); and whether it was
    created."""
    if selector.attribute is None:
        raise XcapConflict("cannot-insert", "not an attribute selector")
    value = parse_att_value(body)
    root = _parse(document)
    element = select(root, selector)
    if element is None:
        raise XcapConflict("no-parent", "the element of the attribute does not exist")
    created = element.get(selector.attribute) is None
    element.set(selector.attribute, value)
    if select(root, selector) is not element:  # e.g. it changed a predicate's attribute
        raise XcapConflict("cannot-insert", "the URI would not select the attribute afterwards")
    return _serialize(root), created


def delete_node(document: bytes, selector: NodeSelector) -> bytes | None:
    """The document without the selected element or attribute; None when the
    selector selects nothing (404). The root cannot go this way, nor an element whose
    URI would then select another one (§8.4: 409 cannot-delete)."""
    root = _parse(document)
    element = select(root, selector)
    if element is None:
        return None
    if selector.namespaces:
        raise XcapConflict("cannot-delete", "namespace bindings cannot be deleted")
    if selector.attribute is not None:
        if selector.attribute not in element.attrib:
            return None
        del element.attrib[selector.attribute]
        return _serialize(root)
    parent = element.getparent()
    if parent is None:
        raise XcapConflict("cannot-delete", "the root element goes with its document")
    previous = element.getprevious()
    if element.tail is not None:  # keep the text that followed it (indentation)
        if previous is not None:
            previous.tail = element.tail
        else:
            parent.text = element.tail
    parent.remove(element)
    if select(root, selector) is not None:
        raise XcapConflict("cannot-delete", "the URI would select another element afterwards")
    return _serialize(root)
