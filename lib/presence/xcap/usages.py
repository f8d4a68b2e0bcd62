"""The XCAP application usages this server serves (RFC 4825 §5), and its xcap-caps
document (§12), pure.

An application usage says what one kind of document is: its AUID (the first path
segment under the XCAP root), its media type, the namespace unprefixed selector
steps are in, where it is stored (the XCAP table's doc_type, as in Kamailio) and how
a document is checked before it is stored. `check_document` answers with the
document as text, or raises the RFC 4825 §11.2 condition a 409 carries.

    usage = USAGES["resource-lists"]
    text = check_document(usage, body)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lxml import etree

from presence.rules import RulesError, parse_rules
from presence.safexml import XmlRefused, parse_untrusted
from presence.xcap.errors import XCAP_ERROR_NS, Exists, XcapConflict, alternative
from presence.xcap.resource_lists import RESOURCE_LISTS, RESOURCE_LISTS_NS, check_resource_lists

MAX_DOCUMENT_BYTES = 256 * 1024
COMMON_POLICY_NS = "urn:ietf:params:xml:ns:common-policy"
PRES_RULES_NS = "urn:ietf:params:xml:ns:pres-rules"
XCAP_CAPS_NS = "urn:ietf:params:xml:ns:xcap-caps"
AUTH_POLICY = "application/auth-policy+xml"
XCAP_CAPS = "application/xcap-caps+xml"


@dataclass(frozen=True)
class ApplicationUsage:
    auid: str
    media_type: str
    default_namespace: str  # of unprefixed node selector steps (§5.2)
    namespaces: tuple[str, ...]  # those its documents use, listed in xcap-caps
    doc_type: int  # the XCAP table's doc_type (Kamailio's numbering); 0: not stored
    check: Callable[[etree._Element, bytes], None]  # raises XcapConflict
    governs_subscriptions: bool = False  # a change re-judges the user's watchers


def _check_pres_rules(root: etree._Element, document: bytes) -> None:
    """RFC 4745's rule ids are unique in a ruleset (uniqueness-failure with a free
    id to use); everything else is presence.rules' to judge."""
    if root.tag == f"{{{COMMON_POLICY_NS}}}ruleset":
        ids: set[str] = set()
        for rule in root.iterchildren(f"{{{COMMON_POLICY_NS}}}rule"):
            rule_id = rule.get("id")
            if rule_id is None:
                continue
            if rule_id in ids:
                raise XcapConflict(
                    "uniqueness-failure",
                    f"two rules with id {rule_id!r}",
                    exists=(Exists("ruleset/rule/@id", (alternative(ids, rule_id),)),),
                )
            ids.add(rule_id)
    try:
        parse_rules(document)
    except RulesError as error:
        raise XcapConflict("schema-validation-error", str(error)) from None


def _check_resource_lists(root: etree._Element, document: bytes) -> None:
    check_resource_lists(root)


def _read_only(root: etree._Element, document: bytes) -> None:
    raise XcapConflict("constraint-failure", "this document cannot be changed")


PRES_RULES = ApplicationUsage(
    auid="pres-rules",
    media_type=AUTH_POLICY,
    default_namespace=COMMON_POLICY_NS,  # RFC 5025 §9.4
    namespaces=(COMMON_POLICY_NS, PRES_RULES_NS),
    doc_type=2,
    check=_check_pres_rules,
    governs_subscriptions=True,
)
RESOURCE_LISTS_USAGE = ApplicationUsage(
    auid="resource-lists",
    media_type=RESOURCE_LISTS,
    default_namespace=RESOURCE_LISTS_NS,  # RFC 4826 §3.4.2
    namespaces=(RESOURCE_LISTS_NS,),
    doc_type=4,  # Kamailio: PRES_RULES 1<<1, RESOURCE_LISTS 1<<2
    check=_check_resource_lists,
)
XCAP_CAPS_USAGE = ApplicationUsage(
    auid="xcap-caps",
    media_type=XCAP_CAPS,
    default_namespace=XCAP_CAPS_NS,  # RFC 4825 §12.3
    namespaces=(XCAP_CAPS_NS, XCAP_ERROR_NS),
    doc_type=0,
    check=_read_only,
)
# The per-user documents, by AUID.
USER_USAGES = {usage.auid: usage for usage in (PRES_RULES, RESOURCE_LISTS_USAGE)}


def check_document(usage: ApplicationUsage, document: bytes) -> str:
    """The document as text once it is UTF-8, well-formed and valid for its usage
    (RFC 4825 §8.2.1, §8.2.5: 409 not-utf-8, not-well-formed, schema-validation-error,
    uniqueness-failure)."""
    try:
        text = document.decode()
    except UnicodeDecodeError:
        raise XcapConflict("not-utf-8", "the document is not UTF-8") from None
    try:
        root = parse_untrusted(
            document, what="document", max_bytes=MAX_DOCUMENT_BYTES, max_depth=64
        )
    except XmlRefused as error:
        raise XcapConflict("not-well-formed", str(error)) from None
    usage.check(root, document)
    return text


def xcap_caps(usages: tuple[ApplicationUsage, ...]) -> str:
    """The global xcap-caps document (§12): the AUIDs, extensions and namespaces the
    server supports (no extensions)."""
    root = etree.Element(f"{{{XCAP_CAPS_NS}}}xcap-caps", nsmap={None: XCAP_CAPS_NS})
    auids = etree.SubElement(root, f"{{{XCAP_CAPS_NS}}}auids")
    for usage in usages:
        etree.SubElement(auids, f"{{{XCAP_CAPS_NS}}}auid").text = usage.auid
    etree.SubElement(root, f"{{{XCAP_CAPS_NS}}}extensions")
    namespaces = etree.SubElement(root, f"{{{XCAP_CAPS_NS}}}namespaces")
    for namespace in dict.fromkeys(ns for usage in usages for ns in usage.namespaces):
        etree.SubElement(namespaces, f"{{{XCAP_CAPS_NS}}}namespace").text = namespace
    etree.indent(root)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8").decode()


XCAP_CAPS_DOCUMENT = xcap_caps((XCAP_CAPS_USAGE, PRES_RULES, RESOURCE_LISTS_USAGE))
