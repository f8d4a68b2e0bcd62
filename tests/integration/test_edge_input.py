"""Input the store could not store or judge is refused by the edge, at once, over
real sockets: control characters, non-ASCII outside quoted strings, digits, quotes
and brackets, every length a column bounds, malformed digest credentials. A bad
request costs nobody else anything: the next user's PUBLISH is answered 200.
Also: qop=auth required, per-account and per-source authentication brakes, the
trusted proxy over UDP, and in-dialog refreshes tied to the authenticated watcher."""

from __future__ import annotations

import secrets
import urllib.request
from collections.abc import Iterator

import pytest

from presence.sip.digest import ha1, hash_hex
from presence.sip.message import SipResponse

from .conftest import Stack, running_stack
from .sip_client import SipClient
from .test_authentication import (
    AUTH_SECRET,
    DOMAIN,
    authorization,
    challenges,
    new_user,
    publish,
    subscribe_as,
)
from .test_subscribe import WatcherDialog, pidf

pytestmark = pytest.mark.integration

# Small brakes, so the tests reach them: 3 failures per account, 8 per source.
MAX_ACCOUNT_FAILURES = 3
MAX_SOURCE_FAILURES = 8


@pytest.fixture(scope="module")
def edge_stack(test_database: str) -> Iterator[Stack]:
    with running_stack(
        test_database,
        PRESENCE_AUTH="digest",
        PRESENCE_AUTH_SECRET=AUTH_SECRET,
        PRESENCE_FORCE_ACTIVE="1",
        PRESENCE_AUTH_MAX_FAILURES=str(MAX_ACCOUNT_FAILURES),
        PRESENCE_AUTH_MAX_SOURCE_FAILURES=str(MAX_SOURCE_FAILURES),
        PRESENCE_AUTH_BLOCK_SECONDS="600",
    ) as stack:
        yield stack


def edge_metric(stack: Stack, name: str) -> dict[str, float]:
    with urllib.request.urlopen(stack.http("sip-edge", "/metrics"), timeout=10) as answer:
        text = answer.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line[len(name) + 1 :].partition("} ")
            samples[labels] = float(value)
    return samples


def raw_publish(client: SipClient, presentity: str, *, replace: tuple[bytes, bytes] | None = None,
                headers: list[tuple[str, str]] | None = None, call_id: str | None = None,
                from_tag: str | None = None) -> bytes:  # fmt: skip
    """A PUBLISH's bytes, with one byte string replaced (for what the template cannot write)."""
    data = client.request(
        "PUBLISH",
        presentity,
        [("Event", "presence"), ("Content-Type", "application/pidf+xml"), *(headers or [])],
        pidf(presentity, "open"),
        from_uri=presentity,
        call_id=call_id,
        from_tag=from_tag,
    )
    if replace is not None:
        assert replace[0] in data
        data = data.replace(replace[0], replace[1], 1)
    return data


