"""SIP message model (RFC 3261 §7): requests, responses and their headers, pure and I/O-free.

The grammar is parsed with plain string scanning rather than regular expressions: header
values come from the network, and hand-written scanners have no backtracking to exploit.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = [
    "Headers",
    "SipMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "canonical_name",
    "split_list",
]


class SipParseError(ValueError):
    """Bytes or a header value that are not valid SIP.

    ``reason`` is a short ASCII phrase naming the defect, fit for a 400 reason phrase;
    ``headers`` holds whatever headers were parsed before the failure so that a caller can
    still route an error response by the Via; ``status`` is the response code to send.
    """

    def __init__(self, reason: str, *, headers: Headers | None = None, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.headers = headers
        self.status = status


_WS = " \t"


# ---------------------------------------------------------------------------------------------
# Header names

_COMPACT = {
    "i": "Call-ID",
    "f": "From",
    "t": "To",
    "v": "Via",
    "m": "Contact",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
    "o": "Event",
    "u": "Allow-Events",
    "s": "Subject",
    "e": "Content-Encoding",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
}
_WELL_KNOWN = (
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "In-Reply-To",
    "Max-Forwards",
    "Min-Expires",
    "MIME-Version",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reply-To",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Service-Route",
    "Session-Expires",
    "SIP-ETag",
    "SIP-If-Match",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
)
_CANONICAL = {name.lower(): name for name in _WELL_KNOWN}
_CANONICAL.update(_COMPACT)

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1), so that one header line
# may carry several values.
_LIST_HEADERS = frozenset(
    name.lower()
    for name in (
        "Via",
        "Route",
        "Record-Route",
        "Contact",
        "Allow",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Allow-Events",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Path",
        "Service-Route",
        "P-Asserted-Identity",  # RFC 3325: a sip URI and a tel URI may both be given
    )
)


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name; compact forms expand, unknown names stay."""
    return _CANONICAL.get(name.lower(), name)


@functools.lru_cache(maxsize=512)
def _key(name: str) -> str:
    """Lookup key of a header name (cached: lookups use a handful of constant names)."""
    return canonical_name(name).lower()


def split_list(text: str, separator: str = ",") -> list[str]:
    """Split on ``separator`` outside quoted strings and <...>; items are stripped."""
    if '"' not in text and "<" not in text:
        return [item.strip(_WS) for item in text.split(separator)]
    items: list[str] = []
    start = 0
    in_quotes = in_angle = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if in_quotes:
            if ch == "\\":
                i += 1  # quoted-pair: the next character is literal
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == separator and not in_angle:
            items.append(text[start:i].strip(_WS))
            start = i + 1
        i += 1
    if in_quotes:
        raise SipParseError("Unterminated quoted string")
    items.append(text[start:].strip(_WS))
    return items


class Headers:
    """Ordered multi-map of (name, value) with case-insensitive lookup.

    Names are stored in canonical spelling (compact forms expanded); values are stored as
    given, which for parsed messages means unfolded and stripped.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        # Each entry is (canonical name, value, lower-cased name for lookup).
        self._items: list[tuple[str, str, str]] = []
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        canonical = canonical_name(name)
        self._items.append((canonical, value, canonical.lower()))

    def get(self, name: str) -> str | None:
        key = _key(name)
        for _, value, item_key in self._items:
            if item_key == key:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``; list-valued headers are split at commas."""
        key = _key(name)
        values = [value for _, value, item_key in self._items if item_key == key]
        if key not in _LIST_HEADERS:
            return values
        result: list[str] = []
        for value in values:
            if value.strip(_WS) == "*":
                result.append("*")  # Contact: * (RFC 3261 §10.2.2)
            elif value.strip(_WS):
                result.extend(split_list(value))
        return result

    def set(self, name: str, value: str) -> None:
        """Replace every value of ``name`` with one, kept where the first one was."""
        canonical = canonical_name(name)
        key = canonical.lower()
        for index, (_, _, item_key) in enumerate(self._items):
            if item_key == key:
                self._items[index] = (canonical, value, key)
                self._items[index + 1 :] = [
                    item for item in self._items[index + 1 :] if item[2] != key
                ]
                return
        self._items.append((canonical, value, key))

    def remove(self, name: str) -> None:
        key = _key(name)
        self._items = [item for item in self._items if item[2] != key]

    def copy(self) -> Headers:
        clone = Headers()
        clone._items = list(self._items)
        return clone

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _key(name)
        return any(item_key == key for _, _, item_key in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((name, value) for name, value, _ in self._items)

    def count(self, name: str) -> int:
        key = _key(name)
        return sum(1 for item in self._items if item[2] == key)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [item[:2] for item in self._items] == [item[:2] for item in other._items]

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        return f"Headers({[item[:2] for item in self._items]!r})"


@dataclass
class SipRequest:
    method: str
    uri: str
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"


@dataclass
class SipResponse:
    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"


SipMessage = SipRequest | SipResponse
