"""What the edge answers itself, before anything reaches the bus (pure)."""

from __future__ import annotations

from presence import column_limits
from presence.sip.answers import Answer
from presence.sip.grammar import SipUri, parse_event, parse_name_addr, parse_uri
from presence.sip.message import SipParseError, SipRequest
from presence.sip.text_rules import Defect, has_control, request_defect
from sip_edge.policy import RequestRules

# Methods this server handles; anything else gets 405 with this Allow list.
ALLOWED_METHODS = ("OPTIONS", "PUBLISH", "SUBSCRIBE", "REGISTER")
# SIP option tags this server implements (RFC 3261 §8.2.2.3): none so far.
SUPPORTED_OPTIONS: frozenset[str] = frozenset()
# Methods whose fields the store keeps in its tables.
STORED_METHODS = frozenset({"PUBLISH", "SUBSCRIBE", "REGISTER"})


def allowed_methods(rules: RequestRules) -> str:
    methods = [m for m in ALLOWED_METHODS if m != "REGISTER" or rules.registrar]
    return ", ".join(methods)


def options_answer(rules: RequestRules) -> Answer:
    return Answer(
        200,
        headers=[
            ("Allow", allowed_methods(rules)),
            ("Accept", rules.accepted_types),
            ("Allow-Events", rules.allow_events),
        ],
    )


def check_request(request: SipRequest, rules: RequestRules) -> Answer | None:
    """The answer to a request the edge must refuse, or None when it may go on.
    The order follows RFC 3261 §8.2: method, then URI, then extensions, then content."""
    allow = allowed_methods(rules)
    if request.method not in allow.split(", "):
        return Answer(405, headers=[("Allow", allow)])
    try:
        uri = parse_uri(request.uri)
    except SipParseError:
        return Answer(400, "Bad Request-URI")
    if uri.scheme not in ("sip", "sips"):
        return Answer(416)
    served = rules.served_domains
    if served and uri.host.strip("[]").lower() not in served:
        return Answer(404, "Domain Not Served Here")
    required = [
        option.strip()
        for value in request.headers.get_all("Require")
        for option in value.split(",")
        if option.strip()
    ]
    unsupported = [option for option in required if option.lower() not in SUPPORTED_OPTIONS]
    if unsupported:
        return Answer(420, headers=[("Unsupported", ", ".join(unsupported))])
    max_forwards = request.headers.get("Max-Forwards")
    if max_forwards is not None:
        if not max_forwards.strip().isdigit():
            return Answer(400, "Bad Max-Forwards")
        if int(max_forwards) == 0 and request.method != "OPTIONS":
            return Answer(483)
    if request.method in ("OPTIONS", "REGISTER"):
        return None
    event = request.headers.get("Event")
    if event is None:
        return Answer(489, "Missing Event header", [("Allow-Events", rules.allow_events)])
    try:
        package, _ = parse_event(event)
    except SipParseError:
        return Answer(400, "Bad Event")
    declared = rules.packages.get(package)
    if declared is None or (request.method == "PUBLISH" and not declared.publishable):
        return Answer(489, headers=[("Allow-Events", rules.allow_events)])
    expires = request.headers.get("Expires")
    if expires is not None:
        if not expires.strip().isdigit():
            return Answer(400, "Bad Expires")
        seconds = int(expires)
        if 0 < seconds < rules.min_expires:
            return Answer(423, headers=[("Min-Expires", str(rules.min_expires))])
    if request.method == "PUBLISH" and request.body:
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type not in declared.publish_types:
            return Answer(415, headers=[("Accept", ", ".join(declared.publish_types))])
    return None


def input_defect(request: SipRequest) -> Defect | None:
    """What the edge refuses with 400 before anything else: text the rest of the
    system cannot read or store (presence.sip.text_rules), and, for the requests the
    store keeps, a field longer than its column (presence.column_limits)."""
    defect = request_defect(request)
    if defect is not None or request.method not in STORED_METHODS:
        return defect
    return stored_field_defect(request)


def stored_field_defect(request: SipRequest) -> Defect | None:
    """The first field of a PUBLISH, SUBSCRIBE or REGISTER that its column cannot hold."""
    headers = request.headers
    if len(headers.get("Call-ID") or "") > column_limits.CALL_ID.length:
        return Defect("Call-ID", "length")
    try:
        request_uri: SipUri | None = parse_uri(request.uri)
    except SipParseError:
        request_uri = None  # check_request answers "Bad Request-URI"
    if request_uri is not None:
        defect = _uri_defect("Request-URI", request_uri)
        if defect is not None:
            return defect
    for name in ("From", "To"):
        address = parse_name_addr(headers.get(name) or "")  # the parser checked it
        defect = _uri_defect(name, address.uri)
        if defect is not None:
            return defect
        if len(address.tag or "") > column_limits.TAG.length:
            return Defect(name, "length")
    event = headers.get("Event")
    if event is not None:
        try:
            package, params = parse_event(event)
        except SipParseError:
            return Defect("Event", "malformed")
        if (
            len(package) > column_limits.EVENT.length
            or len(params.get("id") or "") > column_limits.EVENT_ID.length
        ):
            return Defect("Event", "length")
    for contact in headers.get_all("Contact"):
        if len(contact) > column_limits.CONTACT.length:
            return Defect("Contact", "length")
    if len(", ".join(headers.get_all("Record-Route"))) > column_limits.ROUTE_SET.length:
        return Defect("Record-Route", "length")
    if len(headers.get("SIP-If-Match") or "") > column_limits.ENTITY_TAG.length:
        return Defect("SIP-If-Match", "length")
    return None


def _uri_defect(header: str, uri: SipUri) -> Defect | None:
    """A user part (unescaped: "%00" is a NUL) or host the tables cannot hold."""
    if uri.user is not None:
        if has_control(uri.user):
            return Defect(header, "control")
        if len(uri.user) > column_limits.USER.length:
            return Defect(header, "length")
    if len(uri.host) > column_limits.DOMAIN.length:
        return Defect(header, "length")
    return None
