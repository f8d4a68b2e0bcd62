"""SIP authentication on the real stack (issue: only alice may publish alice's
presence): digest (RFC 3261 §22, RFC 8760) with stateless nonces, nonce-count
replay protection, identity rules and the brute-force brake; trusted-proxy mode
with P-Asserted-Identity (RFC 3325)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator

import asyncpg
import pytest

from presence.sip.digest import ha1, hash_hex, make_nonce
from presence.sip.message import SipResponse
from presence_store.credentials import set_password

from .conftest import Stack, make_stack, metric_samples, running_stack
from .sip_client import SipClient
from .test_admin import ctl
from .test_privacy import rules, xcap
from .test_subscribe import WatcherDialog, pidf

pytestmark = pytest.mark.integration

AUTH_SECRET = "nonce-secret-for-tests"
ADMIN_TOKEN = "admin-" + secrets.token_hex(8)
DOMAIN = "example.com"


@pytest.fixture(scope="module")
def digest_stack(test_database: str) -> Iterator[Stack]:
    with running_stack(
        test_database,
        PRESENCE_AUTH="digest",
        PRESENCE_AUTH_SECRET=AUTH_SECRET,
        PRESENCE_FORCE_ACTIVE="0",
        PRESENCE_PUBLISH_FOR_OTHERS=f"pbx@{DOMAIN}",
        PRESENCE_AUTH_MAX_FAILURES="1000",
        PRESENCE_ADMIN_TOKEN=ADMIN_TOKEN,
    ) as stack:
        yield stack


def add_user(stack: Stack, user: str, password: str) -> None:
    async def add() -> None:
        connection = await asyncpg.connect(stack.db_url)
        try:
            await set_password(connection, user, DOMAIN, password)
        finally:
            await connection.close()

    asyncio.run(add())


def new_user(stack: Stack, name: str) -> tuple[str, str]:
    user, password = f"{name}-{secrets.token_hex(3)}", secrets.token_urlsafe(8)
    add_user(stack, user, password)
    return user, password


def challenges(response: SipResponse) -> dict[str, dict[str, str]]:
    """The WWW-Authenticate challenges of a 401, by algorithm."""
    found = {}
    for value in response.headers.get_all("WWW-Authenticate"):
        assert value.startswith("Digest ")
        params = {}
        for part in value[len("Digest ") :].split(", "):
            name, _, raw = part.partition("=")
            params[name] = raw.strip('"')
        found[params["algorithm"]] = params
    return found


def authorization(
    user: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    *,
    algorithm: str = "SHA-256",
    nc: int = 1,
    realm: str = DOMAIN,
) -> str:
    cnonce = "c0ffee"
    secret = ha1(algorithm, user, realm, password)
    ha2 = hash_hex(algorithm, f"{method}:{uri}")
    response = hash_hex(algorithm, f"{secret}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}")
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm={algorithm}, qop=auth, nc={nc:08x}, '
        f'cnonce="{cnonce}"'
    )


def publish(
    client: SipClient, presentity: str, from_uri: str, auth: str | None = None
) -> SipResponse:
    headers = [("Event", "presence"), ("Content-Type", "application/pidf+xml")]
    if auth is not None:
        headers.append(("Authorization", auth))
    data = client.request(
        "PUBLISH", presentity, headers, pidf(presentity, "open"), from_uri=from_uri
    )
    return client.transact(data)


def test_digest_publish_challenge_then_success(digest_stack: Stack) -> None:
    user, password = new_user(digest_stack, "alice")
    aor = f"sip:{user}@{DOMAIN}"
    client = SipClient(digest_stack.sip, "udp")
    try:
        challenged = publish(client, aor, aor)
        assert challenged.status == 401
        offered = challenges(challenged)
        assert set(offered) == {"SHA-256", "MD5"}  # RFC 8760: SHA-256 offered first
        assert offered["SHA-256"]["realm"] == DOMAIN and offered["SHA-256"]["qop"] == "auth"
        nonce = offered["SHA-256"]["nonce"]
        for algorithm, nc in (("SHA-256", 1), ("MD5", 2)):
            auth = authorization(user, password, "PUBLISH", aor, nonce, algorithm=algorithm, nc=nc)
            assert publish(client, aor, aor, auth).status == 200
    finally:
        client.close()


def test_wrong_password_stale_nonce_and_replayed_count_fail(digest_stack: Stack) -> None:
    user, password = new_user(digest_stack, "bob")
    aor = f"sip:{user}@{DOMAIN}"
    client = SipClient(digest_stack.sip, "udp")
    try:
        nonce = challenges(publish(client, aor, aor))["MD5"]["nonce"]
        wrong = publish(client, aor, aor, authorization(user, "guess", "PUBLISH", aor, nonce))
        assert wrong.status == 401
        assert "stale=true" not in (wrong.headers.get("WWW-Authenticate") or "")

        old = make_nonce(AUTH_SECRET, DOMAIN, time.time() - 3600)  # default lifetime 300 s
        stale = publish(client, aor, aor, authorization(user, password, "PUBLISH", aor, old))
        assert stale.status == 401 and "stale=true" in (stale.headers.get("WWW-Authenticate") or "")

        good = authorization(user, password, "PUBLISH", aor, nonce, nc=7)
        assert publish(client, aor, aor, good).status == 200
        replayed = publish(client, aor, aor, good)  # a new transaction, the same nc
        assert replayed.status == 401
        lower = authorization(user, password, "PUBLISH", aor, nonce, nc=3)
        assert publish(client, aor, aor, lower).status == 401
        assert (
            publish(
                client, aor, aor, authorization(user, password, "PUBLISH", aor, nonce, nc=8)
            ).status
            == 200
        )
        # A nonce this system never made is challenged afresh (not stale).
        forged = publish(client, aor, aor, authorization(user, password, "PUBLISH", aor, "Zm9v"))
        assert forged.status == 401
        assert "stale=true" not in (forged.headers.get("WWW-Authenticate") or "")
    finally:
        client.close()


def test_only_alice_publishes_alice_except_allowed_gateways(digest_stack: Stack) -> None:
    alice, _ = new_user(digest_stack, "alice")
    mallory, mallory_password = new_user(digest_stack, "mallory")
    add_user(digest_stack, "pbx", "pbx-password")
    target = f"sip:{alice}@{DOMAIN}"
    client = SipClient(digest_stack.sip, "udp")
    try:
        me = f"sip:{mallory}@{DOMAIN}"
        nonce = challenges(publish(client, target, me))["SHA-256"]["nonce"]
        forged = publish(
            client, target, me, authorization(mallory, mallory_password, "PUBLISH", target, nonce)
        )
        assert forged.status == 403
        pbx = f"sip:pbx@{DOMAIN}"
        nonce = challenges(publish(client, target, pbx))["SHA-256"]["nonce"]
        lamp = publish(
            client, target, pbx, authorization("pbx", "pbx-password", "PUBLISH", target, nonce)
        )
        assert lamp.status == 200  # PRESENCE_PUBLISH_FOR_OTHERS
    finally:
        client.close()


def subscribe_as(
    client: SipClient, watcher: WatcherDialog, user: str, password: str, **extra: str
) -> SipResponse:
    """A SUBSCRIBE answered by a challenge, then sent again with credentials."""
    challenged = watcher.subscribe(**extra)
    assert challenged.status == 401
    nonce = challenges(challenged)["SHA-256"]["nonce"]
    auth = authorization(user, password, "SUBSCRIBE", watcher.presentity, nonce)
    return watcher.subscribe(**extra, Authorization=auth)


def test_rules_and_winfo_judge_the_authenticated_watcher(digest_stack: Stack) -> None:
    owner, owner_password = new_user(digest_stack, "owner")
    mallory, mallory_password = new_user(digest_stack, "mallory")
    presentity = f"sip:{owner}@{DOMAIN}"
    # The rules allow sip:watcher@example.com (test_privacy.rules); mallory claims to
    # be that watcher in From, but authenticates as herself: pending, not allowed.
    assert xcap(digest_stack, "PUT", presentity, rules("allow"))[0] == 201
    client = SipClient(digest_stack.sip, "udp")
    try:
        pretender = WatcherDialog(client, presentity, secrets.token_hex(6), secrets.token_hex(3))
        assert subscribe_as(client, pretender, mallory, mallory_password).status == 200
        notify = pretender.next_notify()
        assert notify.headers.get("Subscription-State").startswith("pending")
        assert notify.body == b""
        # Nor may she read the owner's watcher list by writing the owner's From.
        snoop = WatcherDialog(client, presentity, secrets.token_hex(6), "s", from_uri=presentity)
        assert (
            subscribe_as(client, snoop, mallory, mallory_password, Event="presence.winfo").status
            == 403
        )
        # The owner may, and sees mallory under her authenticated name.
        own = WatcherDialog(client, presentity, secrets.token_hex(6), "o", from_uri=presentity)
        assert (
            subscribe_as(client, own, owner, owner_password, Event="presence.winfo").status == 200
        )
        body = own.next_notify().body
        assert f"sip:{mallory}@{DOMAIN}".encode() in body
        assert b"sip:watcher@example.com" not in body
    finally:
        client.close()


def test_repeated_failures_of_one_account_are_blocked(test_database: str) -> None:
    stack = make_stack(
        test_database,
        PRESENCE_AUTH="digest",
        PRESENCE_AUTH_SECRET=AUTH_SECRET,
        PRESENCE_AUTH_MAX_FAILURES="3",
        PRESENCE_AUTH_BLOCK_SECONDS="600",
    )
    try:
        stack.start_all()
        user, password = new_user(stack, "victim")
        aor = f"sip:{user}@{DOMAIN}"
        client = SipClient(stack.sip, "udp")
        try:
            nonce = challenges(publish(client, aor, aor))["SHA-256"]["nonce"]
            for attempt in range(3):
                guess = authorization(
                    user, f"guess{attempt}", "PUBLISH", aor, nonce, nc=attempt + 1
                )
                assert publish(client, aor, aor, guess).status == 401
            right = authorization(user, password, "PUBLISH", aor, nonce, nc=10)
            blocked = publish(client, aor, aor, right)
            assert blocked.status == 403 and blocked.headers.get("Retry-After") == "600"
            counted = metric_samples(stack, "presence-store", "presence_auth_failures_total")
            assert counted.get('reason="bad_credentials"') == 3.0
            assert counted.get('reason="blocked_account"') == 1.0
        finally:
            client.close()
    finally:
        stack.close()


def test_trusted_proxy_mode_takes_the_asserted_identity(test_database: str) -> None:
    stack = make_stack(
        test_database, PRESENCE_AUTH="trusted-proxy", PRESENCE_TRUSTED_PROXIES="127.0.0.2"
    )
    presentity = f"sip:carol-{secrets.token_hex(3)}@{DOMAIN}"
    try:
        stack.start_all()
        proxy = SipClient(stack.sip, "tcp", local_host="127.0.0.2")  # UDP: see test_edge_input
        stranger = SipClient(stack.sip, "udp")
        try:
            asserted = [("P-Asserted-Identity", f"<{presentity}>")]
            headers = [("Event", "presence"), ("Content-Type", "application/pidf+xml")]
            body = pidf(presentity, "open")
            via_proxy = proxy.request("PUBLISH", presentity, headers + asserted, body)
            assert proxy.transact(via_proxy).status == 200
            unasserted = proxy.request("PUBLISH", presentity, headers, body)
            assert proxy.transact(unasserted).status == 403
            someone_else = [("P-Asserted-Identity", f"<sip:dave@{DOMAIN}>")]
            for_carol = proxy.request("PUBLISH", presentity, headers + someone_else, body)
            assert proxy.transact(for_carol).status == 403  # dave may not publish carol
            direct = stranger.request("PUBLISH", presentity, headers + asserted, body)
            assert stranger.transact(direct).status == 403  # not from the proxy
        finally:
            proxy.close()
            stranger.close()
    finally:
        stack.close()


def test_a_user_added_with_presencectl_can_publish(digest_stack: Stack) -> None:
    user, password = f"dana-{secrets.token_hex(3)}", secrets.token_urlsafe(10)
    aor = f"sip:{user}@{DOMAIN}"
    added = ctl(digest_stack, "user-add", aor, "--password-stdin", token=ADMIN_TOKEN,
                stdin=password + "\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    client = SipClient(digest_stack.sip, "udp")
    try:
        nonce = challenges(publish(client, aor, aor))["SHA-256"]["nonce"]
        assert (
            publish(client, aor, aor, authorization(user, password, "PUBLISH", aor, nonce)).status
            == 200
        )
    finally:
        client.close()


def test_the_offered_algorithms_and_their_order_are_the_operators_choice(
    test_database: str,
) -> None:
    """PRESENCE_AUTH_ALGORITHMS: JsSIP answers the first challenge and knows only MD5,
    so a deployment with browsers offers MD5 first; an algorithm not offered is
    challenged again, never accepted (RFC 8760 §2.4: the server's choice)."""
    with running_stack(
        test_database,
        PRESENCE_AUTH="digest",
        PRESENCE_AUTH_SECRET=AUTH_SECRET,
        PRESENCE_AUTH_ALGORITHMS="MD5",
        PRESENCE_AUTH_MAX_FAILURES="1000",
    ) as stack:
        user, password = new_user(stack, "browser")
        aor = f"sip:{user}@{DOMAIN}"
        client = SipClient(stack.sip, "udp")
        try:
            challenged = publish(client, aor, aor)
            assert challenged.status == 401
            assert [v.split("algorithm=")[1].split(",")[0] for v in
                    challenged.headers.get_all("WWW-Authenticate")] == ["MD5"]  # fmt: skip
            nonce = challenges(challenged)["MD5"]["nonce"]
            sha = authorization(user, password, "PUBLISH", aor, nonce, algorithm="SHA-256")
            assert publish(client, aor, aor, sha).status == 401
            md5 = authorization(user, password, "PUBLISH", aor, nonce, algorithm="MD5", nc=2)
            assert publish(client, aor, aor, md5).status == 200
        finally:
            client.close()
