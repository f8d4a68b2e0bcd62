"""PJSIP against the real stack: two pjsua2 user agents (PyPI's pjsua2-python, pinned
in requirements-dev.txt), each a child process (tests/integration/pjsua_agent.py).
carol registers and publishes; dave registers and subscribes to carol as a buddy and
must see what she publishes: online, busy, offline, and her publication's removal.
PJSIP's MWI and its dialog-event buddy watch what a test voicemail server and a test
PBX publish. Over TLS, PJSIP verifies the server against a CA made for the test
(presence.runtime.local_ca) and does everything over its TLS connection.

PJSIP sends its requests through a pre-loaded Route to the edge (`;lr`), publishes
with RPID person elements, and at shutdown un-PUBLISHes, unregisters and
unsubscribes: the server must end up with nothing of either.
"""

from __future__ import annotations

import platform
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from presence.runtime.local_ca import LocalCa, ensure
from presence_store.credentials import set_password

from .conftest import LOGS, Stack, eventually, running_stack
from .sip_client import SipClient

pytestmark = pytest.mark.integration

# requirements-dev.txt installs pjsua2-python wherever PyPI has a wheel of it; there the
# test runs (and fails if the package is missing), nowhere else.
if not (sys.platform == "linux" and platform.machine() == "x86_64" and sys.version_info < (3, 13)):
    pytest.skip(
        "pjsua2-python has wheels only for CPython 3.11/3.12 on linux x86_64",
        allow_module_level=True,
    )

AGENT = Path(__file__).with_name("pjsua_agent.py")


