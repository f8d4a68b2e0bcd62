"""Header-value grammars (RFC 3261 §19, §20, §25): URIs, name-addr, Via, CSeq, Expires,
Event, parameters and escapes, pure and I/O-free.

The grammar is parsed with plain string scanning rather than regular expressions: header
values come from the network, and hand-written scanners have no backtracking to exploit.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

from presence.sip.message import SipParseError, split_list

# ---------------------------------------------------------------------------------------------
# Character classes (RFC 3261 §25.1)

_ALNUM = string.ascii_letters + string.digits
TOKEN_CHARS = _ALNUM + "-.!%*_+`'~"
_MARK = "-_.!~*'()"
_USER_CHARS = _ALNUM + _MARK + "&=+$,;?/%"
_PASSWORD_CHARS = _ALNUM + _MARK + "&=+$,%"
_HOST_CHARS = _ALNUM + "-._"
# uri-parameter characters (paramchar) and generic-param values (token / host, leniently "/")
_URI_PARAM_CHARS = _ALNUM + _MARK + "[]/:&+$%"
_GEN_VALUE_CHARS = TOKEN_CHARS + "[]:/"
_SCHEME_CHARS = _ALNUM + "+-."
_WS = " \t"


class _Charset:
    """Membership test for whole strings. str.translate deletes the allowed characters in C,
    so "only allowed characters" is "nothing left", with no per-character Python loop."""

    __slots__ = ("_table", "chars")

    def __init__(self, chars: str) -> None:
        self.chars = frozenset(chars)
        self._table = str.maketrans("", "", chars)

    def only(self, text: str) -> bool:
        return not text.translate(self._table)


_TOKEN = _Charset(TOKEN_CHARS)
_USER = _Charset(_USER_CHARS)
_PASSWORD = _Charset(_PASSWORD_CHARS)
_HOST = _Charset(_HOST_CHARS)
_URI_PARAM = _Charset(_URI_PARAM_CHARS)
_GEN_VALUE = _Charset(_GEN_VALUE_CHARS)
_SCHEME = _Charset(_SCHEME_CHARS)
_HEX = _Charset(string.hexdigits)
_IPV6 = _Charset(string.hexdigits + ":.")


# "Contains any of" is a single-character class: no backtracking is possible.
_URI_FORBIDDEN = re.compile(r'[\s<>"]').search


def is_token(text: str) -> bool:
    return bool(text) and _TOKEN.only(text)


# ---------------------------------------------------------------------------------------------
# Escapes and quoted strings


def unescape(text: str) -> str:
    """Decode %XX escapes (RFC 3261 §19.1.2); a malformed escape is an error."""
    if "%" not in text:
        return text
    parts = text.split("%")
    out = bytearray(parts[0].encode())
    for part in parts[1:]:
        if len(part) < 2 or not _HEX.only(part[:2]):
            raise SipParseError("Bad escape in URI")
        out.append(int(part[:2], 16))
        out.extend(part[2:].encode())
    try:
        return out.decode()
    except UnicodeDecodeError:
        raise SipParseError("Bad escape in URI") from None


def escape(text: str, allowed: frozenset[str]) -> str:
    if all(c in allowed and c != "%" for c in text):
        return text
    return "".join(
        c if c in allowed and c != "%" else "".join(f"%{b:02X}" for b in c.encode()) for c in text
    )


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read the quoted-string opening at text[start]; return (content, index after it)."""
    out: list[str] = []
    i, n = start + 1, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\":
            i += 1
            if i >= n:
                break
            ch = text[i]
        out.append(ch)
        i += 1
    raise SipParseError("Unterminated quoted string")


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------------------------------------
# Parameters


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``name[=value]`` pairs separated by ``;`` (a leading ``;`` is allowed).

    Names are case-insensitive and returned lower-cased; a quoted value keeps its quotes so
    that it serializes back unchanged.
    """
    params: dict[str, str | None] = {}
    text = text.strip(_WS)
    if not text:
        return params
    if text[0] == ";":
        text = text[1:]
    for item in split_list(text, ";"):
        name, eq, value = item.partition("=")
        name = name.strip(_WS)
        if not is_token(name):
            raise SipParseError("Bad parameter")
        if not eq:
            params[name.lower()] = None
            continue
        value = value.strip(_WS)
        if value.startswith('"'):
            _, end = _read_quoted(value, 0)
            if end != len(value):
                raise SipParseError("Bad parameter")
        elif not value or not _GEN_VALUE.only(value):
            raise SipParseError("Bad parameter")
        params[name.lower()] = value
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


# ---------------------------------------------------------------------------------------------
# URIs (RFC 3261 §19.1, RFC 3966)


@dataclass
class SipUri:
    """A parsed URI. For sip/sips/tel the parts are split out; any other scheme keeps its
    scheme-specific part in ``opaque``. ``user`` is unescaped."""

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    opaque: str | None = None

    @property
    def aor(self) -> str:
        """Address of record: user@host with the host lower-cased (host alone if no user)."""
        host = self.host.lower()
        return f"{self.user}@{host}" if self.user is not None else host

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        if self.scheme == "tel":
            return f"tel:{self.user or ''}{format_params(self.params)}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(escape(self.user, _USER.chars))
            if self.password is not None:
                out += [":", escape(self.password, _PASSWORD.chars)]
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        out.extend(
            f";{escape(k, _URI_PARAM.chars)}"
            if v is None
            else f";{escape(k, _URI_PARAM.chars)}={escape(v, _URI_PARAM.chars)}"
            for k, v in self.params.items()
        )
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)


def aor_uri(user: str, host: str) -> str:
    """The SIP URI of the address-of-record user@host, the user part escaped."""
    return str(SipUri("sip", user=user, host=host.lower()))


def normal_aor(text: str) -> str | None:
    """ "user@host" of a SIP (sips, pres) URI or of a bare "user@host", the one form in
    which the system compares addresses-of-record: the user part unescaped, its case
    kept (RFC 3261 §19.1.4: user parts are case-sensitive), the host lower-cased;
    None when the text is no such address."""
    candidate = text.strip()
    for scheme in ("sip:", "sips:", "pres:"):
        if candidate[: len(scheme)].lower() == scheme:
            candidate = candidate[len(scheme) :]
            break
    try:
        uri = parse_uri("sip:" + candidate)
    except SipParseError:
        return None
    return uri.aor if uri.user is not None else None


def same_aor(uri: str, user: str | None, host: str) -> bool:
    """Whether the URI `uri` names the address-of-record user@host (`user` unescaped,
    as the tables keep it)."""
    try:
        parsed = parse_uri(uri)
    except SipParseError:
        return False
    return (parsed.user or "", parsed.host.lower()) == (user or "", host.lower())


def _parse_hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 3 or not _IPV6.only(text[1:end]):
            raise SipParseError("Bad host")
        host, rest = text[: end + 1], text[end + 1 :]
    else:
        host, _, port_text = text.partition(":")
        rest = ":" + port_text if _ else ""
        if not host or not _HOST.only(host):
            raise SipParseError("Bad host")
    if not rest:
        return host, None
    port_text = rest[1:]
    if rest[0] != ":" or not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise SipParseError("Bad port")
    port = int(port_text)
    if port > 65535:
        raise SipParseError("Bad port")
    return host, port


def parse_uri(text: str) -> SipUri:
    scheme, colon, rest = text.partition(":")
    if not colon or not scheme or not scheme[0].isalpha() or not rest:
        raise SipParseError("Bad URI")
    if not _SCHEME.only(scheme):
        raise SipParseError("Bad URI")
    scheme = scheme.lower()
    if _URI_FORBIDDEN(rest):
        raise SipParseError("Bad URI")
    if scheme == "tel":
        number, _, param_text = rest.partition(";")
        return SipUri("tel", user=number, params=_uri_params(param_text))
    if scheme not in ("sip", "sips"):
        return SipUri(scheme, opaque=rest)
    user = password = None
    # userinfo ends at the first "@": user may contain ";" "?" "," (RFC 4475 §3.1.1.2, 3.1.1.9)
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user_text, colon, password_text = userinfo.partition(":")
        if not user_text or not _USER.only(user_text):
            raise SipParseError("Bad URI user")
        if colon:
            if not _PASSWORD.only(password_text):
                raise SipParseError("Bad URI password")
            password = unescape(password_text)
        user = unescape(user_text)
    rest, question, header_text = rest.partition("?")
    hostport, _, param_text = rest.partition(";")
    host, port = _parse_hostport(hostport)
    uri = SipUri(scheme, user, password, host, port, _uri_params(param_text))
    if question:
        for item in header_text.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq:
                raise SipParseError("Bad URI header")
            uri.headers[name] = value
    return uri


def _uri_params(text: str) -> dict[str, str | None]:
    if not text:
        return {}
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        if not name or not _URI_PARAM.only(name + value):
            raise SipParseError("Bad URI parameter")
        params[unescape(name).lower()] = unescape(value) if eq else None
    return params


# ---------------------------------------------------------------------------------------------
# name-addr / addr-spec (RFC 3261 §20.10, §25.1)


@dataclass
class NameAddr:
    display: str | None
    uri: SipUri
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        display = f"{quote(self.display)} " if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(text: str) -> NameAddr:
    text = text.strip(_WS)
    if not text:
        raise SipParseError("Empty address")
    display: str | None = None
    if text[0] == '"':
        display, end = _read_quoted(text, 0)
        rest = text[end:].lstrip(_WS)
        if not rest.startswith("<"):
            raise SipParseError("Bad address")
    elif "<" in text:
        lt = text.index("<")
        words = text[:lt].split()
        # An unquoted display name is a sequence of tokens (RFC 3261 §25.1)
        if not all(is_token(word) for word in words):
            raise SipParseError("Bad display name")
        display = " ".join(words) or None
        rest = text[lt:]
    else:
        # addr-spec form: the parameters after the URI belong to the header (§20.10), and
        # a URI with ";", "," or "?" of its own would need the <> form.
        uri_text, _, param_text = text.partition(";")
        uri_text = uri_text.rstrip(_WS)
        if any(c in uri_text for c in ",?"):
            raise SipParseError("Bad address")
        return NameAddr(None, parse_uri(uri_text), parse_params(param_text))
    gt = rest.find(">")
    if gt < 0:
        raise SipParseError("Bad address")
    uri = parse_uri(rest[1:gt])
    param_text = rest[gt + 1 :].strip(_WS)
    if param_text and param_text[0] != ";":
        raise SipParseError("Bad address")
    return NameAddr(display, uri, parse_params(param_text))


# ---------------------------------------------------------------------------------------------
# Via (RFC 3261 §20.42)


@dataclass
class Via:
    protocol: str
    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The rport value; None when absent or present without a value (RFC 3581)."""
        value = self.params.get("rport")
        return int(value) if value and value.isdigit() else None

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"


