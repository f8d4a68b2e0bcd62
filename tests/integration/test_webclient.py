"""The browser presence client (webclient/, served under /client/) in a real browser:
Debian's chromium, headless, driven by Playwright, two pages as two users over HTTPS
and WSS with digest authentication. alice's status reaches bob's buddy list; bob stays
pending until alice allows him from her watchers list; alice's closed tab ends her
publication's life and bob sees her offline."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from presence.runtime.local_ca import LocalCa, ensure
from presence.xcap.credentials import password_for
from presence_store.credentials import set_password
from presence_store.webclient import DEFAULT_DIR

from .conftest import LOGS, XCAP_SECRET, Stack, running_stack

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOMAIN = "example.com"
# Seconds a publication lives: short, so that a closed tab turns offline soon.
EXPIRES = 4
RL_NS = "urn:ietf:params:xml:ns:resource-lists"


@pytest.fixture(scope="module")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    return ensure(Path(tmp_path_factory.mktemp("tls")))


@pytest.fixture(scope="module")
def web_stack(test_database: str, local_ca: LocalCa) -> Iterator[Stack]:
    assert (DEFAULT_DIR / "client.js").is_file(), "build the client first: scripts/webclient.sh"
    with running_stack(
        test_database,
        PRESENCE_AUTH="digest",
        PRESENCE_AUTH_SECRET="nonce-secret-" + secrets.token_hex(8),
        PRESENCE_FORCE_ACTIVE="0",
        PRESENCE_TLS_CERT=str(local_ca.server_cert),
        PRESENCE_TLS_KEY=str(local_ca.server_key),
    ) as stack:
        yield stack


def spki_hash(certificate: Path) -> str:
    """What chromium's --ignore-certificate-errors-spki-list names: the base64 SHA-256
    of the server key, so the browser trusts this one key and nothing else."""
    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def browser(local_ca: LocalCa) -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "chromium is missing: apt-get install -y chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[f"--ignore-certificate-errors-spki-list={spki_hash(local_ca.server_cert)}"],
        )
        yield launched
        launched.close()


def new_user(stack: Stack, name: str) -> tuple[str, str]:
    """A user of the credentials table: their address and SIP password."""
    user, password = f"{name}-{secrets.token_hex(3)}", secrets.token_urlsafe(10)

    async def add() -> None:
        connection = await asyncpg.connect(stack.db_url)
        try:
            await set_password(connection, user, DOMAIN, password)
        finally:
            await connection.close()

    # Playwright's sync API runs an event loop in this thread: the database call runs in another.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, add()).result()
    return f"sip:{user}@{DOMAIN}", password


class ClientPage:
    """One user's tab of the browser client, and every request it made."""

    def __init__(self, browser: Browser, origin: str) -> None:
        self.context = browser.new_context()
        self.page: Page = self.context.new_page()
        self.requests: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("websocket", lambda socket: self.requests.append(socket.url))
        # Shown by pytest when the test fails: SIP.js's warnings, the page's errors.
        self.page.on("console", lambda message: print(f"{origin} console: {message.text}"))
        self.page.on("pageerror", lambda error: print(f"{origin} page error: {error}"))
        self.origin = origin

    def log_in(self, aor: str, sip_password: str) -> None:
        page = self.page
        page.goto(f"{self.origin}/client/?expires={EXPIRES}")
        page.fill("input[name=aor]", aor)
        page.fill("input[name=sipPassword]", sip_password)
        page.fill("input[name=xcapPassword]", password_for(XCAP_SECRET, aor))
        page.click("#login button")
        expect(page.locator("#me")).to_have_text(aor, timeout=10_000)
        expect(page.locator("#message")).to_have_text("")

    def publish(self, status: str, note: str = "") -> None:
        self.page.select_option("#publish select[name=status]", status)
        self.page.fill("#publish input[name=note]", note)
        self.page.click("#publish button")
        # Shown once the server answered 200 (after the digest challenge).
        expect(self.page.locator("#my-status")).to_have_text(status, timeout=10_000)

    def buddy_status(self, uri: str) -> Locator:
        return self.page.locator(f'#buddies li[data-buddy="{uri}"] .status')

    def watcher_row(self, uri: str) -> Locator:
        return self.page.locator(f'#watchers li[data-watcher="{uri}"]')


def buddy_uris(stack: Stack, origin: str, aor: str) -> list[str]:
    """The entries of the user's resource-lists document, read over XCAP."""
    user = aor.removeprefix("sip:")
    answer = httpx.get(
        f"{origin}/xcap-root/resource-lists/users/{aor}/index",
        auth=(user, password_for(XCAP_SECRET, aor)),
        verify=False,  # the same server the browser reached; the CA is not the point here
    )
    if answer.status_code == 404:
        return []
    assert answer.status_code == 200, answer.text
    root = etree.fromstring(answer.content)
    return [entry.get("uri") for entry in root.iter(f"{{{RL_NS}}}entry")]


