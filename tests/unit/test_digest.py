"""SIP digest authentication computations and stateless nonces (presence.sip.digest)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from presence import column_limits
from presence.sip.digest import (
    DigestCredentials,
    DigestError,
    DigestUnsupported,
    challenge,
    ha1,
    make_nonce,
    nonce_age,
    parse_credentials,
    response_matches,
)
from presence.sip.text_rules import has_control


def test_rfc2617_example_response() -> None:
    # RFC 2617 §3.5 (MD5, qop=auth).
    credentials = DigestCredentials(
        username="Mufasa", realm="testrealm@host.com",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html",
        response="6629fae49393a05397450978507c4ef1", algorithm="MD5", qop="auth",
        nc="00000001", cnonce="0a4f113b",
    )  # fmt: skip
    secret = ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    assert response_matches(credentials, secret, "GET")
    assert not response_matches(credentials, secret, "POST")


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_example_responses(algorithm: str, response: str) -> None:
    # RFC 7616 §3.9.1, the same request under both algorithms (RFC 8760 for SIP).
    credentials = DigestCredentials(
        username="Mufasa", realm="http-auth@example.org",
        nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", uri="/dir/index.html",
        response=response, algorithm=algorithm, qop="auth", nc="00000001",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )  # fmt: skip
    secret = ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    assert response_matches(credentials, secret, "GET")


def test_nonces_are_recognised_aged_and_bound_to_realm_and_secret() -> None:
    nonce = make_nonce("s", "example.com", now=1_000)
    assert nonce_age("s", "example.com", nonce, now=1_030) == 30
    assert nonce_age("s", "other.com", nonce, now=1_030) is None
    assert nonce_age("other", "example.com", nonce, now=1_030) is None
    assert nonce_age("s", "example.com", nonce[:-2] + "AA", now=1_030) is None
    assert nonce_age("s", "example.com", "!!!", now=1_030) is None


def test_parse_credentials_with_quotes_escapes_and_token_values() -> None:
    value = (
        'Digest username="ali\\"ce", realm="example.com", nonce="abc", '
        'uri="sip:alice@example.com", response="0123ABCD' + "0" * 56 + '", algorithm=SHA-256, '
        'qop=auth, nc=0000000a, cnonce="xyz"'
    )
    credentials = parse_credentials(value)
    assert credentials.username == 'ali"ce'
    assert credentials.algorithm == "SHA-256" and credentials.response == "0123abcd" + "0" * 56
    assert credentials.nonce_count == 10


@pytest.mark.parametrize(
    "value",
    [
        "Basic YWxpY2U6eA==",
        'Digest username="a", realm="r", nonce="n", uri="u"',  # no response
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", algorithm=SHA-512',
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth',  # no nc
        'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth-int, '
        'nc=00000001, cnonce="c"',
        'Digest username="a" realm',
    ],
)
def test_unreadable_credentials_are_refused(value: str) -> None:
    with pytest.raises(DigestError):
        parse_credentials(value)


def test_challenge_offers_qop_auth_and_says_stale() -> None:
    assert challenge("example.com", "n1", "SHA-256") == (
        'Digest realm="example.com", nonce="n1", algorithm=SHA-256, qop="auth"'
    )
    assert challenge("example.com", "n1", "MD5", stale=True).endswith(", stale=true")


# Digest parameters as clients write them, and as attackers do: any text, quoted or not.
_NAMES = st.sampled_from(
    ["username", "realm", "nonce", "uri", "response", "algorithm", "qop", "nc", "cnonce", "x"]
)
_VALUES = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="0123456789abcdefABCDEF", min_size=8, max_size=64),
    st.sampled_from(["MD5", "SHA-256", "auth", "00000001", "\x00", "\u00e9", '"', "\\"]),
)
_GOOD = {
    "username": "alice",
    "realm": "example.com",
    "nonce": "abc",
    "uri": "sip:alice@example.com",
    "response": "0" * 32,
    "qop": "auth",
    "nc": "00000001",
    "cnonce": "c",
}
_AUTHORIZATION = st.one_of(
    st.text(max_size=300),
    # A good value with some parameters replaced (most reach the response check).
    st.dictionaries(_NAMES, _VALUES, max_size=3).map(
        lambda changed: "Digest " + ", ".join(f'{n}="{v}"' for n, v in {**_GOOD, **changed}.items())
    ),
    st.lists(st.tuples(_NAMES, _VALUES, st.booleans()), max_size=12).map(
        lambda params: (
            "Digest " + ", ".join(f'{n}="{v}"' if quoted else f"{n}={v}" for n, v, quoted in params)
        )
    ),
)


@given(_AUTHORIZATION, st.text(max_size=64), st.sampled_from(["PUBLISH", "SUBSCRIBE"]))
def test_verification_never_raises(value: str, stored_ha1: str, method: str) -> None:
    """Whatever a client writes: DigestError or credentials whose fields the
    credentials table can be searched with, and a response check that answers."""
    try:
        credentials = parse_credentials(value)
    except DigestError:
        return
    for field in (credentials.username, credentials.realm, credentials.nonce, credentials.uri):
        assert field.isascii() and not has_control(field)
    assert len(credentials.username) <= column_limits.USER.length
    assert len(credentials.realm) <= column_limits.DOMAIN.length
    assert response_matches(credentials, stored_ha1, method) in (True, False)
    if credentials.qop == "auth":
        assert 0 <= credentials.nonce_count < 2**32


@pytest.mark.parametrize(
    "value",
    [
        'Digest username="al\x00ice", realm="r", nonce="n", uri="u", response="' + "0" * 32 + '"',
        'Digest username="a", realm="r", nonce="n", uri="u", response="' + "\u00e9" * 32 + '"',
        'Digest username="a", username="b", realm="r", nonce="n", uri="u", response="'
        + "0" * 32
        + '"',
        'Digest username="'
        + "a" * 65
        + '", realm="r", nonce="n", uri="u", response="'
        + "0" * 32
        + '"',
        'Digest username="a", realm="r", nonce="n", uri="u", response="' + "0" * 31 + '"',
    ],
)
def test_malformed_credentials_are_digest_errors_not_unsupported(value: str) -> None:
    with pytest.raises(DigestError) as raised:
        parse_credentials(value)
    assert not isinstance(raised.value, DigestUnsupported)