def parse_via(text: str) -> Via:
    head, _, param_text = text.partition(";")
    parts = head.split("/", 2)
    if len(parts) != 3:
        raise SipParseError("Malformed Via")
    name, version = parts[0].strip(_WS), parts[1].strip(_WS)
    transport_and_host = parts[2].split(None, 1)
    if len(transport_and_host) != 2:
        raise SipParseError("Malformed Via")
    transport, sent_by = transport_and_host
    if not (is_token(name) and is_token(version) and is_token(transport)):
        raise SipParseError("Malformed Via")
    try:
        host, port = _parse_hostport(sent_by.strip(_WS))
        params = parse_params(param_text)
    except SipParseError:
        raise SipParseError("Malformed Via") from None
    rport = params.get("rport")
    if rport is not None and not (rport.isdigit() and int(rport) <= 65535):
        raise SipParseError("Malformed Via")
    return Via(f"{name.upper()}/{version}", transport.upper(), host, port, params)


# ---------------------------------------------------------------------------------------------
# Scalars


def parse_cseq(text: str) -> tuple[int, str]:
    parts = text.split()
    if len(parts) != 2 or not parts[0].isascii() or not parts[0].isdigit():
        raise SipParseError("Bad CSeq")
    # Length check first so a hostile 10**6-digit number is never converted.
    if len(parts[0]) > 12 or int(parts[0]) > 2**31 - 1 or not is_token(parts[1]):
        raise SipParseError("Bad CSeq")
    return int(parts[0]), parts[1]


def parse_expires(text: str) -> int:
    """Expires / expires param: delta-seconds, 0..2**32-1 (RFC 3261 §20.19, §25.1)."""
    text = text.strip(_WS)
    if not text.isascii() or not text.isdigit() or len(text) > 12 or int(text) > 2**32 - 1:
        raise SipParseError("Bad Expires")
    return int(text)


def parse_event(text: str) -> tuple[str, dict[str, str | None]]:
    """Event header (RFC 6665 §8.2.1): package name (a case-sensitive token) and params."""
    package, _, param_text = text.partition(";")
    package = package.strip(_WS)
    if not is_token(package):
        raise SipParseError("Bad Event")
    try:
        return package, parse_params(param_text)
    except SipParseError:
        raise SipParseError("Bad Event") from None
