"""What the edge answers itself, before anything reaches the bus (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

from presence.packages import PACKAGES, accepted_types, allow_events
from presence.settings import Settings
from presence.sip.message import SipParseError, SipRequest, parse_event, parse_uri

# Methods this server handles; anything else gets 405 with this Allow list.
ALLOWED_METHODS = ("OPTIONS", "PUBLISH", "SUBSCRIBE", "REGISTER")
# SIP option tags this server implements (RFC 3261 §8.2.2.3): none so far.
SUPPORTED_OPTIONS: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LocalAnswer:
    status: int
    reason: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    to_tag: str | None = None


def allowed_methods(settings: Settings) -> str:
    methods = [m for m in ALLOWED_METHODS if m != "REGISTER" or settings.registrar]
    return ", ".join(methods)


def options_answer(settings: Settings) -> LocalAnswer:
    return LocalAnswer(
        200,
        headers=[
            ("Allow", allowed_methods(settings)),
            ("Accept", accepted_types()),
            ("Allow-Events", allow_events()),
        ],
    )


def check_request(request: SipRequest, settings: Settings) -> LocalAnswer | None:
    """The answer to a request the edge must refuse, or None when it may go on.
    The order follows RFC 3261 §8.2: method, then URI, then extensions, then content."""
    allow = allowed_methods(settings)
    if request.method not in allow.split(", "):
        return LocalAnswer(405, headers=[("Allow", allow)])
    try:
        uri = parse_uri(request.uri)
    except SipParseError:
        return LocalAnswer(400, "Bad Request-URI")
    if uri.scheme not in ("sip", "sips"):
        return LocalAnswer(416)
    served = settings.served_domains
    if served and uri.host.strip("[]").lower() not in served:
        return LocalAnswer(404, "Domain Not Served Here")
    required = [
        option.strip()
        for value in request.headers.get_all("Require")
        for option in value.split(",")
        if option.strip()
    ]
    unsupported = [option for option in required if option.lower() not in SUPPORTED_OPTIONS]
    if unsupported:
        return LocalAnswer(420, headers=[("Unsupported", ", ".join(unsupported))])
    max_forwards = request.headers.get("Max-Forwards")
    if max_forwards is not None:
        if not max_forwards.strip().isdigit():
            return LocalAnswer(400, "Bad Max-Forwards")
        if int(max_forwards) == 0 and request.method != "OPTIONS":
            return LocalAnswer(483)
    if request.method in ("OPTIONS", "REGISTER"):
        return None
    event = request.headers.get("Event")
    if event is None:
        return LocalAnswer(489, "Missing Event header", [("Allow-Events", allow_events())])
    package, _ = parse_event(event)
    if package not in PACKAGES or (
        request.method == "PUBLISH" and not PACKAGES[package].publishable
    ):
        return LocalAnswer(489, headers=[("Allow-Events", allow_events())])
    expires = request.headers.get("Expires")
    if expires is not None:
        if not expires.strip().isdigit():
            return LocalAnswer(400, "Bad Expires")
        seconds = int(expires)
        if 0 < seconds < settings.min_expires:
            return LocalAnswer(423, headers=[("Min-Expires", str(settings.min_expires))])
    if request.method == "PUBLISH" and request.body:
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != PACKAGES[package].body_type:
            return LocalAnswer(415, headers=[("Accept", PACKAGES[package].body_type)])
    return None
