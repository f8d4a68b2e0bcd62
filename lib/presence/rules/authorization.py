"""What a watcher may see of a presentity: the subscription's state from the
presentity's pres-rules (RFC 5025), and the document filtered for that watcher.
Pure; the callers load the rules document from the XCAP table."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from presence.rules import Decision, RulesError, evaluate, filter_document, parse_rules
from presence.rules import polite_block_document as polite_document
from presence.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    status: str  # "active", "pending" or "terminated"
    reason: str | None = None  # of a terminated subscription: "rejected"
    decision: Decision | None = None  # None: everything is allowed (force_active)

    @property
    def polite_block(self) -> bool:
        return self.decision is not None and self.decision.sub_handling == "polite-block"


def watcher_identity(user: str, domain: str) -> str:
    """The watcher as pres-rules and winfo see it, from active_watchers' from_user and
    from_domain: the authenticated identity (or, without authentication, From)."""
    return f"sip:{user}@{domain}" if user else f"sip:{domain}"


def judge(
    rules_document: str | None,
    watcher: str,
    settings: Settings,
    now: datetime,
    *,
    sphere: str | None = None,
) -> Verdict:
    """The state a subscription of `watcher` gets (the seed's force_active, then RFC 5025):
    allow and polite-block -> active (polite-block sees a neutral document), block ->
    terminated (rejected), confirm, no rule matching and no document -> pending.
    `sphere` is the presentity's current one (presence.pidf.document.current_sphere), for
    rules with sphere conditions; None matches none of them."""
    if settings.force_active:
        return Verdict("active")
    if rules_document is None:
        return Verdict("pending")
    try:
        rules = parse_rules(rules_document.encode())
    except RulesError as error:
        log.warning("unusable pres-rules document (%s): subscriptions stay pending", error)
        return Verdict("pending")
    decision = evaluate(rules, watcher, sphere=sphere, now=now.astimezone(UTC))
    if decision.sub_handling in ("allow", "polite-block"):
        return Verdict("active", decision=decision)
    if decision.sub_handling == "block":
        return Verdict("terminated", "rejected", decision)
    return Verdict("pending", decision=decision)


def watcher_document(document: bytes, entity: str, verdict: Verdict, settings: Settings) -> bytes:
    """The aggregated document as this watcher may see it."""
    if verdict.decision is None:
        return document
    if verdict.polite_block:
        return polite_document(entity)
    default = "kamailio" if settings.transformation_default == "kamailio" else "rfc5025"
    return filter_document(
        document,
        verdict.decision.transformations,
        default=default,
        max_bytes=settings.max_document_bytes,
    )
