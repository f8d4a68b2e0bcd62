"""Resource lists (RFC 4826 §3): a user's buddy lists as XCAP keeps them, pure.

    <resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">
      <list name="friends">
        <display-name>Friends</display-name>
        <entry uri="sip:bob@example.com"><display-name>Bob</display-name></entry>
        <entry-ref ref="resource-lists/users/sip:alice@example.com/index/~~/..."/>
        <external anchor="http://xcap.example.com/resource-lists/users/.../~~/..."/>
        <list name="close friends">...</list>
      </list>
    </resource-lists>

`check_resource_lists` holds a document to the RFC's schema (§3.4.1: element
order, required attributes, one display-name, elements of other namespaces only
after this one's) and to its uniqueness constraints (§3.4.3): within one parent no
two <list>s share a name, no two <entry>s a uri, no two <entry-ref>s a ref, no two
<external>s an anchor. A refusal is the XCAP condition (RFC 4825 §11.2) a 409
carries; a valid document comes back as values (ResourceList, Entry), for what
reads the lists.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from presence.xcap.errors import Exists, XcapConflict, alternative

RESOURCE_LISTS_NS = "urn:ietf:params:xml:ns:resource-lists"
RESOURCE_LISTS = "application/resource-lists+xml"
_RL = f"{{{RESOURCE_LISTS_NS}}}"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
# The member kinds of a list and the attribute that names each one uniquely.
_KEYS = {"list": "name", "entry": "uri", "entry-ref": "ref", "external": "anchor"}
_REQUIRED = {"entry": "uri", "entry-ref": "ref"}


@dataclass(frozen=True)
class Entry:
    kind: str  # entry, entry-ref or external
    target: str  # its uri, ref or anchor
    display_name: str | None


@dataclass(frozen=True)
class ResourceList:
    name: str | None
    display_name: str | None
    members: tuple[Entry | ResourceList, ...]


def _invalid(phrase: str) -> XcapConflict:
    return XcapConflict("schema-validation-error", phrase)


def _local(element: etree._Element) -> str | None:
    """The local name of an element of the resource-lists namespace, else None."""
    if not isinstance(element.tag, str) or not element.tag.startswith(_RL):
        return None
    return element.tag[len(_RL) :]


def _own_attributes(element: etree._Element, allowed: set[str]) -> None:
    """Unqualified attributes are the schema's; others must be of another namespace
    (anyAttribute namespace="##other")."""
    for name in element.attrib:
        if name.startswith("{"):
            if name.startswith(_RL):
                raise _invalid(f"attribute {name} on <{_local(element)}>")
        elif name not in allowed:
            raise _invalid(f"unknown attribute {name!r} on <{_local(element)}>")


def _display_name(element: etree._Element) -> str | None:
    if len(element):
        raise _invalid("<display-name> holds text only")
    for name in element.attrib:
        if name != _XML_LANG:
            raise _invalid(f"unknown attribute {name!r} on <display-name>")
    return element.text or ""


def _uri(value: str, what: str) -> str:
    """xs:anyURI, as far as it matters here: something, without spaces or controls."""
    if not value or any(c.isspace() or ord(c) < 0x20 for c in value):
        raise _invalid(f"{what} is not a URI")
    return value


def _leaf(element: etree._Element, kind: str) -> Entry:
    """An entry, entry-ref or external: a display-name, then other namespaces' elements."""
    key = _KEYS[kind]
    _own_attributes(element, {key})
    if kind in _REQUIRED and element.get(key) is None:
        raise _invalid(f"<{kind}> without {key}")
    display_name = None
    foreign = False
    for child in element:
        name = _local(child)
        if name == "display-name" and display_name is None and not foreign:
            display_name = _display_name(child)
        elif name is None and isinstance(child.tag, str):
            foreign = True
        else:
            raise _invalid(f"unexpected <{name}> in <{kind}>")
        if (child.tail or "").strip():
            raise _invalid(f"text in <{kind}>")
    target = element.get(key)
    return Entry(kind, "" if target is None else _uri(target, f"{kind} {key}"), display_name)


def _list(element: etree._Element, path: str) -> ResourceList:
    _own_attributes(element, {"name"})
    if (element.text or "").strip():
        raise _invalid("text in <list>")
    display_name = None
    members: list[Entry | ResourceList] = []
    seen: dict[str, set[str]] = {kind: set() for kind in _KEYS}
    foreign = False
    for index, child in enumerate(element):
        name = _local(child)
        if (child.tail or "").strip():
            raise _invalid("text in <list>")
        if name is None:
            if isinstance(child.tag, str):
                foreign = True  # <xs:any namespace="##other"> comes last
            continue
        if foreign:
            raise _invalid(f"<{name}> after an element of another namespace")
        if name == "display-name":
            if index != 0 or display_name is not None:
                raise _invalid("<display-name> must come first, once")
            display_name = _display_name(child)
            continue
        if name not in _KEYS:
            raise _invalid(f"unexpected <{name}> in <list>")
        key = _KEYS[name]
        value = child.get(key)
        if value is not None:
            if value in seen[name]:
                field = f"{path}/{name}/@{key}"
                alt = (alternative(seen[name], value),) if name == "list" else ()
                raise XcapConflict(
                    "uniqueness-failure",
                    f"two <{name}> elements with {key} {value!r} in one list",
                    exists=(Exists(field, alt),),
                )
            seen[name].add(value)
        if name == "list":
            nested = f'{path}/list[@name="{value}"]' if value is not None else f"{path}/list"
            members.append(_list(child, nested))
        else:
            members.append(_leaf(child, name))
    return ResourceList(element.get("name"), display_name, tuple(members))


def check_resource_lists(root: etree._Element) -> tuple[ResourceList, ...]:
    """The lists of a parsed resource-lists document; XcapConflict
    (schema-validation-error or uniqueness-failure) when it is not valid."""
    if root.tag != f"{_RL}resource-lists":
        raise _invalid("the root must be <resource-lists> of RFC 4826")
    if root.attrib:
        raise _invalid("<resource-lists> takes no attributes")
    if (root.text or "").strip():
        raise _invalid("text in <resource-lists>")
    lists: list[ResourceList] = []
    names: set[str] = set()
    for child in root:
        if _local(child) != "list":
            raise _invalid("<resource-lists> holds <list> elements only")
        if (child.tail or "").strip():
            raise _invalid("text in <resource-lists>")
        name = child.get("name")
        if name is not None:
            if name in names:
                raise XcapConflict(
                    "uniqueness-failure",
                    f"two lists named {name!r}",
                    exists=(Exists("resource-lists/list/@name", (alternative(names, name),)),),
                )
            names.add(name)
        path = f'resource-lists/list[@name="{name}"]' if name is not None else "resource-lists/list"
        lists.append(_list(child, path))
    return tuple(lists)
