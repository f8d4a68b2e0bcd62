"""Responses to requests (RFC 3261 §8.2.6, §21): reason phrases and the headers a
response copies from its request, pure."""

from __future__ import annotations

from collections.abc import Iterable

from presence.sip.grammar import parse_name_addr
from presence.sip.message import Headers, SipParseError, SipRequest, SipResponse

# ---------------------------------------------------------------------------------------------
# Responses

REASON_PHRASES = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    412: "Conditional Request Failed",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    489: "Bad Event",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
}


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> SipResponse:
    """A response to ``request`` as RFC 3261 §8.2.6.2 builds it: Via (all, in order), From,
    To (with ``to_tag`` added if it has no tag yet), Call-ID and CSeq copied."""
    out = Headers()
    for name, value in request.headers:
        if name == "Via":
            out.add("Via", value)
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = request.headers.get(name)
        if value is None:
            continue
        if name == "To" and to_tag is not None and not _has_tag(value):
            value = f"{value};tag={to_tag}"
        out.add(name, value)
    for name, value in headers:
        out.add(name, value)
    return SipResponse(status, reason or REASON_PHRASES.get(status, "Unknown"), out)


def _has_tag(value: str) -> bool:
    try:
        return parse_name_addr(value).tag is not None
    except SipParseError:
        return ";tag=" in value.replace(" ", "").lower()
