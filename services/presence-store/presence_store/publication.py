"""RFC 3903 decisions for one PUBLISH, without I/O: what kind of request it is,
which expiry is granted, and what the reply says."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import Enum

from presence.bus.events import PublishRequest
from presence.packages.registry import PACKAGES, ExpiryPolicy
from presence.sip.answers import Answer


class PublishKind(Enum):
    INITIAL = "initial"  # no SIP-If-Match: a new publication (body required)
    REFRESH = "refresh"  # SIP-If-Match, no body: extend the expiry
    MODIFY = "modify"  # SIP-If-Match and a body: replace the document
    REMOVE = "remove"  # SIP-If-Match and Expires: 0


@dataclass(frozen=True)
class Accepted:
    """A request that passed validation: what to do and for how long."""

    kind: PublishKind
    expires: int  # granted seconds (0 for REMOVE)
    body: str | None
    # The device behind the document (presence.pidf.document.device_marks); empty without body.
    marks: frozenset[str] = frozenset()


def new_entity_tag() -> str:
    # 128 random bits: entity tags are capabilities (whoever knows one may modify
    # or remove the publication), so they must not be guessable.
    return secrets.token_urlsafe(16)


def classify(request: PublishRequest, expiry: ExpiryPolicy) -> Accepted | Answer:
    """Validate a PUBLISH and decide its kind and granted expiry (RFC 3903 §6)."""
    has_body = bool(request.body.strip())
    if request.if_match is None and not has_body:
        return Answer(400, "PUBLISH without body or SIP-If-Match")
    if request.expires == 0:
        if request.if_match is None:
            return Answer(400, "Expires 0 without SIP-If-Match")
        return Accepted(PublishKind.REMOVE, 0, None)
    package = PACKAGES[request.event]
    expires = package.expiry_default(expiry) if request.expires is None else request.expires
    if 0 < expires < expiry.min:
        return Answer(423, "Interval Too Brief", [("Min-Expires", str(expiry.min))])
    expires = min(expires, package.expiry_max(expiry))
    if not has_body:
        return Accepted(PublishKind.REFRESH, expires, None)
    content_type = (request.content_type or "").split(";")[0].strip().lower()
    if content_type not in package.publish_types:
        return Answer(415, "Unsupported Media Type", [("Accept", ", ".join(package.publish_types))])
    try:
        document = package.check_body(request.body.encode())
    except ValueError as error:
        return Answer(400, str(error))
    kind = PublishKind.INITIAL if request.if_match is None else PublishKind.MODIFY
    return Accepted(kind, expires, request.body, package.device_marks(document))


def success_reply(entity_tag: str, granted: int, expiry: ExpiryPolicy) -> Answer:
    """200 with the new entity tag. The Expires told to the client is lowered by
    expires_offset (the seed's parameter) so it refreshes before the real expiry."""
    told = max(0, granted - expiry.offset) if granted else 0
    return Answer(200, "OK", [("SIP-ETag", entity_tag), ("Expires", str(told))])


CONDITIONAL_REQUEST_FAILED = Answer(412, "Conditional Request Failed")
