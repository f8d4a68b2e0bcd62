"""RFC 6665 / RFC 3856 decisions for one SUBSCRIBE, without I/O."""

from __future__ import annotations

import secrets

from presence.bus.events import SubscribeRequest
from presence.packages.registry import PACKAGES, ExpiryPolicy
from presence.sip.answers import Answer


def grant_expires(request: SubscribeRequest, expiry: ExpiryPolicy) -> int | Answer:
    """The granted expiry, or the refusal: 406 when the watcher accepts none of the
    package's types (no Accept means the package's default, RFC 3856 §6.7), 423 below
    the minimum; above the package's maximum it is lowered."""
    package = PACKAGES[request.event]
    if not package.accepts(request.accept):
        return Answer(406, "Not Acceptable", [("Accept", package.body_type)])
    expires = package.expiry_default(expiry) if request.expires is None else request.expires
    if 0 < expires < expiry.min:
        return Answer(423, "Interval Too Brief", [("Min-Expires", str(expiry.min))])
    return min(expires, package.expiry_max(expiry))


def new_to_tag(prefix: str) -> str:
    """The seed's to_tag_pref (`prefix`), then randomness (the tag names the dialog)."""
    return prefix + secrets.token_hex(8)
