"""Who sent a request, as far as the edge can tell without the database (pure).

digest: a request without credentials for its realm (the From domain, as
Kamailio's auth_check("$fd") does) is challenged here at once, and so is one
whose nonce this system did not make or that is stale; the rest goes on the bus
with its Authorization header, and presence-store checks the response against
the credentials table (presence_store.authentication). trusted-proxy: only the
configured proxies may send, over TCP (a UDP source address is spoofable; see
PRESENCE_TRUSTED_PROXY_UDP), and P-Asserted-Identity (RFC 3325) names the user.

Malformed credentials (a NUL, non-ASCII, a missing or duplicate parameter, an
over-long value) get 400 "Bad Authorization" here and never reach the store;
well-formed ones that this server does not accept (another scheme, an unknown
algorithm or qop, no qop while PRESENCE_AUTH_REQUIRE_QOP=1) get a fresh challenge.
"""

from __future__ import annotations

from dataclasses import dataclass

from presence.runtime import metrics
from presence.sip.answers import Answer
from presence.sip.digest import (
    DigestError,
    DigestUnsupported,
    challenge_headers,
    nonce_age,
    parse_credentials,
)
from presence.sip.grammar import aor_uri, parse_name_addr
from presence.sip.message import SipParseError, SipRequest
from sip_edge.policy import AuthPolicy


@dataclass(frozen=True)
class Credentials:
    """What the bus event carries about the sender."""

    authorization: str | None = None  # for the store to verify (digest)
    identity: str | None = None  # already established (trusted-proxy)


def realm_of(request: SipRequest) -> str:
    return parse_name_addr(request.headers.get("From") or "").uri.host.lower()


BAD_AUTHORIZATION = Answer(400, "Bad Authorization")
UDP_PROXY = Answer(403, "Trusted Proxy Must Use TCP")


def authenticate(
    request: SipRequest,
    source_host: str,
    policy: AuthPolicy,
    now: float,
    *,
    reliable: bool,
    verified_peer: bool = False,
) -> Credentials | Answer:
    """`reliable`: the request came over a connection (its source address is not
    spoofed); `verified_peer`: over TLS from a peer whose client certificate
    verified against PRESENCE_TLS_CLIENT_CA (mutual TLS: a trusted proxy)."""
    if policy.mode == "none":
        return Credentials()
    if policy.mode == "trusted-proxy":
        if verified_peer:
            return _asserted(request)
        return _asserted_identity(request, source_host, policy, reliable)
    realm = realm_of(request)
    for value in request.headers.get_all("Authorization"):
        try:
            credentials = parse_credentials(value)
        except DigestUnsupported:
            continue  # a fresh challenge, unless another header is usable
        except DigestError:
            metrics.AUTH_FAILURES.labels("bad_authorization").inc()
            return BAD_AUTHORIZATION
        if credentials.qop is None and policy.require_qop:
            continue  # no nonce-count, no replay protection: challenged again
        if credentials.algorithm not in policy.algorithms:
            continue  # an algorithm this server does not offer: challenged again
        if credentials.realm.lower() != realm:
            continue
        age = nonce_age(policy.secret, realm, credentials.nonce, now)
        if age is None:
            break  # not a nonce of ours (or for another realm): a fresh challenge
        if not -5 <= age <= policy.nonce_ttl:
            return unauthorized(policy, realm, now, stale=True)
        return Credentials(authorization=value)
    return unauthorized(policy, realm, now)


def unauthorized(policy: AuthPolicy, realm: str, now: float, stale: bool = False) -> Answer:
    headers = challenge_headers(policy.secret, realm, now, stale, policy.algorithms)
    return Answer(401, "Unauthorized", headers)


def _asserted_identity(
    request: SipRequest, source_host: str, policy: AuthPolicy, reliable: bool
) -> Credentials | Answer:
    if source_host not in policy.trusted_proxies:
        return Answer(403, "Not From A Trusted Proxy")
    if not reliable and not policy.trusted_proxy_udp:
        metrics.AUTH_FAILURES.labels("trusted_proxy_udp").inc()
        return UDP_PROXY
    return _asserted(request)


def _asserted(request: SipRequest) -> Credentials | Answer:
    """The identity a trusted proxy asserts (RFC 3325)."""
    for value in request.headers.get_all("P-Asserted-Identity"):
        try:
            uri = parse_name_addr(value).uri
        except SipParseError:
            continue
        if uri.scheme in ("sip", "sips") and uri.user:
            return Credentials(identity=aor_uri(uri.user, uri.host))
    return Answer(403, "No P-Asserted-Identity")
