"""The event packages this server serves (RFC 6665 §7.2), as data.

A package names the body type its PUBLISHes and NOTIFYs carry and how a published
body is checked. The edge refuses any other Event with 489 and lists these in
Allow-Events; presence-store and notifier look their types up here. Adding a
package (dialog, message-summary) is adding an entry and its
document handling, not touching the request paths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from presence.pidf import device_marks, parse_pidf
from presence.watcherinfo import CONTENT_TYPE as WATCHERINFO_TYPE


@dataclass(frozen=True)
class EventPackage:
    name: str
    body_type: str  # of PUBLISH bodies and NOTIFY bodies
    # Parses and checks a published body; raises ValueError (with a reason phrase).
    check_body: Callable[[bytes], Any]
    # What identifies the publishing device in a checked body (see pidf.device_marks).
    device_marks: Callable[[Any], frozenset[str]] = lambda _: frozenset()
    publishable: bool = True
    # A template-package (RFC 6665 §8.2.4) about the subscriptions of another
    # package; only the resource's owner may subscribe (RFC 3857 §5.3).
    watcher_info_of: str | None = None


def _not_publishable(_: bytes) -> None:
    raise ValueError("this event package cannot be published")


PACKAGES: dict[str, EventPackage] = {
    "presence": EventPackage("presence", "application/pidf+xml", parse_pidf, device_marks),
    # RFC 3857: who watches a presentity; its state comes from the subscriptions,
    # never from PUBLISH (the edge answers a PUBLISH of it with 489).
    "presence.winfo": EventPackage(
        "presence.winfo",
        WATCHERINFO_TYPE,
        _not_publishable,
        publishable=False,
        watcher_info_of="presence",
    ),
}


def allow_events() -> str:
    return ", ".join(PACKAGES)


def accepted_types() -> str:
    """The body types a PUBLISH may carry (Accept of a 415)."""
    return ", ".join(
        sorted({package.body_type for package in PACKAGES.values() if package.publishable})
    )
