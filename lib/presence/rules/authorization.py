"""What a watcher may see of a presentity: the subscription's state from the
presentity's pres-rules (RFC 5025), and the document filtered for that watcher.
Pure; the callers load the rules document from the XCAP table."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from presence.rules import Decision, Rule, RulesError, evaluate, filter_document, parse_rules
from presence.rules import polite_block_document as polite_document

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


@dataclass(frozen=True)
class AuthorizationPolicy:
    """What the configuration says about what watchers may see: the seed's
    force_active, PRESENCE_TRANSFORMATION_DEFAULT and PRESENCE_MAX_DOCUMENT_BYTES
    (Settings.authorization_policy builds it once)."""

    force_active: bool
    transformation_default: str  # "rfc5025" or "kamailio"
    max_document_bytes: int


class Judge:
    """One presentity's pres-rules at one moment, parsed once, judging any number of
    watchers: a change notified to N watchers parses the document once, and watchers
    with one identity share one verdict."""

    def __init__(
        self,
        rules_document: str | None,
        policy: AuthorizationPolicy,
        now: datetime,
        *,
        sphere: str | None = None,
    ) -> None:
        self.policy = policy
        self._document = rules_document
        self._now = now.astimezone(UTC)
        self._sphere = sphere
        self._verdicts: dict[str, Verdict] = {}
        self._parsed = False
        self._rules: tuple[Rule, ...] | None = None  # None: no usable document

    def _ruleset(self) -> tuple[Rule, ...] | None:
        # Parsed at the first verdict, so a page nobody is judged for parses nothing.
        if not self._parsed and self._document is not None:
            try:
                self._rules = parse_rules(self._document.encode())
            except RulesError as error:
                log.warning("unusable pres-rules document (%s): subscriptions stay pending", error)
        self._parsed = True
        return self._rules

    def verdict(self, watcher: str) -> Verdict:
        """The state a subscription of `watcher` gets (see judge)."""
        if self.policy.force_active:
            return Verdict("active")
        rules = self._ruleset()
        if rules is None:
            return Verdict("pending")
        verdict = self._verdicts.get(watcher)
        if verdict is None:
            decision = evaluate(rules, watcher, sphere=self._sphere, now=self._now)
            if decision.sub_handling in ("allow", "polite-block"):
                verdict = Verdict("active", decision=decision)
            elif decision.sub_handling == "block":
                verdict = Verdict("terminated", "rejected", decision)
            else:
                verdict = Verdict("pending", decision=decision)
            self._verdicts[watcher] = verdict
        return verdict


def judge(
    rules_document: str | None,
    watcher: str,
    policy: AuthorizationPolicy,
    now: datetime,
    *,
    sphere: str | None = None,
) -> Verdict:
    """The state a subscription of `watcher` gets (the seed's force_active, then RFC 5025):
    allow and polite-block -> active (polite-block sees a neutral document), block ->
    terminated (rejected), confirm, no rule matching and no document -> pending.
    `sphere` is the presentity's current one (presence.pidf.document.current_sphere), for
    rules with sphere conditions; None matches none of them. Judging many watchers of
    one presentity: Judge, which parses the document once."""
    return Judge(rules_document, policy, now, sphere=sphere).verdict(watcher)


def watcher_document(
    document: bytes, entity: str, verdict: Verdict, policy: AuthorizationPolicy
) -> bytes:
    """The aggregated document as this watcher may see it."""
    if verdict.decision is None:
        return document
    if verdict.polite_block:
        return polite_document(entity)
    default = "kamailio" if policy.transformation_default == "kamailio" else "rfc5025"
    return filter_document(
        document,
        verdict.decision.transformations,
        default=default,
        max_bytes=policy.max_document_bytes,
    )