ALICE = f"sip:alice@{DOMAIN}"
# (what is wrong, how the request is changed, the reason phrase of the 400)
REFUSALS: list[tuple[str, dict[str, object], str]] = [
    ("NUL in Call-ID", {"call_id": "abc\x00def"}, "Bad Call-ID"),
    ("C0 in a header", {"headers": [("Subject", "hi\x01there")]}, "Bad Subject"),
    ("DEL in From", {"replace": (b"From: <", b'From: "a\x7f" <')}, "Bad From"),
    (
        "NUL in Authorization",
        {"headers": [("Authorization", 'Digest username="a\x00"')]},
        "Bad Authorization",
    ),
    ("non-ASCII Call-ID", {"call_id": "caf\u00e9"}, "Bad Call-ID"),
    (
        "non-ASCII Event",
        {"replace": (b"Event: presence", "Event: présence".encode())},
        "Bad Event",
    ),
    (
        "non-ASCII outside quotes",
        {"replace": (b"From: <", "From: Zoë <".encode())},
        "Malformed From",
    ),
    ("fullwidth digits", {"headers": [("Expires", "\uff13\uff16\uff10\uff10")]}, "Bad Expires"),
    ("negative Expires", {"headers": [("Expires", "-1")]}, "Bad Expires"),
    ("huge Expires", {"headers": [("Expires", "9" * 30)]}, "Bad Expires"),
    ("CSeq not digits", {"replace": (b"CSeq: 1 ", b"CSeq: 1x ")}, "Bad CSeq"),
    (
        "Content-Length not digits",
        {"replace": (b"Content-Length: ", b"Content-Length: +")},
        "Bad Content-Length",
    ),
    (
        "unbalanced Record-Route",
        {"headers": [("Record-Route", "<sip:proxy.example.com;lr")]},
        "Bad Record-Route",
    ),
    ("Route without <>", {"headers": [("Route", "sip:proxy.example.com;lr")]}, "Bad Route"),
    (
        "unterminated quote in Record-Route",
        {"headers": [("Record-Route", '"proxy <sip:proxy.example.com;lr>')]},
        "Bad Record-Route",
    ),
    ("Call-ID over its column", {"call_id": "c" * 256}, "Call-ID Too Long"),
    ("From tag over its column", {"from_tag": "t" * 129}, "From Too Long"),
    (
        "user part over its column",
        {"replace": (b"sip:alice@", b"sip:" + b"a" * 65 + b"@")},
        "Request-URI Too Long",
    ),
    (
        "domain over its column",
        {
            "replace": (
                b"PUBLISH sip:alice@example.com",
                b"PUBLISH sip:alice@" + b"d" * 125 + b".com",
            )
        },
        "Request-URI Too Long",
    ),
    (
        "escaped NUL in a user part",
        {"replace": (b"PUBLISH sip:alice@", b"PUBLISH sip:al%00ice@")},
        "Bad Request-URI",
    ),
    (
        "Event id over its column",
        {"replace": (b"Event: presence", b"Event: presence;id=" + b"i" * 65)},
        "Event Too Long",
    ),
    (
        "Contact over its limit",
        {"headers": [("Contact", "<sip:alice@127.0.0.1;x=" + "x" * 1024 + ">")]},
        "Contact Too Long",
    ),
    (
        "SIP-If-Match over its column",
        {"headers": [("SIP-If-Match", "e" * 65)]},
        "SIP-If-Match Too Long",
    ),
]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_each_refusal_gets_its_400_at_once_before_the_bus(
    edge_stack: Stack, transport: str
) -> None:
    before = edge_metric(edge_stack, "presence_sip_input_refusals_total")
    for what, change, reason in REFUSALS:
        # A connection each: a stream whose framing is broken (Content-Length) is closed.
        client = SipClient(edge_stack.sip, transport, timeout=5)
        try:
            data = raw_publish(client, ALICE, **change)  # type: ignore[arg-type]
            status_line = client.transact_raw(data).split(b"\r\n")[0]
        except ConnectionError:
            status_line = b"closed"
        finally:
            client.close()
        if transport == "tcp" and reason == "Bad Content-Length":
            assert status_line == b"closed", what  # RFC 3261 §18.3: unframeable stream
            continue
        assert status_line == f"SIP/2.0 400 {reason}".encode(), what
    after = edge_metric(edge_stack, "presence_sip_input_refusals_total")
    # The parser's own refusals are not counted by this metric.
    parser_refusals = {"Malformed From", "Bad CSeq", "Bad Content-Length"}
    counted = [reason for _, _, reason in REFUSALS if reason not in parser_refusals]
    assert counted
    assert sum(after.values()) - sum(before.values()) == len(counted)


def test_what_the_grammar_allows_still_passes(edge_stack: Stack) -> None:
    """UTF-8 in a quoted display name and in a free-text header is not refused."""
    user, password = new_user(edge_stack, "zoe")
    aor = f"sip:{user}@{DOMAIN}"
    client = SipClient(edge_stack.sip, "udp")
    try:
        nonce = challenges(publish(client, aor, aor))["SHA-256"]["nonce"]
        data = raw_publish(
            client,
            aor,
            headers=[
                ("Subject", "Grüße"),
                ("Authorization", authorization(user, password, "PUBLISH", aor, nonce)),
            ],
            replace=(b"From: <", 'From: "Zoë Ünïcode" <'.encode()),
        )
        assert client.transact(data).status == 200
    finally:
        client.close()


def good_publish(stack: Stack, client: SipClient) -> SipResponse:
    user, password = new_user(stack, "bystander")
    aor = f"sip:{user}@{DOMAIN}"
    nonce = challenges(publish(client, aor, aor))["SHA-256"]["nonce"]
    return publish(client, aor, aor, authorization(user, password, "PUBLISH", aor, nonce))


