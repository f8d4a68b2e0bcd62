"""Presence authorization rules (RFC 4745 common-policy, RFC 5025 pres-rules). Pure, no I/O.

``policy`` parses a pres-rules document and decides, for one watcher, which rules
match and what they grant together (a ``Decision``); ``transform`` applies that
grant to a PIDF document. Typical use::

    ruleset = parse_rules(xcap_document)
    decision = evaluate(ruleset, watcher_uri, sphere=None, now=datetime.now(UTC))
    if decision.sub_handling == "allow":
        body = filter_document(pidf, decision.transformations)
    elif decision.sub_handling == "polite-block":
        body = polite_block_document(entity)

``block`` terminates the subscription, ``confirm`` leaves it pending, and ``None``
(no rule matched) is the application's call: RFC 5025 makes ``block`` the lowest
value, Kamailio and OMA deployments treat it as ``confirm`` (pending).
"""

from presence.rules.policy import (
    SUB_HANDLING_VALUES,
    ComponentGrant,
    Decision,
    Rule,
    RulesError,
    Transformations,
    UserInputLevel,
    evaluate,
    parse_rules,
)
from presence.rules.transform import filter_document, polite_block_document

__all__ = [
    "SUB_HANDLING_VALUES",
    "ComponentGrant",
    "Decision",
    "Rule",
    "RulesError",
    "Transformations",
    "UserInputLevel",
    "evaluate",
    "filter_document",
    "parse_rules",
    "polite_block_document",
]
