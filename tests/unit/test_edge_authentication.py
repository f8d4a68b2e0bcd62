"""What the edge decides about a request's sender before the bus (sip_edge.authentication)."""

from __future__ import annotations

from presence.settings import load
from presence.sip.answers import Answer
from presence.sip.digest import make_nonce
from presence.sip.parser import parse_message
from sip_edge.authentication import Credentials, authenticate
from sip_edge.policy import AuthPolicy

SECRET = "nonce-secret-for-unit-tests"
NOW = 1_000_000.0
DIGEST = AuthPolicy.of(load({"PRESENCE_AUTH": "digest", "PRESENCE_AUTH_SECRET": SECRET}))


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
        f'uri="sip:alice@example.com", response="{"0" * 32}", algorithm=MD5, qop=auth, '
        'nc=00000001, cnonce="c"'
    )


def test_without_authentication_everyone_passes() -> None:
    assert authenticate(
        publish(), "192.0.2.1", AuthPolicy.of(load({"PRESENCE_AUTH": "none"})), NOW, reliable=False
    ) == (Credentials())


def test_no_credentials_get_a_challenge_per_algorithm_for_the_from_domain() -> None:
    answer = authenticate(publish(), "192.0.2.1", DIGEST, NOW, reliable=False)
    assert isinstance(answer, Answer) and answer.status == 401
    values = [value for name, value in answer.headers if name == "WWW-Authenticate"]
    assert [v.split("algorithm=")[1].split(",")[0] for v in values] == ["SHA-256", "MD5"]
    assert all('realm="example.com"' in v and "stale" not in v for v in values)


def test_credentials_with_our_fresh_nonce_go_on_to_the_store() -> None:
    header = credentials(make_nonce(SECRET, "example.com", NOW - 10))
    decided = authenticate(publish(header), "192.0.2.1", DIGEST, NOW, reliable=False)
    assert decided == Credentials(authorization=header.split(": ", 1)[1])


def test_old_nonce_is_stale_and_a_foreign_one_is_challenged_afresh() -> None:
    old = authenticate(
        publish(credentials(make_nonce(SECRET, "example.com", NOW - 301))),
        "h",
        DIGEST,
        NOW,
        reliable=False,
    )
    assert isinstance(old, Answer) and old.status == 401
    assert all("stale=true" in value for _, value in old.headers)
    forged = authenticate(
        publish(credentials(make_nonce("other", "example.com", NOW))),
        "h",
        DIGEST,
        NOW,
        reliable=False,
    )
    assert isinstance(forged, Answer) and forged.status == 401
    assert not any("stale" in value for _, value in forged.headers)


def test_credentials_for_another_realm_are_not_ours() -> None:
    header = credentials(make_nonce(SECRET, "other.org", NOW), realm="other.org")
    answer = authenticate(publish(header), "192.0.2.1", DIGEST, NOW, reliable=False)
    assert isinstance(answer, Answer) and answer.status == 401


TRUSTED = AuthPolicy.of(
    load({"PRESENCE_AUTH": "trusted-proxy", "PRESENCE_TRUSTED_PROXIES": "192.0.2.7"})
)


def test_trusted_proxy_identity_comes_from_p_asserted_identity() -> None:
    asserted = publish('P-Asserted-Identity: "Bob" <sip:bob@Example.com>, <tel:+15551234>')
    assert authenticate(asserted, "192.0.2.7", TRUSTED, NOW, reliable=True) == Credentials(
        identity="sip:bob@example.com"
    )
    only_tel = publish("P-Asserted-Identity: <tel:+15551234>")
    refused = authenticate(only_tel, "192.0.2.7", TRUSTED, NOW, reliable=True)
    assert isinstance(refused, Answer) and refused.status == 403
    elsewhere = authenticate(asserted, "192.0.2.8", TRUSTED, NOW, reliable=False)
    assert isinstance(elsewhere, Answer) and elsewhere.status == 403


def test_trusted_proxy_over_udp_is_refused_unless_allowed() -> None:
    asserted = publish("P-Asserted-Identity: <sip:bob@example.com>")
    refused = authenticate(asserted, "192.0.2.7", TRUSTED, NOW, reliable=False)
    assert refused == Answer(403, "Trusted Proxy Must Use TCP")
    allowed = AuthPolicy.of(
        load(
            {
                "PRESENCE_AUTH": "trusted-proxy",
                "PRESENCE_TRUSTED_PROXIES": "192.0.2.7",
                "PRESENCE_TRUSTED_PROXY_UDP": "1",
            }
        )
    )
    assert authenticate(asserted, "192.0.2.7", allowed, NOW, reliable=False) == Credentials(
        identity="sip:bob@example.com"
    )


def test_a_proxy_with_a_verified_client_certificate_is_trusted_from_anywhere() -> None:
    asserted = publish("P-Asserted-Identity: <sip:bob@example.com>")
    mutual = authenticate(asserted, "203.0.113.9", TRUSTED, NOW, reliable=True, verified_peer=True)
    assert mutual == Credentials(identity="sip:bob@example.com")
    unasserted = authenticate(publish(), "203.0.113.9", TRUSTED, NOW, reliable=True,
                              verified_peer=True)  # fmt: skip
    assert unasserted == Answer(403, "No P-Asserted-Identity")
    stranger = authenticate(asserted, "203.0.113.9", TRUSTED, NOW, reliable=True)
    assert stranger == Answer(403, "Not From A Trusted Proxy")


def test_malformed_credentials_get_400_and_unsupported_ones_a_challenge() -> None:
    nonce = make_nonce(SECRET, "example.com", NOW)
    good = credentials(nonce).split(": ", 1)[1]
    for bad in (
        good.replace('username="alice"', 'username="al\x00ice"'),
        good.replace('username="alice"', 'username="alice", username="bob"'),
        good.replace('"' + "0" * 32 + '"', '"' + "\u00e9" * 32 + '"'),
        good.replace('username="alice"', 'username="' + "a" * 65 + '"'),
        good.replace('realm="example.com", ', ""),
    ):
        answer = authenticate(publish("Authorization: " + bad), "h", DIGEST, NOW, reliable=False)
        assert answer == Answer(400, "Bad Authorization"), bad
    for unsupported in (
        good.replace("algorithm=MD5", "algorithm=SHA-512-256"),
        good.replace("qop=auth", "qop=auth-int"),
        good.split(", qop=")[0],  # RFC 2069: no qop, no nonce-count
    ):
        header = "Authorization: " + unsupported
        answer = authenticate(publish(header), "h", DIGEST, NOW, reliable=False)
        assert isinstance(answer, Answer) and answer.status == 401, unsupported


def test_without_qop_is_accepted_when_not_required() -> None:
    old_phones = AuthPolicy.of(
        load(
            {
                "PRESENCE_AUTH": "digest",
                "PRESENCE_AUTH_SECRET": SECRET,
                "PRESENCE_AUTH_REQUIRE_QOP": "0",
            }
        )
    )
    header = credentials(make_nonce(SECRET, "example.com", NOW)).split(", qop=")[0]
    decided = authenticate(publish(header), "h", old_phones, NOW, reliable=False)
    assert decided == Credentials(authorization=header.split(": ", 1)[1])