@pytest.mark.parametrize(
    "bad",
    [
        'username="mal\x00lory"',  # the NUL that PostgreSQL refused in the HA1 lookup
        'response="' + "\u00e9" * 64 + '"',  # the non-ASCII that compare_digest raised on
        'username="mallory", username="alice"',
        'username="' + "m" * 65 + '"',
        "",  # username missing
    ],
)
def test_bad_authorization_is_refused_and_the_next_user_is_served(
    edge_stack: Stack, bad: str
) -> None:
    client = SipClient(edge_stack.sip, "udp", local_host="127.0.0.5", timeout=5)
    try:
        mallory, password = new_user(edge_stack, "mallory")
        aor = f"sip:{mallory}@{DOMAIN}"
        nonce = challenges(publish(client, aor, aor))["SHA-256"]["nonce"]
        good = authorization(mallory, password, "PUBLISH", aor, nonce)
        if bad.startswith("response="):
            broken = good.split("response=")[0] + bad + ", algorithm=" + good.split("algorithm=")[1]
        else:
            broken = good.replace(f'username="{mallory}"', bad).replace("Digest , ", "Digest ")
        refused = publish(client, aor, aor, broken)
        assert (refused.status, refused.reason) == (400, "Bad Authorization")
        assert good_publish(edge_stack, client).status == 200
    finally:
        client.close()


def test_unknown_algorithm_gets_a_fresh_challenge(edge_stack: Stack) -> None:
    user, password = new_user(edge_stack, "erin")
    aor = f"sip:{user}@{DOMAIN}"
    client = SipClient(edge_stack.sip, "udp")
    try:
        nonce = challenges(publish(client, aor, aor))["SHA-256"]["nonce"]
        other = authorization(user, password, "PUBLISH", aor, nonce).replace(
            "algorithm=SHA-256", "algorithm=SHA-512-256"
        )
        answer = publish(client, aor, aor, other)
        assert answer.status == 401 and set(challenges(answer)) == {"SHA-256", "MD5"}
    finally:
        client.close()


def rfc2069_authorization(user: str, password: str, uri: str, nonce: str) -> str:
    """Digest without qop (RFC 2069): no nonce-count, so no replay protection."""
    secret = ha1("MD5", user, DOMAIN, password)
    response = hash_hex("MD5", f"{secret}:{nonce}:{hash_hex('MD5', f'PUBLISH:{uri}')}")
    return (
        f'Digest username="{user}", realm="{DOMAIN}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm=MD5'
    )


def test_qop_auth_is_required_by_default(edge_stack: Stack) -> None:
    user, password = new_user(edge_stack, "old-phone")
    aor = f"sip:{user}@{DOMAIN}"
    client = SipClient(edge_stack.sip, "udp")
    try:
        nonce = challenges(publish(client, aor, aor))["MD5"]["nonce"]
        answer = publish(client, aor, aor, rfc2069_authorization(user, password, aor, nonce))
        assert answer.status == 401  # a fresh challenge, with qop="auth"
        assert all(c["qop"] == "auth" for c in challenges(answer).values())
    finally:
        client.close()


def test_qop_can_be_made_optional_for_old_phones(test_database: str) -> None:
    with running_stack(
        test_database,
        PRESENCE_AUTH="digest",
        PRESENCE_AUTH_SECRET=AUTH_SECRET,
        PRESENCE_AUTH_REQUIRE_QOP="0",
    ) as stack:
        user, password = new_user(stack, "old-phone")
        aor = f"sip:{user}@{DOMAIN}"
        client = SipClient(stack.sip, "udp")
        try:
            nonce = challenges(publish(client, aor, aor))["MD5"]["nonce"]
            answer = publish(client, aor, aor, rfc2069_authorization(user, password, aor, nonce))
            assert answer.status == 200
        finally:
            client.close()


