"""Bytes to SIP messages and back (RFC 3261 §7, §18.3), in the sans-I/O style of h11.

``parse_message`` takes one whole message (a datagram, or what StreamFramer cut from a
stream) and returns a SipRequest or SipResponse, or raises SipParseError: no other
exception escapes, whatever the bytes.
"""

from __future__ import annotations

from presence.sip.grammar import is_token, parse_cseq, parse_name_addr, parse_uri, parse_via
from presence.sip.message import (
    Headers,
    SipMessage,
    SipParseError,
    SipRequest,
    SipResponse,
    canonical_name,
)

__all__ = ["MAX_HEADERS", "MAX_LINE_LENGTH", "SipParseError", "parse_message", "serialize"]

MAX_HEADERS = 256
MAX_LINE_LENGTH = 8192
MAX_HEADER_BYTES = 65536

# RFC 3261 §8.1.1: the headers without which a request cannot be answered or matched.
_MANDATORY = ("To", "From", "CSeq", "Call-ID", "Via")
_SINGLE = ("To", "From", "CSeq", "Call-ID", "Max-Forwards")


def parse_message(data: bytes, *, datagram: bool = True) -> SipMessage:
    """Parse one SIP message.

    ``datagram`` selects the §18.3 framing rules: on a datagram a missing Content-Length
    means the body runs to the end and octets beyond Content-Length are discarded; off a
    stream Content-Length is required and must account for every octet.
    """
    headers = Headers()
    try:
        return _parse(data, datagram, headers)
    except SipParseError as error:
        if error.headers is None:
            error.headers = headers
        raise
    except Exception as error:
        # Every check above should have caught malformed input; this is the backstop that
        # keeps the "only SipParseError" contract if one was missed.
        raise SipParseError("Malformed message", headers=headers) from error


def _parse(data: bytes, datagram: bool, headers: Headers) -> SipMessage:
    # RFC 3261 §7.5: CRLFs before the start line are ignored.
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        if not datagram:
            raise SipParseError("Incomplete message")
        # A datagram whose header section runs to its very end: no body.
        head, rest = data[start:].removesuffix(b"\r\n"), b""
    else:
        head, rest = data[start:end], data[end + 4 :]
    if not head:
        raise SipParseError("Empty message")
    if len(head) > MAX_HEADER_BYTES:
        raise SipParseError("Message Too Large", status=513)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("Invalid UTF-8") from None

    lines = text.split("\r\n")
    if len(lines) > 4 * MAX_HEADERS:
        raise SipParseError("Too many headers")
    # Every CR and LF must belong to a CRLF line end: a bare one would smuggle a line break
    # into a header value.
    if text.count("\r") != len(lines) - 1 or text.count("\n") != len(lines) - 1:
        raise SipParseError("Bad line ending")
    start_line = lines[0]
    _read_headers(lines, headers)

    if start_line[:4].upper() == "SIP/":
        message: SipMessage = _parse_status_line(start_line, headers)
    else:
        message = _parse_request_line(start_line, headers)
    message.body = _body(headers, rest, datagram)
    _validate(message)
    return message


def _read_headers(lines: list[str], headers: Headers) -> None:
    name = value = None
    for line in lines[1:]:
        if len(line) > MAX_LINE_LENGTH:
            raise SipParseError("Line too long")
        if line[:1] in (" ", "\t"):
            # Folded continuation (LWS): equivalent to a single space (RFC 3261 §7.3.1).
            if value is None:
                raise SipParseError("Bad header folding")
            continuation = line.strip(" \t")
            value = f"{value} {continuation}" if value else continuation
            continue
        if name is not None:
            headers.add(name, value or "")
        raw_name, colon, raw_value = line.partition(":")
        raw_name = raw_name.rstrip(" \t")
        if not colon or not is_token(raw_name):
            raise SipParseError("Malformed header line")
        if len(headers) >= MAX_HEADERS:
            raise SipParseError("Too many headers")
        name, value = raw_name, raw_value.strip(" \t")
    if name is not None:
        headers.add(name, value or "")


