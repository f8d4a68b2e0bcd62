"""SIP digest authentication (RFC 3261 §22, RFC 7616 computations, RFC 8760
SHA-256), pure.

Nonces are stateless, so any edge or store replica can check any of them: a nonce
is the time it was made and an HMAC of that time and the realm under the server's
secret. It is stale after a while (the client retries at once with a new one,
stale=true), and with qop=auth the store remembers each nonce's highest
nonce-count to refuse replays.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
from dataclasses import dataclass

from presence import column_limits
from presence.sip.text_rules import has_control

ALGORITHMS = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
# Offered in this order: RFC 8760 §2.4, the strongest first.
OFFERED = ("SHA-256", "MD5")
_NONCE_MAC_BYTES = 16
_NONCE_RANDOM_BYTES = 8
_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)\s*(?:,|$)')


class DigestError(ValueError):
    """Credentials that cannot be read (malformed: the answer is 400)."""


class DigestUnsupported(DigestError):
    """Well-formed credentials this server does not accept (another scheme, an unknown
    algorithm or qop): the answer is a fresh challenge (401)."""


# The longest value of each digest parameter (characters). username and realm are
# bounded by the credentials table's columns; our nonces are 43 characters.
PARAMETER_LIMITS = {
    "username": column_limits.USER.length,
    "realm": column_limits.DOMAIN.length,
    "nonce": 128,
    "uri": 2048,
    "cnonce": 128,
    "opaque": 256,
}
OTHER_PARAMETER_LIMIT = 256
MAX_PARAMETERS = 16
# The response: lower-case hex, as long as the algorithm's digest.
RESPONSE_LENGTHS = {"MD5": 32, "SHA-256": 64}
_HEX_DIGITS = frozenset("0123456789abcdef")


def hash_hex(algorithm: str, text: str) -> str:
    return ALGORITHMS[algorithm](text.encode()).hexdigest()


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """What the credentials table keeps instead of the password."""
    return hash_hex(algorithm, f"{username}:{realm}:{password}")


def make_nonce(secret: str, realm: str, now: float) -> str:
    """The time, some randomness (so no two challenges share a nonce, and nonce-counts
    are per challenge) and their HMAC with the realm."""
    stamp = struct.pack(">Q", int(now)) + secrets.token_bytes(_NONCE_RANDOM_BYTES)
    mac = hmac.new(secret.encode(), stamp + realm.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(stamp + mac[:_NONCE_MAC_BYTES]).decode().rstrip("=")


def nonce_age(secret: str, realm: str, nonce: str, now: float) -> float | None:
    """Seconds since this server made the nonce for this realm; None when it did not."""
    try:
        raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 8 + _NONCE_RANDOM_BYTES + _NONCE_MAC_BYTES:
        return None
    stamp, mac = raw[: 8 + _NONCE_RANDOM_BYTES], raw[8 + _NONCE_RANDOM_BYTES :]
    expected = hmac.new(secret.encode(), stamp + realm.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected[:_NONCE_MAC_BYTES]):
        return None
    return now - struct.unpack(">Q", stamp[:8])[0]


def challenge(realm: str, nonce: str, algorithm: str, stale: bool = False) -> str:
    """A WWW-Authenticate value (one per offered algorithm)."""
    value = f'Digest realm="{_quote(realm)}", nonce="{nonce}", algorithm={algorithm}, qop="auth"'
    return value + (", stale=true" if stale else "")


@dataclass(frozen=True)
class DigestCredentials:
    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None

    @property
    def nonce_count(self) -> int:
        assert self.nc is not None
        return int(self.nc, 16)


def parse_credentials(value: str) -> DigestCredentials:
    """An Authorization (or Proxy-Authorization) header value. Raises DigestError
    (malformed) or DigestUnsupported, and nothing else, whatever the text."""
    if not value.isascii() or has_control(value):
        raise DigestError("control or non-ASCII character")
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestUnsupported(f"unsupported scheme {scheme[:20]!r}")
    params: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None:
            raise DigestError("malformed digest parameters")
        name, raw = match.group(1).lower(), match.group(2)
        if name in params:
            raise DigestError(f"duplicate {name[:20]}")
        if len(params) >= MAX_PARAMETERS:
            raise DigestError("too many parameters")
        params[name] = _unquote(raw) if raw.startswith('"') else raw
        if len(params[name]) > PARAMETER_LIMITS.get(name, OTHER_PARAMETER_LIMIT):
            raise DigestError(f"{name[:20]} too long")
        position = match.end()
    missing = {"username", "realm", "nonce", "uri", "response"} - params.keys()
    if missing:
        raise DigestError(f"missing {', '.join(sorted(missing))}")
    algorithm = params.get("algorithm", "MD5")
    algorithm = {"md5": "MD5", "sha-256": "SHA-256"}.get(algorithm.lower(), algorithm)
    if algorithm not in ALGORITHMS:
        raise DigestUnsupported(f"unsupported algorithm {algorithm[:20]}")
    response = params["response"].lower()
    if len(response) != RESPONSE_LENGTHS[algorithm] or not _HEX_DIGITS.issuperset(response):
        raise DigestError("response is not a digest")
    qop = params.get("qop")
    if qop is not None:
        if qop != "auth":
            raise DigestUnsupported(f"unsupported qop {qop[:20]}")
        nc = params.get("nc", "")
        if not re.fullmatch(r"[0-9a-fA-F]{8}", nc) or not params.get("cnonce"):
            raise DigestError("qop=auth needs nc (8 hex digits) and cnonce")
    return DigestCredentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=response,
        algorithm=algorithm,
        qop=qop,
        nc=params.get("nc"),
        cnonce=params.get("cnonce"),
    )


def expected_response(credentials: DigestCredentials, ha1_hex: str, method: str) -> str:
    algorithm = credentials.algorithm
    ha2 = hash_hex(algorithm, f"{method}:{credentials.uri}")
    if credentials.qop == "auth":
        text = (
            f"{ha1_hex}:{credentials.nonce}:{credentials.nc}:{credentials.cnonce}:"
            f"{credentials.qop}:{ha2}"
        )
    else:
        text = f"{ha1_hex}:{credentials.nonce}:{ha2}"
    return hash_hex(algorithm, text)


def response_matches(credentials: DigestCredentials, ha1_hex: str, method: str) -> bool:
    """Whether the response is right (compared as bytes, in constant time: never
    raises, whatever the strings)."""
    expected = expected_response(credentials, ha1_hex, method)
    given = credentials.response.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(expected.encode(), given)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _unquote(raw: str) -> str:
    return re.sub(r"\\(.)", r"\1", raw[1:-1])


def challenge_headers(
    secret: str,
    realm: str,
    now: float,
    stale: bool = False,
    algorithms: tuple[str, ...] = OFFERED,
) -> list[tuple[str, str]]:
    """The WWW-Authenticate headers of a 401: a fresh nonce, one challenge per offered
    algorithm, in the order given (PRESENCE_AUTH_ALGORITHMS)."""
    nonce = make_nonce(secret, realm, now)
    return [("WWW-Authenticate", challenge(realm, nonce, name, stale)) for name in algorithms]


def parse_algorithm_list(text: str) -> tuple[str, ...]:
    """PRESENCE_AUTH_ALGORITHMS: known algorithm names, each once, in offering order;
    ValueError otherwise."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise ValueError("must name at least one digest algorithm")
    for name in names:
        if name not in ALGORITHMS:
            raise ValueError(f"unknown digest algorithm {name!r} (known: {', '.join(OFFERED)})")
    if len(set(names)) != len(names):
        raise ValueError(f"names an algorithm twice: {text!r}")
    return names
