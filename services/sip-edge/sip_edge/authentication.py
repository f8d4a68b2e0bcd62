"""Who sent a request, as far as the edge can tell without the database (pure).

digest: a request without credentials for its realm (the From domain, as
Kamailio's auth_check("$fd") does) is challenged here at once, and so is one
whose nonce this system did not make or that is stale; the rest goes on the bus
with its Authorization header, and presence-store checks the response against
the credentials table (presence_store.authentication). trusted-proxy: only the
configured proxies may send, and P-Asserted-Identity (RFC 3325) names the user.
"""

from __future__ import annotations

from dataclasses import dataclass

from presence.settings import Settings
from presence.sip.digest import DigestError, challenge_headers, nonce_age, parse_credentials
from presence.sip.message import SipParseError, SipRequest, parse_name_addr
from sip_edge.checks import LocalAnswer


@dataclass(frozen=True)
class Credentials:
    """What the bus event carries about the sender."""

    authorization: str | None = None  # for the store to verify (digest)
    identity: str | None = None  # already established (trusted-proxy)


def realm_of(request: SipRequest) -> str:
    return parse_name_addr(request.headers.get("From") or "").uri.host.lower()


def authenticate(
    request: SipRequest, source_host: str, settings: Settings, now: float
) -> Credentials | LocalAnswer:
    if settings.auth == "none":
        return Credentials()
    if settings.auth == "trusted-proxy":
        return _asserted_identity(request, source_host, settings)
    realm = realm_of(request)
    for value in request.headers.get_all("Authorization"):
        try:
            credentials = parse_credentials(value)
        except DigestError:
            continue
        if credentials.realm.lower() != realm:
            continue
        age = nonce_age(settings.auth_secret, realm, credentials.nonce, now)
        if age is None:
            break  # not a nonce of ours (or for another realm): a fresh challenge
        if not -5 <= age <= settings.auth_nonce_ttl:
            return unauthorized(settings, realm, now, stale=True)
        return Credentials(authorization=value)
    return unauthorized(settings, realm, now)


def unauthorized(settings: Settings, realm: str, now: float, stale: bool = False) -> LocalAnswer:
    headers = challenge_headers(settings.auth_secret, realm, now, stale)
    return LocalAnswer(401, "Unauthorized", headers)


def _asserted_identity(
    request: SipRequest, source_host: str, settings: Settings
) -> Credentials | LocalAnswer:
    if source_host not in settings.trusted_proxy_addresses:
        return LocalAnswer(403, "Not From A Trusted Proxy")
    for value in request.headers.get_all("P-Asserted-Identity"):
        try:
            uri = parse_name_addr(value).uri
        except SipParseError:
            continue
        if uri.scheme in ("sip", "sips") and uri.user:
            return Credentials(identity=f"sip:{uri.user}@{uri.host.lower()}")
    return LocalAnswer(403, "No P-Asserted-Identity")
