"""Watcher information (RFC 3857 event package presence.winfo, RFC 3858 format), pure.

A presentity's owner subscribes to presence.winfo of their own address and learns
who watches them: the first NOTIFY of each subscription carries the full list
(state="full"), later ones only the watchers that changed (state="partial"); the
document version counts the NOTIFYs of that one subscription from 0, so a gap
tells the subscriber it missed one (it then refreshes and gets full state again).

A watcher entry's status is that of the watcher's subscription (pending, active,
terminated); its event says how it got there (RFC 3857 §3.4: subscribe, approved,
deactivated, probation, rejected, timeout, giveup, noresource).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lxml import etree

from presence.safexml import XmlRefused, parse_untrusted

WATCHERINFO_NS = "urn:ietf:params:xml:ns:watcherinfo"
CONTENT_TYPE = "application/watcherinfo+xml"
STATUSES = frozenset({"pending", "active", "waiting", "terminated"})
EVENTS = frozenset(
    {"subscribe", "approved", "deactivated", "probation", "rejected", "timeout", "giveup",
     "noresource"}
)  # fmt: skip


@dataclass(frozen=True)
class Watcher:
    id: str  # names the watcher's subscription; stable across the NOTIFYs
    uri: str
    status: str
    event: str
    expiration: int | None = None  # seconds left, of a live subscription


def watcher_event(status: str, reason: str | None, event: str | None) -> str:
    """The RFC 3857 event of a subscription in `status`: a terminated one says why
    (its reason), a live one how it got there (`event`, recorded by the store)."""
    if status == "terminated":
        return reason if reason in EVENTS else "deactivated"
    return event if event in EVENTS else "subscribe"


def watcherinfo_document(
    resource: str, package: str, version: int, state: str, watchers: Iterable[Watcher]
) -> bytes:
    """The application/watcherinfo+xml body of one NOTIFY."""
    if state not in ("full", "partial"):
        raise ValueError(f"state must be full or partial, not {state!r}")
    root = etree.Element(
        f"{{{WATCHERINFO_NS}}}watcherinfo",
        nsmap={None: WATCHERINFO_NS},
        version=str(version),
        state=state,
    )
    watcher_list = etree.SubElement(
        root, f"{{{WATCHERINFO_NS}}}watcher-list", resource=resource, package=package
    )
    for watcher in watchers:
        element = etree.SubElement(
            watcher_list,
            f"{{{WATCHERINFO_NS}}}watcher",
            id=watcher.id,
            status=watcher.status,
            event=watcher.event,
        )
        if watcher.expiration is not None:
            element.set("expiration", str(max(watcher.expiration, 0)))
        element.text = watcher.uri
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def by_priority(watchers: Sequence[Watcher]) -> list[Watcher]:
    """The order in which a bounded list keeps watchers (given oldest first): pending
    ones first (they wait for the owner's decision, what winfo is for), then the
    others, each newest first."""
    newest_first = list(reversed(watchers))
    return [w for w in newest_first if w.status == "pending"] + [
        w for w in newest_first if w.status != "pending"
    ]


def bounded_watcherinfo_document(
    resource: str,
    package: str,
    version: int,
    state: str,
    watchers: Sequence[Watcher],
    max_bytes: int,
) -> tuple[bytes, int]:
    """The document with as many of `watchers` as fit in `max_bytes` (a prefix, so the
    caller orders them by priority), and how many were left out. A full-state list
    cut this way is a bounded full list: the subscriber learns of the others when
    they change (partial NOTIFYs) or when the list gets shorter."""
    document = watcherinfo_document(resource, package, version, state, watchers)
    if len(document) <= max_bytes:
        return document, 0
    fits, too_many = 0, len(watchers)  # the largest count known to fit, the smallest not
    best = watcherinfo_document(resource, package, version, state, [])
    while too_many - fits > 1:
        middle = (fits + too_many) // 2
        candidate = watcherinfo_document(resource, package, version, state, watchers[:middle])
        if len(candidate) <= max_bytes:
            fits, best = middle, candidate
        else:
            too_many = middle
    return best, len(watchers) - fits


@dataclass(frozen=True)
class WatcherInfo:
    version: int
    state: str
    resource: str
    package: str
    watchers: list[Watcher]


def parse_watcherinfo(body: bytes) -> WatcherInfo:
    """A watcherinfo document with one watcher-list (what this server sends); for
    clients and tests. Raises ValueError on anything else."""
    try:
        root = parse_untrusted(body, what="watcherinfo", max_bytes=1 << 20, max_depth=8)
    except XmlRefused as error:
        raise ValueError(str(error)) from None
    if root.tag != f"{{{WATCHERINFO_NS}}}watcherinfo":
        raise ValueError("not a watcherinfo document")
    lists = root.findall(f"{{{WATCHERINFO_NS}}}watcher-list")
    if len(lists) != 1:
        raise ValueError("expected one watcher-list")
    watchers = [
        Watcher(
            id=element.get("id", ""),
            uri=(element.text or "").strip(),
            status=element.get("status", ""),
            event=element.get("event", ""),
            expiration=int(element.get("expiration")) if element.get("expiration") else None,
        )
        for element in lists[0].iterfind(f"{{{WATCHERINFO_NS}}}watcher")
    ]
    return WatcherInfo(
        version=int(root.get("version", "-1")),
        state=root.get("state", ""),
        resource=lists[0].get("resource", ""),
        package=lists[0].get("package", ""),
        watchers=watchers,
    )