def _parse_version(version: str, headers: Headers) -> str:
    if version.upper() == "SIP/2.0":
        return "SIP/2.0"
    proto, _, number = version.partition("/")
    major, dot, minor = number.partition(".")
    if proto.upper() == "SIP" and dot and major.isdigit() and minor.isdigit():
        raise SipParseError("Version Not Supported", headers=headers, status=505)
    raise SipParseError("Bad SIP version")


def _parse_request_line(line: str, headers: Headers) -> SipRequest:
    # Exactly single SP between the three elements (RFC 3261 §7.1; RFC 4475 §3.1.2.9-10).
    parts = line.split(" ")
    if len(parts) != 3 or not is_token(parts[0]):
        raise SipParseError("Bad Request-Line")
    method, uri, version = parts
    version = _parse_version(version, headers)
    try:
        parsed = parse_uri(uri)
    except SipParseError:
        raise SipParseError("Bad Request-URI") from None
    if parsed.headers:
        # Headers are not allowed in a Request-URI (RFC 3261 §19.1.1, RFC 4475 §3.1.2.11).
        raise SipParseError("Bad Request-URI")
    return SipRequest(method, uri, headers, version=version)


def _parse_status_line(line: str, headers: Headers) -> SipResponse:
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    version = _parse_version(version, headers)
    if len(code) != 3 or not code.isascii() or not code.isdigit() or code[0] not in "123456":
        raise SipParseError("Bad Status-Code")
    return SipResponse(int(code), reason, headers, version=version)


def _body(headers: Headers, rest: bytes, datagram: bool) -> bytes:
    values = [value for name, value in headers if name == "Content-Length"]
    if not values:
        if datagram:
            return rest  # RFC 3261 §18.3: the body runs to the end of the datagram
        raise SipParseError("Missing Content-Length")
    if len(values) > 1:
        raise SipParseError("Multiple Content-Length")
    text = values[0]
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise SipParseError("Bad Content-Length")
    length = int(text)
    if length > len(rest) or (not datagram and length != len(rest)):
        raise SipParseError("Content-Length mismatch")
    return rest[:length]  # §18.3: octets past Content-Length in a datagram are discarded


def _validate(message: SipMessage) -> None:
    headers = message.headers
    counts: dict[str, int] = {}
    for name, _ in headers:
        counts[name] = counts.get(name, 0) + 1
    for name in _MANDATORY:
        if name not in counts:
            raise SipParseError(f"Missing {name}")
    for name in _SINGLE:
        if counts.get(name, 0) > 1:
            raise SipParseError(f"Multiple {name}")
    if not headers.get("Call-ID"):
        raise SipParseError("Bad Call-ID")
    for via in headers.get_all("Via"):
        parse_via(via)
    for name in ("From", "To"):
        try:
            parse_name_addr(headers.get(name) or "")
        except SipParseError:
            raise SipParseError(f"Malformed {name}") from None
    for contact in headers.get_all("Contact"):
        if contact != "*":
            try:
                parse_name_addr(contact)
            except SipParseError:
                raise SipParseError("Malformed Contact") from None
    _, method = parse_cseq(headers.get("CSeq") or "")
    if isinstance(message, SipRequest) and method != message.method:
        raise SipParseError("CSeq method mismatch")
    max_forwards = headers.get("Max-Forwards")
    if max_forwards is not None and not (
        max_forwards.isascii() and max_forwards.isdigit() and int(max_forwards) <= 255
    ):
        raise SipParseError("Bad Max-Forwards")


def serialize(message: SipMessage) -> bytes:
    """Wire form: canonical header names, CRLF line ends, Content-Length from the body
    (kept where it stood, or appended)."""
    if isinstance(message, SipRequest):
        lines = [f"{message.method} {message.uri} {message.version}"]
    else:
        lines = [f"{message.version} {message.status} {message.reason}"]
    length = str(len(message.body))
    wrote_length = False
    for name, value in message.headers:
        name = canonical_name(name)
        if name == "Content-Length":
            if wrote_length:
                continue
            value, wrote_length = length, True
        lines.append(f"{name}: {value}")
    if not wrote_length:
        lines.append(f"Content-Length: {length}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode() + message.body
