"""RFC 6665 / RFC 3856 decisions for one SUBSCRIBE, without I/O."""

from __future__ import annotations

import secrets

from presence.bus.events import SubscribeRequest
from presence.packages.registry import PACKAGES
from presence.settings import Settings
from presence.sip.answers import Answer


def grant_expires(request: SubscribeRequest, settings: Settings) -> int | Answer:
    """The granted expiry, or the refusal: 406 when the watcher accepts none of the
    package's types (no Accept means the package's default, RFC 3856 §6.7), 423 below
    the minimum; above the package's maximum it is lowered."""
    package = PACKAGES[request.event]
    if not package.accepts(request.accept):
        return Answer(406, "Not Acceptable", [("Accept", package.body_type)])
    expires = package.expiry_default(settings) if request.expires is None else request.expires
    if 0 < expires < settings.min_expires:
        return Answer(423, "Interval Too Brief", [("Min-Expires", str(settings.min_expires))])
    return min(expires, package.expiry_max(settings))


def new_to_tag(settings: Settings) -> str:
    """The seed's to_tag_pref, then randomness (the tag names the dialog)."""
    return settings.to_tag_pref + secrets.token_hex(8)
