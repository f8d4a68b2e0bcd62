"""What the edge decides about a request's sender before the bus (sip_edge.authentication)."""

from __future__ import annotations

from presence.settings import load
from presence.sip.digest import make_nonce
from presence.sip.parser import parse_message
from sip_edge.authentication import Credentials, authenticate
from sip_edge.checks import LocalAnswer

SECRET = "nonce-secret-for-unit-tests"
NOW = 1_000_000.0
DIGEST = load({"PRESENCE_AUTH": "digest", "PRESENCE_AUTH_SECRET": SECRET})


def publish(*headers: str) -> object:
    lines = [
        "PUBLISH sip:alice@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1",
        "From: <sip:alice@Example.com>;tag=1",
        "To: <sip:alice@example.com>",
        "Call-ID: c",
        "CSeq: 1 PUBLISH",
        *headers,
        "Content-Length: 0",
        "",
        "",
    ]
    return parse_message("\r\n".join(lines).encode())


def credentials(nonce: str, realm: str = "example.com") -> str:
    return (
        f'Authorization: Digest username="alice", realm="{realm}", nonce="{nonce}", '
        'uri="sip:alice@example.com", response="00", algorithm=MD5'
    )


def test_without_authentication_everyone_passes() -> None:
    assert authenticate(publish(), "192.0.2.1", load({"PRESENCE_AUTH": "none"}), NOW) == (
        Credentials()
    )


def test_no_credentials_get_a_challenge_per_algorithm_for_the_from_domain() -> None:
    answer = authenticate(publish(), "192.0.2.1", DIGEST, NOW)
    assert isinstance(answer, LocalAnswer) and answer.status == 401
    values = [value for name, value in answer.headers if name == "WWW-Authenticate"]
    assert [v.split("algorithm=")[1].split(",")[0] for v in values] == ["SHA-256", "MD5"]
    assert all('realm="example.com"' in v and "stale" not in v for v in values)


def test_credentials_with_our_fresh_nonce_go_on_to_the_store() -> None:
    header = credentials(make_nonce(SECRET, "example.com", NOW - 10))
    decided = authenticate(publish(header), "192.0.2.1", DIGEST, NOW)
    assert decided == Credentials(authorization=header.split(": ", 1)[1])


def test_old_nonce_is_stale_and_a_foreign_one_is_challenged_afresh() -> None:
    old = authenticate(
        publish(credentials(make_nonce(SECRET, "example.com", NOW - 301))), "h", DIGEST, NOW
    )
    assert isinstance(old, LocalAnswer) and old.status == 401
    assert all("stale=true" in value for _, value in old.headers)
    forged = authenticate(
        publish(credentials(make_nonce("other", "example.com", NOW))), "h", DIGEST, NOW
    )
    assert isinstance(forged, LocalAnswer) and forged.status == 401
    assert not any("stale" in value for _, value in forged.headers)


def test_credentials_for_another_realm_are_not_ours() -> None:
    header = credentials(make_nonce(SECRET, "other.org", NOW), realm="other.org")
    answer = authenticate(publish(header), "192.0.2.1", DIGEST, NOW)
    assert isinstance(answer, LocalAnswer) and answer.status == 401


TRUSTED = load({"PRESENCE_AUTH": "trusted-proxy", "PRESENCE_TRUSTED_PROXIES": "192.0.2.7"})


def test_trusted_proxy_identity_comes_from_p_asserted_identity() -> None:
    asserted = publish('P-Asserted-Identity: "Bob" <sip:bob@Example.com>, <tel:+15551234>')
    assert authenticate(asserted, "192.0.2.7", TRUSTED, NOW) == Credentials(
        identity="sip:bob@example.com"
    )
    only_tel = publish("P-Asserted-Identity: <tel:+15551234>")
    refused = authenticate(only_tel, "192.0.2.7", TRUSTED, NOW)
    assert isinstance(refused, LocalAnswer) and refused.status == 403
    elsewhere = authenticate(asserted, "192.0.2.8", TRUSTED, NOW)
    assert isinstance(elsewhere, LocalAnswer) and elsewhere.status == 403
