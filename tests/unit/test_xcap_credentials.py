"""XCAP credentials derived from the server secret (presence.xcap.credentials), pure."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from presence.xcap.credentials import (
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


def test_headers_that_are_not_ascii_or_hold_control_characters_are_no_credentials() -> None:
    password = password_for(SECRET, ALICE)
    for header in (
        "Basic ééé",  # Latin-1 letters where base64 belongs (how a server decodes bytes)
        "Bearer " + password + "é",
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),  # not UTF-8 once decoded
        basic("ali\x00ce@example.com:" + password),  # NUL once decoded
        "Bearer a\x00b",
        "Basic " + "A" * 4096,
    ):
        assert parse_authorization(header) is None, header


def test_a_password_that_is_not_ascii_is_refused_not_an_error() -> None:
    assert not authorizes(Credentials("alice@example.com", "pässword"), SECRET, ALICE)
    assert not authorizes(Credentials(None, "\udcff"), SECRET, ALICE)


@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_reading_and_checking_any_header_never_raises(header: str) -> None:
    for candidate in (header, "Basic " + header, "Bearer " + header):
        credentials = parse_authorization(candidate)
        if credentials is not None:
            authorizes(credentials, SECRET, ALICE)


@given(st.text(max_size=60), st.text(max_size=60))
def test_any_decoded_basic_value_is_read_or_refused_without_raising(user: str, pw: str) -> None:
    header = "Basic " + base64.b64encode(f"{user}:{pw}".encode("utf-8", "surrogatepass")).decode()
    credentials = parse_authorization(header)
    if credentials is not None:
        authorizes(credentials, SECRET, ALICE)
