"""One comparison of addresses-of-record for every check (presence.sip.message):
publishing for an AOR, owning a watcher list or a subscription, XCAP passwords."""

from __future__ import annotations

from presence.settings import load
from presence.sip.grammar import aor_uri, normal_aor, parse_uri, same_aor
from presence.xcap.credentials import aor_of
from presence_store.authentication import may_act_for


def test_user_parts_are_unescaped_and_case_sensitive_hosts_are_not() -> None:
    assert same_aor("sip:al%69ce@Example.COM", "alice", "example.com")
    assert same_aor("sips:alice@example.com;transport=tcp", "alice", "EXAMPLE.com")
    assert not same_aor("sip:Alice@example.com", "alice", "example.com")
    assert not same_aor("not a uri", "alice", "example.com")


def test_every_check_agrees() -> None:
    others = load({"PRESENCE_PUBLISH_FOR_OTHERS": "pbx@example.com"}).publish_for_others.split(",")
    for identity, target, same in (
        ("sip:alice@example.com", "alice@example.com", True),
        ("sip:al%69ce@EXAMPLE.com", "alice@example.com", True),
        ("sip:Alice@example.com", "alice@example.com", False),
    ):
        user, _, host = target.rpartition("@")
        assert may_act_for(identity, target, others) is same
        assert same_aor(identity, user, host) is same
        assert (aor_of(identity) == aor_of(f"sip:{target}")) is same
        assert (normal_aor(identity) == target) is same
    assert may_act_for("sip:pbx@EXAMPLE.COM", "alice@example.com", others)


def test_identities_are_written_escaped_and_read_back_unescaped() -> None:
    uri = aor_uri("a b", "Example.com")
    assert uri == "sip:a%20b@example.com"
    assert parse_uri(uri).user == "a b"
    assert same_aor(uri, "a b", "example.com")
