"""A watcher's state from the presentity's pres-rules (presence.rules.authorization),
and a change's rules parsed once for all its watchers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from presence.rules import authorization
from presence.rules.authorization import AuthorizationPolicy, Judge, judge
from presence.settings import load
from presence.subscriptions.notify import Subscription
from presence.tables.notify_views import as_seen_by

ENTITY = "sip:alice@example.com"
NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
POLICY = load({}).authorization_policy
RULES = """<?xml version="1.0" encoding="UTF-8"?>
<cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy"
            xmlns:pr="urn:ietf:params:xml:ns:pres-rules">
  <cr:rule id="friends">
    <cr:conditions><cr:identity><cr:one id="sip:bob@example.com"/></cr:identity></cr:conditions>
    <cr:actions><pr:sub-handling>allow</pr:sub-handling></cr:actions>
    <cr:transformations><pr:provide-services><pr:all-services/></pr:provide-services>
    </cr:transformations>
  </cr:rule>
  <cr:rule id="pest">
    <cr:conditions><cr:identity><cr:one id="sip:mallory@example.com"/></cr:identity>
    </cr:conditions>
    <cr:actions><pr:sub-handling>block</pr:sub-handling></cr:actions>
  </cr:rule>
</cr:ruleset>"""
PIDF = (
    f'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{ENTITY}">'
    '<tuple id="t"><status><basic>open</basic></status></tuple></presence>'
).encode()


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """Every pres-rules document the authorization module parses."""
    parsed: list[bytes] = []
    real: Callable[[bytes], object] = authorization.parse_rules

    def counting(body: bytes) -> object:
        parsed.append(body)
        return real(body)

    monkeypatch.setattr(authorization, "parse_rules", counting)
    yield parsed


def test_the_policy_comes_from_the_settings_once() -> None:
    settings = load({"PRESENCE_FORCE_ACTIVE": "1", "PRESENCE_TRANSFORMATION_DEFAULT": "kamailio"})
    assert settings.authorization_policy == AuthorizationPolicy(
        force_active=True, transformation_default="kamailio", max_document_bytes=61440
    )
    assert settings.authorization_policy is settings.authorization_policy
    assert settings.document_policy.authorization is settings.authorization_policy


def test_verdicts_from_the_rules() -> None:
    assert judge(RULES, "sip:bob@example.com", POLICY, NOW).status == "active"
    assert judge(RULES, "sip:mallory@example.com", POLICY, NOW).reason == "rejected"
    assert judge(RULES, "sip:carol@example.com", POLICY, NOW).status == "pending"
    assert judge(None, "sip:bob@example.com", POLICY, NOW).status == "pending"
    assert judge("<not-rules/>", "sip:bob@example.com", POLICY, NOW).status == "pending"
    forced = AuthorizationPolicy(True, "rfc5025", 61440)
    assert judge(None, "sip:carol@example.com", forced, NOW).status == "active"


def test_one_judge_parses_the_rules_once_for_every_watcher(parses: list[bytes]) -> None:
    rules = Judge(RULES, POLICY, NOW)
    watchers = [f"sip:w{n}@example.com" for n in range(50)] + ["sip:bob@example.com"] * 3
    verdicts = [rules.verdict(watcher) for watcher in watchers]
    assert len(parses) == 1
    assert [v.status for v in verdicts[-3:]] == ["active"] * 3
    assert verdicts[-1] is verdicts[-2]  # one identity, one verdict
    assert {v.status for v in verdicts[:50]} == {"pending"}


def test_a_judge_parses_nothing_it_is_not_asked_for(parses: list[bytes]) -> None:
    Judge(RULES, POLICY, NOW)
    forced = Judge(RULES, AuthorizationPolicy(True, "rfc5025", 61440), NOW)
    assert forced.verdict("sip:carol@example.com").status == "active"
    assert parses == []


def subscription(n: int, user: str) -> Subscription:
    return Subscription(
        n, "alice", "example.com", "presence", None, f"tt{n}", "ft", "c", 1, 1, "sip:w@h", None,
        2**40, "active", None, ENTITY, f"sip:{user}@example.com", user, "example.com", "udp:h",
        "e",
    )  # fmt: skip


def test_a_notify_page_parses_the_rules_once_for_its_watchers(parses: list[bytes]) -> None:
    """The notifier's view of a change (presence.tables.notify_views.state_view) makes
    one Judge per page of subscriptions; each watcher's document is filtered by it."""
    policy = load({}).document_policy
    rules = Judge(RULES, policy.authorization, NOW)
    page = [subscription(n, "bob" if n % 2 else f"w{n}") for n in range(20)]
    shown = [as_seen_by(policy, s, PIDF, ENTITY, rules) for s in page]
    assert len(parses) == 1
    assert all(b'<tuple id="t">' in body for body in shown[1::2])  # bob: allowed
    assert all(b"<tuple" not in body for body in shown[0::2])  # the others: pending
