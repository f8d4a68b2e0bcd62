"""XCAP credentials derived from the server secret (presence.xcap_credentials), pure."""

from __future__ import annotations

import base64

from presence.xcap_credentials import (
    Credentials,
    aor_of,
    authorizes,
    parse_authorization,
    password_for,
)

SECRET = "s3cret"
ALICE = "sip:alice@Example.com"


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_aor_drops_the_scheme_and_lowercases_only_the_host() -> None:
    assert aor_of("sip:Alice@Example.COM") == "Alice@example.com"
    assert aor_of("sips:bob@x.org") == "bob@x.org"
    assert aor_of("carol@y.net") == "carol@y.net"


def test_password_depends_on_secret_and_aor_not_on_spelling() -> None:
    assert password_for(SECRET, ALICE) == password_for(SECRET, "alice@example.com")
    assert password_for(SECRET, ALICE) != password_for(SECRET, "sip:bob@example.com")
    assert password_for(SECRET, ALICE) != password_for("other", ALICE)


def test_basic_and_bearer_are_parsed() -> None:
    password = password_for(SECRET, ALICE)
    assert parse_authorization(basic(f"alice@example.com:{password}")) == Credentials(
        "alice@example.com", password
    )
    # The XUI as user name, colon and all (RFC 7617 forbids it; clients do it).
    assert parse_authorization(basic(f"sip:alice@example.com:{password}")) == Credentials(
        "alice@example.com", password
    )
    assert parse_authorization(f"Bearer {password}") == Credentials(None, password)


def test_unreadable_headers_are_no_credentials() -> None:
    for header in (None, "", "Basic", "Basic !!!", basic("no-colon"), "Digest x=1", "Bearer "):
        assert parse_authorization(header) is None


def test_credentials_open_only_their_own_aor() -> None:
    password = password_for(SECRET, ALICE)
    assert authorizes(Credentials("alice@example.com", password), SECRET, ALICE)
    assert authorizes(Credentials(None, password), SECRET, ALICE)
    assert not authorizes(Credentials(None, password), SECRET, "sip:bob@example.com")
    assert not authorizes(Credentials("bob@example.com", password), SECRET, ALICE)
    assert not authorizes(Credentials("alice@example.com", "guess"), SECRET, ALICE)
