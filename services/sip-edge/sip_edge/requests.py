"""SIP requests -> typed bus events (pure): what the rest of the system sees of them."""

from __future__ import annotations

import re
from collections.abc import Set

from presence.bus import events
from presence.pidf.device import instance_id
from presence.sip.answers import Answer
from presence.sip.grammar import parse_event, parse_expires, parse_name_addr, parse_uri
from presence.sip.message import SipParseError, SipRequest

_QVALUE = re.compile(r"0(\.[0-9]{0,3})?|1(\.0{0,3})?")


def publish_event(
    request: SipRequest, *, request_id: str, edge_id: str, flow: str, now: float
) -> events.PublishRequest | Answer:
    uri = parse_uri(request.uri)
    if not uri.user:
        return Answer(404, "No Presentity in Request-URI")
    package, _ = parse_event(request.headers.get("Event") or "")
    expires = request.headers.get("Expires")
    return events.PublishRequest(
        request_id=request_id,
        edge_id=edge_id,
        received_at=now,
        username=uri.user,
        domain=uri.host.lower(),
        event=package,
        expires=int(expires) if expires is not None else None,
        if_match=request.headers.get("SIP-If-Match"),
        content_type=request.headers.get("Content-Type"),
        body=request.body.decode("utf-8", errors="replace"),
        flow=flow,
        instance=_publisher_instance(request),
    )


def _publisher_instance(request: SipRequest) -> str | None:
    """The instance id in a PUBLISH's Contact, if it has one. RFC 3903 gives a
    Contact in PUBLISH no meaning, so one that does not parse is ignored, not refused."""
    for value in request.headers.get_all("Contact"):
        try:
            instance = instance_id(parse_name_addr(value).params)
        except SipParseError:
            continue
        if instance is not None:
            return instance
    return None


def register_event(
    request: SipRequest, *, request_id: str, edge_id: str, flow: str, now: float
) -> events.RegisterRequest | Answer:
    aor = parse_name_addr(request.headers.get("To") or "").uri
    if not aor.user:
        return Answer(404, "No User in To")
    contacts: list[tuple[str, int | None, float | None]] = []
    instances: dict[str, str] = {}
    for value in request.headers.get_all("Contact"):
        if value.strip() == "*":
            contacts.append(("*", None, None))
            continue
        try:
            contact = parse_name_addr(value)
        except SipParseError:
            return Answer(400, "Bad Contact")
        expires_param = contact.params.get("expires")
        q_param = contact.params.get("q")
        try:
            expires = parse_expires(expires_param) if expires_param is not None else None
        except SipParseError:
            return Answer(400, "Bad Contact Expires")
        if q_param is not None and not _QVALUE.fullmatch(q_param):
            return Answer(400, "Bad Contact q")  # RFC 3261 §25.1 qvalue: 0..1
        q = float(q_param) if q_param is not None else None
        contacts.append((str(contact.uri), expires, q))
        instance = instance_id(contact.params)
        if instance is not None:
            instances[str(contact.uri)] = instance
    cseq_number = int((request.headers.get("CSeq") or "0").split()[0])
    expires_header = request.headers.get("Expires")
    return events.RegisterRequest(
        request_id=request_id,
        edge_id=edge_id,
        received_at=now,
        username=aor.user,
        domain=aor.host.lower(),
        contacts=contacts,
        expires=int(expires_header) if expires_header is not None else None,
        call_id=request.headers.get("Call-ID") or "",
        cseq=cseq_number,
        flow=flow,
        instances=instances,
    )


def subscribe_event(
    request: SipRequest, *, request_id: str, edge_id: str, flow: str, now: float
) -> events.SubscribeRequest | Answer:
    from_ = parse_name_addr(request.headers.get("From") or "")
    to = parse_name_addr(request.headers.get("To") or "")
    if not from_.tag:
        return Answer(400, "Missing From Tag")
    # An initial SUBSCRIBE names its resource in the request-URI (RFC 3856 §5); an
    # in-dialog one is sent to the server's Contact, so its To names the presentity.
    presentity = to.uri if to.tag else parse_uri(request.uri)
    if not presentity.user:
        return Answer(404, "No Presentity in Request-URI")
    contacts = request.headers.get_all("Contact")
    if to.tag is None and len(contacts) != 1:
        return Answer(400, "SUBSCRIBE Needs One Contact")  # RFC 6665 §4.1.2
    contact = None
    if contacts:
        try:
            contact = str(parse_name_addr(contacts[0]).uri)
        except SipParseError:
            return Answer(400, "Bad Contact")
    package, params = parse_event(request.headers.get("Event") or "")
    expires = request.headers.get("Expires")
    accept = [
        media.split(";")[0].strip().lower()
        for value in request.headers.get_all("Accept")
        for media in value.split(",")
        if media.strip()
    ]
    return events.SubscribeRequest(
        request_id=request_id,
        edge_id=edge_id,
        received_at=now,
        username=presentity.user,
        domain=presentity.host.lower(),
        event=package,
        event_id=params.get("id"),
        expires=int(expires) if expires is not None else None,
        accept=accept,
        call_id=request.headers.get("Call-ID") or "",
        from_uri=str(from_.uri),
        from_tag=from_.tag,
        to_uri=str(to.uri),
        to_tag=to.tag,
        cseq=int((request.headers.get("CSeq") or "0").split()[0]),
        contact=contact,
        record_route=request.headers.get_all("Record-Route"),
        flow=flow,
    )


def strip_own_routes(request: SipRequest, own: Set[tuple[str, int]]) -> None:
    """Remove Route entries that name this server (RFC 3261 §16.4): PJSIP and baresip
    pre-load one when configured with the server as outbound proxy."""
    routes = request.headers.get_all("Route")
    if not routes:
        return
    kept = []
    for route in routes:
        try:
            uri = parse_name_addr(route).uri
        except SipParseError:
            kept.append(route)
            continue
        if (uri.host.strip("[]").lower(), uri.port or 5060) not in own:
            kept.append(route)
    if len(kept) != len(routes):
        request.headers.remove("Route")
        for route in kept:
            request.headers.add("Route", route)