def test_two_users_in_the_browser(web_stack: Stack, browser: Browser) -> None:
    started = time.monotonic()
    origin = f"https://127.0.0.1:{web_stack.env['PRESENCE_STORE_HTTPS_PORT']}"
    wss = f"wss://127.0.0.1:{web_stack.env['PRESENCE_SIP_WSS_PORT']}"
    alice_aor, alice_password = new_user(web_stack, "alice")
    bob_aor, bob_password = new_user(web_stack, "bob")
    alice = ClientPage(browser, origin)
    bob = ClientPage(browser, origin)
    pages = [alice, bob]
    try:
        alice.log_in(alice_aor, alice_password)
        bob.log_in(bob_aor, bob_password)

        # bob adds alice: kept in his resource-lists document, and he is pending.
        bob.page.fill("#add-buddy input[name=uri]", alice_aor)
        bob.page.click("#add-buddy button")
        expect(bob.buddy_status(alice_aor)).to_have_text("pending", timeout=10_000)
        assert buddy_uris(web_stack, origin, bob_aor) == [alice_aor]

        # alice sees bob in her watchers list, pending; her status does not reach him.
        expect(alice.watcher_row(bob_aor).locator(".status")).to_have_text(
            "pending", timeout=10_000
        )
        alice.publish("busy", "in a meeting")
        expect(bob.buddy_status(alice_aor)).to_have_text("pending")

        # alice allows him (pres-rules over XCAP): he sees busy, and she sees him active.
        alice.watcher_row(bob_aor).get_by_role("button", name="allow").click()
        expect(bob.buddy_status(alice_aor)).to_have_text("busy", timeout=10_000)
        expect(bob.page.locator(f'#buddies li[data-buddy="{alice_aor}"] .note')).to_have_text(
            "in a meeting"
        )
        expect(alice.watcher_row(bob_aor).locator(".status")).to_have_text("active")

        # Once allowed, a change reaches bob's buddy list within a second.
        alice.publish("away", "back soon")
        expect(bob.buddy_status(alice_aor)).to_have_text("away", timeout=1_000)
        alice.publish("busy", "on a call")
        expect(bob.buddy_status(alice_aor)).to_have_text("busy", timeout=1_000)

        # A second buddy, who has not answered bob yet.
        carol_aor = f"sip:carol-{secrets.token_hex(3)}@{DOMAIN}"
        bob.page.fill("#add-buddy input[name=uri]", carol_aor)
        bob.page.click("#add-buddy button")
        expect(bob.buddy_status(carol_aor)).to_have_text("pending", timeout=10_000)
        assert buddy_uris(web_stack, origin, bob_aor) == [alice_aor, carol_aor]
        LOGS.mkdir(parents=True, exist_ok=True)
        bob.page.screenshot(path=str(LOGS / "webclient-buddies.png"))

        # alice's tab closes: her publication is withdrawn or expires, bob sees offline.
        alice.context.close()
        expect(bob.buddy_status(alice_aor)).to_have_text("offline", timeout=(EXPIRES + 10) * 1000)

        # alice in a new tab: bob is listed as watching her; she blocks him and his
        # subscription ends (RFC 5025 block: terminated, reason rejected).
        alice_again = ClientPage(browser, origin)
        pages.append(alice_again)
        alice_again.log_in(alice_aor, alice_password)
        expect(alice_again.watcher_row(bob_aor).locator(".status")).to_have_text(
            "active", timeout=10_000
        )
        alice_again.watcher_row(bob_aor).get_by_role("button", name="block").click()
        expect(bob.buddy_status(alice_aor)).to_have_text("terminated", timeout=10_000)
        expect(alice_again.watcher_row(bob_aor).locator(".status")).to_have_text("terminated")

        # Removing the buddy removes him from the document too.
        bob.page.locator(f'#buddies li[data-buddy="{alice_aor}"]').get_by_role(
            "button", name="remove"
        ).click()
        expect(bob.page.locator(f'#buddies li[data-buddy="{alice_aor}"]')).to_have_count(0)
        assert buddy_uris(web_stack, origin, bob_aor) == [carol_aor]
    finally:
        for page in pages:
            page.context.close()  # again for alice's first tab: harmless

    # The pages fetched nothing but the server's own page, XCAP and WebSocket.
    for url in [url for page in pages for url in page.requests]:
        assert re.match(f"({re.escape(origin)}|{re.escape(wss)})(/|$)", url), url
    print(f"browser test took {time.monotonic() - started:.1f}s")
