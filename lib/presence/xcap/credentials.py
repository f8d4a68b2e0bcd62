"""Who may read and change a user's pres-rules over XCAP: credentials derived from
one server secret, pure.

Each user's XCAP password is HMAC-SHA256(PRESENCE_XCAP_SECRET, their AOR), so the
server stores no password table and any store replica checks any user; the
operator hands a user their password (`python -m presence_store.xcap_passwords
sip:alice@example.com`), and changing the secret revokes them all. A client sends
it as HTTP Basic (user name: the AOR, "alice@example.com") or as a Bearer token;
it opens that AOR's documents and no other's. SIP digest credentials
(the credentials table) could be checked instead; the request path does not change.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from presence.sip.grammar import normal_aor

REALM = "presence-xcap"


def aor_of(xui: str) -> str:
    """The address-of-record an XUI or Basic user name names: "user@host", lower-cased
    host, no scheme ("sip:Alice@Example.com" -> "Alice@example.com"), the user part
    unescaped as SIP does it (presence.sip.grammar.normal_aor: "al%69ce" is "alice")."""
    normal = normal_aor(xui)
    if normal is not None:
        return normal
    text = xui.strip()  # not a SIP address: compared as written
    for scheme in ("sip:", "sips:", "pres:"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
            break
    user, at, host = text.rpartition("@")
    return f"{user}@{host.lower()}" if at else text


def password_for(secret: str, xui: str) -> str:
    digest = hmac.new(secret.encode(), b"xcap:" + aor_of(xui).encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()[:24]).decode()


@dataclass(frozen=True)
class Credentials:
    user: str | None  # the AOR a Basic user name claims; None for a Bearer token
    password: str


# Longer headers are no credentials of ours (a password is 32 characters).
MAX_AUTHORIZATION = 1024


def parse_authorization(header: str | None) -> Credentials | None:
    """Basic or Bearer credentials from an Authorization header; None when absent or
    unreadable: over-long, not ASCII, with control characters, bad base64 or a
    decoded Basic value that is not UTF-8 or lacks its colon. Never raises."""
    if not header or len(header) > MAX_AUTHORIZATION or not _printable_ascii(header):
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return Credentials(None, value)
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value, validate=True).decode()
    except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
        return None
    if not decoded.isprintable():
        return None
    # A Basic user-id cannot hold a colon (RFC 7617), but clients that send the XUI
    # as their user name ("sip:alice@example.com:password") exist: drop the scheme.
    for scheme in ("sip:", "sips:"):
        if decoded.lower().startswith(scheme):
            decoded = decoded[len(scheme) :]
            break
    user, colon, password = decoded.partition(":")
    if not colon:
        return None
    return Credentials(aor_of(user), password)


def authorizes(credentials: Credentials, secret: str, xui: str) -> bool:
    """Whether the credentials open `xui`'s documents: the password must be that AOR's
    (compared in constant time), and a Basic user name, when given, must name it."""
    if credentials.user is not None and credentials.user != aor_of(xui):
        return False
    # As bytes: compare_digest refuses str that is not ASCII.
    given = credentials.password.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(given, password_for(secret, xui).encode())


def _printable_ascii(text: str) -> bool:
    return all(" " <= c <= "~" or c == "\t" for c in text)
