"""Who sent a request: the digest check against the credentials table (RFC 3261
§22), the identity rules, and the brute-force brake.

The edge has already challenged requests without credentials and refused stale or
foreign nonces (sip_edge.authentication); what reaches the store carries an
Authorization header with a nonce of ours. Here the response is checked against
the stored HA1, a nonce-count that does not grow is refused as a replay (qop=auth),
and failures are counted in Redis, per account and per source address, each over
auth_block_seconds:

- past auth_max_failures failures of one account (user@realm, from anywhere), that
  account's requests get 403 without a check; other accounts are not affected;
- past auth_max_source_failures failures from one address (any account), that
  address gets 403 without a check. This limit is much higher, because many users
  may share one NAT address and over UDP anyone can spoof failures from it.

Verification never raises on what a client sent: the credentials are read by
presence.sip.digest.parse_credentials (DigestError only, lengths within the
credentials table's columns, no NUL) before the HA1 lookup, and the response is
compared as bytes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg
from redis.asyncio import Redis

from presence.bus import events
from presence.bus.topics import Topics
from presence.runtime import metrics
from presence.runtime.counters import WindowCounter
from presence.settings import Settings
from presence.sip.answers import Answer
from presence.sip.digest import (
    DigestCredentials,
    DigestError,
    challenge_headers,
    parse_credentials,
    response_matches,
)
from presence.sip.grammar import aor_uri, normal_aor, same_aor
from presence.tables import credentials as credentials_table

Request = events.PublishRequest | events.RegisterRequest | events.SubscribeRequest

# The highest nonce-count seen for a nonce, kept as long as the nonce lives: a
# count that does not grow is a replay (RFC 7616 §3.4.6).
_NONCE_COUNT = """
local seen = tonumber(redis.call('get', KEYS[1]) or '-1')
if tonumber(ARGV[1]) <= seen then return 0 end
redis.call('set', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


@dataclass(frozen=True)
class HA1:
    md5: str
    sha256: str

    def of(self, algorithm: str) -> str:
        return self.sha256 if algorithm == "SHA-256" else self.md5


class Authenticator:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self._settings = settings
        self._prefix = Topics.of(settings).lock_prefix + "auth:"
        self._nonce_count = redis.register_script(_NONCE_COUNT)
        self._failures = WindowCounter(redis)

    async def identify(
        self, connection: asyncpg.Connection, request: Request
    ) -> str | Answer | None:
        """The sender's identity ("sip:user@domain"), None when authentication is off,
        or the refusal to send instead of applying the request."""
        settings = self._settings
        if settings.auth == "none":
            return None
        if settings.auth == "trusted-proxy":
            return request.identity or Answer(403, "No Asserted Identity")
        source = source_host(request)
        source_key = f"{self._prefix}failures:source:{source}"
        if await self._failures.count(source_key) >= settings.auth_max_source_failures:
            metrics.AUTH_FAILURES.labels("blocked_source").inc()
            return self._blocked()
        try:
            credentials = parse_credentials(request.authorization or "")
        except DigestError:  # the edge refuses these; this is the backstop
            metrics.AUTH_FAILURES.labels("bad_authorization").inc()
            return Answer(400, "Bad Authorization")
        if credentials.qop is None and settings.auth_require_qop:
            metrics.AUTH_FAILURES.labels("qop_required").inc()
            return self._challenge(credentials)
        if credentials.algorithm not in settings.offered_algorithms:
            metrics.AUTH_FAILURES.labels("algorithm_not_offered").inc()
            return self._challenge(credentials)
        if credentials.uri != request.request_uri:
            metrics.AUTH_FAILURES.labels("bad_authorization").inc()
            return Answer(400, "Digest URI Mismatch")  # RFC 7616 §3.4.6
        account = f"{credentials.username}@{credentials.realm.lower()}"
        account_key = f"{self._prefix}failures:account:{account}"
        if await self._failures.count(account_key) >= settings.auth_max_failures:
            metrics.AUTH_FAILURES.labels("blocked_account").inc()
            return self._blocked()
        stored = await load_ha1(connection, credentials.username, credentials.realm)
        if stored is None or not response_matches(
            credentials, stored.of(credentials.algorithm), method_of(request)
        ):
            for key in (source_key, account_key):
                await self._failures.hit(key, settings.auth_block_seconds)
            metrics.AUTH_FAILURES.labels("bad_credentials").inc()
            return self._challenge(credentials)
        if credentials.qop == "auth" and not await self._fresh_count(credentials):
            metrics.AUTH_FAILURES.labels("replayed_nonce_count").inc()
            return self._challenge(credentials, stale=True)
        return aor_uri(credentials.username, credentials.realm)

    def _blocked(self) -> Answer:
        retry = [("Retry-After", str(self._settings.auth_block_seconds))]
        return Answer(403, "Too Many Failed Authentications", retry)

    async def _fresh_count(self, credentials: DigestCredentials) -> bool:
        key = f"{self._prefix}nc:{credentials.realm}:{credentials.username}:{credentials.nonce}"
        ttl = 2 * self._settings.auth_nonce_ttl
        return bool(await self._nonce_count(keys=[key], args=[credentials.nonce_count, ttl]))

    def _challenge(self, credentials: DigestCredentials, stale: bool = False) -> Answer:
        headers = challenge_headers(
            self._settings.auth_secret,
            credentials.realm.lower(),
            time.time(),
            stale,
            self._settings.offered_algorithms,
        )
        return Answer(401, "Unauthorized", headers)


def may_act_for(identity: str | None, aor: str, publish_for_others: Iterable[str]) -> bool:
    """Whether the sender may PUBLISH or REGISTER for `aor` (user@domain): its own,
    or anyone's when it is one of `publish_for_others` (PRESENCE_PUBLISH_FOR_OTHERS's
    items: a gateway, a PBX)."""
    if identity is None:
        return True  # authentication is off
    user, _, host = aor.rpartition("@")
    if same_aor(identity, user, host):
        return True
    own = normal_aor(identity)
    return own is not None and any(normal_aor(other) == own for other in publish_for_others)


def method_of(request: Request) -> str:
    return request.TYPE.upper()


def source_host(request: Request) -> str:
    """The sender's address, from the flow ("udp:203.0.113.5:5060", "tcp:[::1]:5060")."""
    host = request.flow.partition(":")[2].rpartition(":")[0]
    return host.strip("[]") or "unknown"


async def load_ha1(connection: asyncpg.Connection, username: str, realm: str) -> HA1 | None:
    stored = await credentials_table.load_ha1(connection, username, realm.lower())
    return None if stored is None else HA1(*stored)
