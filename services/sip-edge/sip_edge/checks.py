"""What the edge answers itself, before anything reaches the bus (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

from presence.sip.message import SipRequest, parse_event

# Methods this server handles; anything else gets 405 with this Allow list.
ALLOWED_METHODS = ("OPTIONS", "PUBLISH", "SUBSCRIBE")
ALLOW = ", ".join(ALLOWED_METHODS)
# Event packages and the body types they accept in PUBLISH.
EVENT_PACKAGES: dict[str, tuple[str, ...]] = {"presence": ("application/pidf+xml",)}
ALLOW_EVENTS = "presence, presence.winfo"
ACCEPT = "application/pidf+xml"


@dataclass(frozen=True)
class LocalAnswer:
    status: int
    reason: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


def options_answer() -> LocalAnswer:
    return LocalAnswer(
        200,
        headers=[("Allow", ALLOW), ("Accept", ACCEPT), ("Allow-Events", ALLOW_EVENTS)],
    )


def check_request(request: SipRequest, *, min_expires: int) -> LocalAnswer | None:
    """The answer to a request the edge must refuse, or None when it may go on."""
    if request.method not in ALLOWED_METHODS:
        return LocalAnswer(405, headers=[("Allow", ALLOW)])
    max_forwards = request.headers.get("Max-Forwards")
    if max_forwards is not None:
        if not max_forwards.strip().isdigit():
            return LocalAnswer(400, "Bad Max-Forwards")
        if int(max_forwards) == 0 and request.method != "OPTIONS":
            return LocalAnswer(483)
    if request.method == "OPTIONS":
        return None
    event = request.headers.get("Event")
    if event is None:
        return LocalAnswer(489, "Missing Event header", [("Allow-Events", ALLOW_EVENTS)])
    package, _ = parse_event(event)
    if package not in EVENT_PACKAGES:
        return LocalAnswer(489, headers=[("Allow-Events", ALLOW_EVENTS)])
    expires = request.headers.get("Expires")
    if expires is not None:
        if not expires.strip().isdigit():
            return LocalAnswer(400, "Bad Expires")
        seconds = int(expires)
        if 0 < seconds < min_expires:
            return LocalAnswer(423, headers=[("Min-Expires", str(min_expires))])
    if request.method == "PUBLISH" and request.body:
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type not in EVENT_PACKAGES[package]:
            return LocalAnswer(415, headers=[("Accept", ", ".join(EVENT_PACKAGES[package]))])
    return None