def test_failures_lock_the_account_everywhere_but_the_address_only_past_its_own_limit(
    edge_stack: Stack,
) -> None:
    """Policy: MAX_ACCOUNT_FAILURES wrong guesses lock that account (from any address);
    the address itself, shared by everyone behind one NAT, is refused only after
    MAX_SOURCE_FAILURES failures of any accounts."""
    victim, victim_password = new_user(edge_stack, "victim")
    neighbour, neighbour_password = new_user(edge_stack, "neighbour")
    nat = SipClient(edge_stack.sip, "udp", local_host="127.0.0.3")  # attacker and neighbour
    elsewhere = SipClient(edge_stack.sip, "udp", local_host="127.0.0.4")
    try:

        def attempt(client: SipClient, user: str, password: str) -> SipResponse:
            aor = f"sip:{user}@{DOMAIN}"
            nonce = challenges(publish(client, aor, aor))["SHA-256"]["nonce"]
            return publish(client, aor, aor, authorization(user, password, "PUBLISH", aor, nonce))

        for _ in range(MAX_ACCOUNT_FAILURES):
            assert attempt(nat, victim, "guess").status == 401
        locked = attempt(elsewhere, victim, victim_password)
        assert (locked.status, locked.reason) == (403, "Too Many Failed Authentications")
        assert locked.headers.get("Retry-After") == "600"
        # The account lock is the victim's alone: the neighbour behind the same address is served.
        assert attempt(nat, neighbour, neighbour_password).status == 200
        # Failures for other accounts from the same address, up to the source limit.
        for attempt_number in range(MAX_SOURCE_FAILURES - MAX_ACCOUNT_FAILURES):
            stranger = f"nobody-{attempt_number}-{secrets.token_hex(2)}"
            assert attempt(nat, stranger, "guess").status == 401
        refused = attempt(nat, neighbour, neighbour_password)
        assert (refused.status, refused.reason) == (403, "Too Many Failed Authentications")
        assert attempt(elsewhere, neighbour, neighbour_password).status == 200
    finally:
        nat.close()
        elsewhere.close()


def test_a_refresh_by_another_authenticated_user_is_refused(edge_stack: Stack) -> None:
    watcher, watcher_password = new_user(edge_stack, "watcher")
    mallory, mallory_password = new_user(edge_stack, "mallory")
    presentity = f"sip:target-{secrets.token_hex(3)}@{DOMAIN}"
    client = SipClient(edge_stack.sip, "udp")
    try:
        own_uri = f"sip:{watcher}@{DOMAIN}"
        dialog = WatcherDialog(
            client, presentity, secrets.token_hex(6), secrets.token_hex(3), from_uri=own_uri
        )
        assert subscribe_as(client, dialog, watcher, watcher_password).status == 200
        dialog.next_notify()
        # Mallory learnt the dialog's Call-ID and tags; she authenticates as herself.
        hijack = WatcherDialog(client, "sip:127.0.0.1", dialog.call_id, dialog.from_tag,
                               dialog.to_tag, dialog.cseq + 5, own_uri)  # fmt: skip
        hijack.presentity = presentity
        challenged = hijack.subscribe()
        nonce = challenges(challenged)["SHA-256"]["nonce"]
        auth = authorization(mallory, mallory_password, "SUBSCRIBE", "sip:127.0.0.1", nonce)
        refused = hijack.subscribe(Authorization=auth)
        assert (refused.status, refused.reason) == (403, "Not Your Subscription")
        # The watcher herself still refreshes it.
        dialog.cseq = hijack.cseq + 1
        challenged = dialog.subscribe()
        nonce = challenges(challenged)["SHA-256"]["nonce"]
        auth = authorization(watcher, watcher_password, "SUBSCRIBE", "sip:127.0.0.1", nonce)
        assert dialog.subscribe(Authorization=auth).status == 200
    finally:
        client.close()


def test_trusted_proxy_must_use_tcp(test_database: str) -> None:
    with running_stack(
        test_database, PRESENCE_AUTH="trusted-proxy", PRESENCE_TRUSTED_PROXIES="127.0.0.2"
    ) as stack:
        presentity = f"sip:carol-{secrets.token_hex(3)}@{DOMAIN}"
        headers = [
            ("Event", "presence"),
            ("Content-Type", "application/pidf+xml"),
            ("P-Asserted-Identity", f"<{presentity}>"),
        ]
        body = pidf(presentity, "open")
        for transport, expected in (
            ("udp", (403, "Trusted Proxy Must Use TCP")),
            ("tcp", (200, "OK")),
        ):
            proxy = SipClient(stack.sip, transport, local_host="127.0.0.2")
            try:
                answer = proxy.transact(proxy.request("PUBLISH", presentity, headers, body))
                assert (answer.status, answer.reason) == expected, transport
            finally:
                proxy.close()