class Agent:
    """One pjsua_agent.py process: commands on its stdin, events read from its stdout."""

    def __init__(self, stack: Stack, user: str, *options: str, tls_ca: Path | None = None) -> None:
        """With `tls_ca`, the agent speaks SIP over TLS to the stack's TLS port, trusting
        that CA; otherwise UDP."""
        LOGS.mkdir(parents=True, exist_ok=True)
        self.user = user
        self.uri = f"sip:{user}@127.0.0.1"
        self.log = LOGS / f"pjsua-{user}-{stack.env['PRESENCE_KAFKA_NAMESPACE']}.log"
        host, port = stack.sip
        if tls_ca is not None:
            port = int(stack.env["PRESENCE_SIP_TLS_PORT"])
            options = (*options, "--tls-ca", str(tls_ca))
        command = [sys.executable, str(AGENT), "--server", f"{host}:{port}", "--user", user]
        self.process = subprocess.Popen(
            [*command, "--log", str(self.log), *options],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._finished = False
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.port = int(self.wait_for(r"ready (\d+)").group(1))

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._finished = True
            self._changed.notify_all()

    def events(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 15, after: int = 0) -> re.Match[str]:
        """The first line from index `after` on that matches `pattern`, within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[after:]:
                    if found := re.fullmatch(pattern, line):
                        return found
                left = deadline - time.monotonic()
                if left <= 0 or self._finished:
                    raise AssertionError(
                        f"{self.user}: no line {pattern!r} within {timeout}s; saw:\n"
                        f"{chr(10).join(self.lines)}\n(SIP trace: {self.log})"
                    )
                self._changed.wait(left)

    def mark(self) -> int:
        with self._changed:
            return len(self.lines)

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def quit(self) -> None:
        """Ask PJSIP to shut down cleanly (un-PUBLISH, unregister, unsubscribe)."""
        self.send("quit")
        self.wait_for("bye", timeout=20)
        self.process.wait(10)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


def buddy_line(presentity: Agent, status: str, text: str = r"\S+") -> str:
    return rf"buddy {re.escape(presentity.uri)} {status} ACTIVE {text}"


async def test_pjsua_watcher_sees_pjsua_presentity(stack: Stack, db: asyncpg.Connection) -> None:
    # Names of their own: the test database is shared by every module of the session.
    suffix = secrets.token_hex(3)
    carol = Agent(stack, f"carol-{suffix}", "--publish")
    dave = None

    def count(sql: str, user: Agent) -> Callable[[], Awaitable[object]]:
        return lambda: db.fetchval(sql, user.user)

    try:
        carol.wait_for("reg 200 OK")
        location = await db.fetch("SELECT contact FROM location WHERE username = $1", carol.user)
        assert [row["contact"] for row in location] == [f"{carol.uri}:{carol.port};ob"]

        carol.send("online")
        body = await eventually(
            lambda: db.fetchval("SELECT body FROM presentity WHERE username = $1", carol.user),
            lambda body: body is not None,
            "carol's publication",
        )
        assert "<basic>open</basic>" in str(body)

        dave = Agent(stack, f"dave-{suffix}", "--buddy", carol.uri)
        dave.wait_for("reg 200 OK")
        dave.wait_for(buddy_line(carol, "online", "Online"))
        watcher = await db.fetchrow(
            "SELECT status, from_user, contact FROM active_watchers"
            " WHERE to_user = $1 AND event = 'presence'",
            carol.user,
        )
        assert watcher is not None
        assert tuple(watcher) == ("active", dave.user, f"{dave.uri}:{dave.port};ob")

        # RPID: PJSIP's "busy" is an rpid activity plus a note, which dave must get back.
        seen = dave.mark()
        carol.send("busy")
        dave.wait_for(buddy_line(carol, "online", "Busy"), after=seen)

        seen = dave.mark()
        carol.send("offline")
        dave.wait_for(buddy_line(carol, "offline"), after=seen)

        # carol quits: her un-PUBLISH removes her publication and dave sees her closed.
        seen = dave.mark()
        carol.send("online")
        dave.wait_for(buddy_line(carol, "online", "Online"), after=seen)
        seen = dave.mark()
        carol.quit()
        dave.wait_for(buddy_line(carol, "offline"), after=seen)
        await eventually(
            count("SELECT count(*) FROM presentity WHERE username = $1", carol),
            lambda n: n == 0,
            "carol's publication to be removed",
        )
        assert await count("SELECT count(*) FROM location WHERE username = $1", carol)() == 0

        # dave quits: his un-SUBSCRIBE ends the dialog at once (Expires 0; the row goes
        # when its final NOTIFY is answered or times out), his un-REGISTER his binding.
        dave.quit()
        await eventually(
            count(
                "SELECT count(*) FROM active_watchers"
                " WHERE from_user = $1 AND expires > extract(epoch FROM now())",
                dave,
            ),
            lambda n: n == 0,
            "dave's subscription to end",
        )
        assert await count("SELECT count(*) FROM location WHERE username = $1", dave)() == 0
    finally:
        carol.kill()
        if dave is not None:
            dave.kill()


async def test_pjsua_shows_the_waiting_messages_a_voicemail_server_publishes(
    stack: Stack, db: asyncpg.Connection
) -> None:
    """PJSIP's MWI (AccountMwiConfig) subscribes to message-summary of its own account;
    a test voicemail server publishes the mailbox's summary, which PJSIP reports."""
    gina = Agent(stack, f"gina-{secrets.token_hex(3)}", "--mwi")
    voicemail = SipClient(stack.sip, "udp")
    try:
        gina.wait_for("reg 200 OK")
        # Nothing published yet: PJSIP gets "no messages" rather than an empty body.
        gina.wait_for(r"mwi \d+ Messages-Waiting:no")
        watcher = await db.fetchrow(
            "SELECT status, from_user FROM active_watchers"
            " WHERE to_user = $1 AND event = 'message-summary'",
            gina.user,
        )
        assert watcher is not None and tuple(watcher) == ("active", gina.user)

        seen = gina.mark()
        headers = [
            ("Event", "message-summary"),
            ("Content-Type", "application/simple-message-summary"),
        ]
        summary = (
            b"Messages-Waiting: yes\r\nMessage-Account: sip:vm@127.0.0.1\r\nVoice-Message: 2/8\r\n"
        )
        request = voicemail.request(
            "PUBLISH", gina.uri, headers, summary, from_uri="sip:voicemail@127.0.0.1"
        )
        published = voicemail.transact(request)
        assert published.status == 200
        gina.wait_for(
            r"mwi \d+ Messages-Waiting:yes\|Message-Account:sip:vm@127.0.0.1\|Voice-Message:2/8",
            after=seen,
        )

        seen = gina.mark()
        removal = voicemail.request(
            "PUBLISH",
            gina.uri,
            [("Event", "message-summary"), ("SIP-If-Match", published.headers.get("SIP-ETag")),
             ("Expires", "0")],
            from_uri="sip:voicemail@127.0.0.1",
        )  # fmt: skip
        assert voicemail.transact(removal).status == 200
        gina.wait_for(r"mwi \d+ Messages-Waiting:no", after=seen)
    finally:
        voicemail.close()
        gina.kill()


def test_pjsua_busy_lamp_follows_the_dialog_states_a_pbx_publishes(stack: Stack) -> None:
    """PJSIP's dialog-event buddy (RFC 4235, PJSUA-LIB) watches a line while a test PBX
    publishes its call: idle, early, confirmed, terminated."""
    line = f"sip:line-{secrets.token_hex(3)}@127.0.0.1"
    lamp = Agent(stack, f"ivan-{secrets.token_hex(3)}", "--dialog-buddy", line)
    pbx = SipClient(stack.sip, "udp")

    def dialog_line(state: str) -> str:
        return rf"dialog {re.escape(line)} ACTIVE {state}"

    def publish(state: str, etag: str | None) -> str:
        body = (
            '<?xml version="1.0"?><dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" '
            f'version="0" state="full" entity="{line}"><dialog id="call-1" '
            f'call-id="call-1@pbx" direction="recipient"><state>{state}</state></dialog>'
            "</dialog-info>"
        ).encode()
        headers = [("Event", "dialog"), ("Content-Type", "application/dialog-info+xml")]
        if etag is not None:
            headers.append(("SIP-If-Match", etag))
        request = pbx.request("PUBLISH", line, headers, body, from_uri="sip:pbx@127.0.0.1")
        reply = pbx.transact(request)
        assert reply.status == 200, reply.reason
        return reply.headers.get("SIP-ETag") or ""

    try:
        lamp.wait_for("reg 200 OK")
        lamp.wait_for(dialog_line("idle"))  # nobody publishes for the line yet
        etag = None
        for state in ("early", "confirmed", "terminated"):
            seen = lamp.mark()
            etag = publish(state, etag)
            lamp.wait_for(dialog_line(state), after=seen)
    finally:
        pbx.close()
        lamp.kill()


@pytest.fixture(scope="module")
def digest_stack(test_database: str) -> Iterator[Stack]:
    with running_stack(
        test_database,
        PRESENCE_FORCE_ACTIVE="1",
        PRESENCE_AUTH="digest",
        PRESENCE_AUTH_SECRET=secrets.token_hex(16),
    ) as stack:
        yield stack


async def test_pjsua_publishes_and_watches_with_digest_credentials(
    digest_stack: Stack,
) -> None:
    """PJSIP answers the 401 challenges (SHA-256 or MD5) with its credentials: it
    registers, publishes and watches; an account with a wrong password gets nowhere."""
    suffix = secrets.token_hex(3)
    erin, frank, password = f"erin-{suffix}", f"frank-{suffix}", secrets.token_urlsafe(9)
    db = await asyncpg.connect(digest_stack.db_url)
    agents: list[Agent] = []
    try:
        for user in (erin, frank):
            await set_password(db, user, "127.0.0.1", password)
        publisher = Agent(digest_stack, erin, "--publish", "--password", password)
        agents.append(publisher)
        publisher.wait_for("reg 200 OK")
        publisher.send("online")
        body = await eventually(
            lambda: db.fetchval("SELECT body FROM presentity WHERE username = $1", erin),
            lambda body: body is not None,
            "erin's authenticated publication",
        )
        assert "<basic>open</basic>" in str(body)

        watcher = Agent(digest_stack, frank, "--buddy", publisher.uri, "--password", password)
        agents.append(watcher)
        watcher.wait_for("reg 200 OK")
        watcher.wait_for(buddy_line(publisher, "online", "Online"))
        row = await db.fetchrow(
            "SELECT from_user, from_domain FROM active_watchers WHERE to_user = $1", erin
        )
        assert row is not None and tuple(row) == (frank, "127.0.0.1")  # the authenticated one

        impostor = Agent(digest_stack, f"mallory-{suffix}", "--publish", "--password", "guess")
        agents.append(impostor)
        impostor.wait_for(r"reg 401 .*")
    finally:
        for agent in agents:
            agent.kill()
        await db.close()


# --- over TLS ------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    return ensure(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_stack(test_database: str, local_ca: LocalCa) -> Iterator[Stack]:
    with running_stack(
        test_database,
        PRESENCE_FORCE_ACTIVE="1",
        PRESENCE_TLS_CERT=str(local_ca.server_cert),
        PRESENCE_TLS_KEY=str(local_ca.server_key),
    ) as stack:
        yield stack


async def test_pjsua_registers_publishes_and_watches_over_tls(
    tls_stack: Stack, local_ca: LocalCa, tmp_path: Path
) -> None:
    """PJSIP's TLS transport, verifying the server against the generated CA: it
    registers, publishes and watches over TLS, its NOTIFYs come back over its TLS
    connection; PJSIP trusting another CA refuses the server and registers nothing."""
    suffix = secrets.token_hex(3)
    db = await asyncpg.connect(tls_stack.db_url)
    agents: list[Agent] = []
    try:
        carol = Agent(tls_stack, f"carol-tls-{suffix}", "--publish", tls_ca=local_ca.ca_cert)
        agents.append(carol)
        carol.wait_for("reg 200 OK")
        contact = await db.fetchval("SELECT contact FROM location WHERE username = $1", carol.user)
        assert "transport=tls" in str(contact).lower(), contact
        carol.send("online")
        body = await eventually(
            lambda: db.fetchval("SELECT body FROM presentity WHERE username = $1", carol.user),
            lambda body: body is not None,
            "carol's publication over TLS",
        )
        assert "<basic>open</basic>" in str(body)

        dave = Agent(tls_stack, f"dave-tls-{suffix}", "--buddy", carol.uri, tls_ca=local_ca.ca_cert)
        agents.append(dave)
        dave.wait_for("reg 200 OK")
        dave.wait_for(buddy_line(carol, "online", "Online"))
        watcher = await db.fetchrow(
            "SELECT status, flow FROM active_watchers"
            " WHERE to_user = $1 AND from_user = $2 AND event = 'presence'",
            carol.user,
            dave.user,
        )
        assert watcher is not None and watcher["status"] == "active"
        assert str(watcher["flow"]).startswith("tls:"), watcher["flow"]

        seen = dave.mark()
        carol.send("busy")
        dave.wait_for(buddy_line(carol, "online", "Busy"), after=seen)
        seen = dave.mark()
        carol.quit()
        dave.wait_for(buddy_line(carol, "offline"), after=seen)
        await eventually(
            lambda: db.fetchval("SELECT count(*) FROM presentity WHERE username = $1", carol.user),
            lambda n: n == 0,
            "carol's publication to be removed",
        )

        # A CA that did not sign the server's certificate: PJSIP's verification fails,
        # its REGISTER is never sent (503 from its own transport layer) and the server
        # stores nothing.
        other_ca = ensure(tmp_path / "other-ca")
        stranger = Agent(tls_stack, f"stranger-{suffix}", tls_ca=other_ca.ca_cert)
        agents.append(stranger)
        stranger.wait_for(r"reg 503 .*\(PJSIP_TLS_ECERTVERIF\)")
        assert (
            await db.fetchval("SELECT count(*) FROM location WHERE username = $1", stranger.user)
            == 0
        )
    finally:
        for agent in agents:
            agent.kill()
        await db.close()
