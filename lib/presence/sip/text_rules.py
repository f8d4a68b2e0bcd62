"""What a parsed request's text may hold, beyond what the parser already enforces
(RFC 3261 §25), pure and I/O-free.

The parser accepts any UTF-8 in a header value; the rest of the system cannot: a
NUL cannot be stored by PostgreSQL, a non-ASCII digit is no number, an unbalanced
quote in a Record-Route is no route. `request_defect` names the first header that
breaks these rules, for a 400 whose reason phrase names it ("Bad Call-ID").

Non-ASCII text, per header (RFC 3261 §25.1 has UTF-8 only in TEXT-UTF8 and
quoted-string):
  anywhere   Subject, Organization, User-Agent, Server, Warning, Reason and every
             extension header this server does not read (its grammar allows UTF-8)
  quoted     From, To, Contact, Route, Record-Route, Reply-To, P-Asserted-Identity,
             P-Preferred-Identity, Path, Service-Route, Refer-To, Referred-By, Via,
             Event: only inside a quoted string (a display name, a quoted parameter)
  nowhere    every other header this server reads (ASCII_ONLY below); Authorization
             too, though its grammar has quoted strings: a digest over a non-ASCII
             user name is computed differently by different phones (RFC 7616's
             username* is not supported)
Control characters (C0 but HTAB, and DEL) are refused everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from presence.sip.grammar import parse_expires, parse_name_addr
from presence.sip.message import SipParseError, SipRequest, canonical_name, split_list

# Headers whose non-ASCII text may stand only inside quoted strings.
UTF8_IN_QUOTES = frozenset(
    {
        "From",
        "To",
        "Contact",
        "Route",
        "Record-Route",
        "Reply-To",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Path",
        "Service-Route",
        "Refer-To",
        "Referred-By",
        "Via",
        "Event",
    }
)
# Headers this server reads whose grammar is ASCII.
ASCII_ONLY = frozenset(
    {
        "Accept",
        "Accept-Encoding",
        "Allow",
        "Allow-Events",
        "Authorization",
        "Call-ID",
        "Content-Encoding",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Expires",
        "Max-Forwards",
        "Min-Expires",
        "Proxy-Authorization",
        "Proxy-Require",
        "Require",
        "SIP-ETag",
        "SIP-If-Match",
        "Subscription-State",
        "Supported",
        "Unsupported",
    }
)
# name-addr lists: each entry must parse, quotes and <> balanced; Route and
# Record-Route entries must use the <> form (RFC 3261 §20.30, §20.34).
ADDRESS_LISTS = {"Contact": False, "Route": True, "Record-Route": True}

# C0 controls but HTAB, and DEL. "Contains any of" is one character class: linear.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]").search
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


@dataclass(frozen=True)
class Defect:
    """Which header is wrong, and how (kind: a metric label)."""

    header: str  # canonical name, or "Request-URI"
    kind: str  # control, non_ascii, digits, brackets, malformed, length

    @property
    def metric_header(self) -> str:
        """The header as a metric label: extension header names (unbounded) are "other"."""
        known = self.header in ASCII_ONLY or self.header in UTF8_IN_QUOTES
        return self.header if known or self.header == "Request-URI" else "other"

    @property
    def reason(self) -> str:
        """The 400's reason phrase: it names the header."""
        if self.kind == "length":
            return f"{self.header} Too Long"
        return f"Bad {self.header}"


def has_control(text: str) -> bool:
    """Whether `text` holds a C0 control character other than HTAB, or DEL."""
    return _CONTROL(text) is not None


def request_defect(request: SipRequest) -> Defect | None:
    """The first rule the request breaks, or None."""
    if has_control(request.uri) or not request.uri.isascii():
        return Defect("Request-URI", "control" if has_control(request.uri) else "non_ascii")
    for name, value in request.headers:
        defect = header_defect(canonical_name(name), value)
        if defect is not None:
            return defect
    return None


def header_defect(name: str, value: str) -> Defect | None:
    if has_control(value):
        return Defect(name, "control")
    if not value.isascii():
        if name in ASCII_ONLY:
            return Defect(name, "non_ascii")
        if name in UTF8_IN_QUOTES:
            if value.count('"') % 2:
                return Defect(name, "brackets")
            if not _QUOTED.sub("", value).isascii():
                return Defect(name, "non_ascii")
    if name == "Expires":
        try:
            parse_expires(value)
        except SipParseError:
            return Defect(name, "digits")
    angle_form = ADDRESS_LISTS.get(name)
    if angle_form is not None:
        return _address_list_defect(name, value, angle_form)
    return None


def _address_list_defect(name: str, value: str, angle_form: bool) -> Defect | None:
    if value.strip() == "*" and name == "Contact":
        return None
    if value.count("<") != value.count(">") and '"' not in value:
        return Defect(name, "brackets")
    try:
        items = split_list(value)
    except SipParseError:
        return Defect(name, "brackets")
    for item in items:
        try:
            parse_name_addr(item)
        except SipParseError:
            return Defect(name, "malformed")
        if angle_form and not (item.startswith('"') or "<" in item):
            return Defect(name, "brackets")
    return None
