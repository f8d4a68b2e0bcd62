"""linphone against the real stack: two `linphonec` consoles (Debian's linphone-cli,
liblinphone 5.1, installed by `make test`). alice registers and publishes; bob
registers and subscribes to alice as a friend and must see her Online, then Offline
when she quits (her un-PUBLISH).

linphonec needs nothing but its rc file and a writable
$HOME/.local/share/linphone: without that directory liblinphone cannot create its
database (linphone.db), gives up starting the core without a word on the console, and
never sends a REGISTER (`status register` says registered=-1). No sound card is
needed. It publishes its own PIDF extension (<pidfonline:online/>), which must come
back to the watcher in the NOTIFY.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from .conftest import Stack, eventually
from .sip_client import SipClient
from .test_subscribe import WatcherDialog

pytestmark = pytest.mark.integration

RC = """[sip]
sip_port=-1
sip_tcp_port=0
sip_tls_port=0
default_proxy=0
[proxy_0]
reg_proxy=<sip:{host}:{port}>
reg_identity=sip:{user}@127.0.0.1
reg_expires=600
reg_sendregister=1
publish=1
"""

# One line of liblinphone's log starts with its time: "2026-01-31 12:00:00:123 ".
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3} ", re.MULTILINE)


class Linphone:
    """One linphonec process, driven by its console commands on stdin."""

    def __init__(self, home: Path, user: str, server: tuple[str, int]) -> None:
        self.user = user
        self.uri = f"sip:{user}@127.0.0.1"
        (home / ".local" / "share" / "linphone").mkdir(parents=True)
        self.rc = home / "linphonerc"
        self.rc.write_text(RC.format(host=server[0], port=server[1], user=user))
        self.console = home / "console.log"
        self.log = home / "linphone.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
        env["HOME"] = str(home)
        self.process = subprocess.Popen(
            ["linphonec", "-c", str(self.rc), "-d", "6", "-l", str(self.log)],
            stdin=subprocess.PIPE,
            stdout=self.console.open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
        )

    def command(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def output(self) -> str:
        return self.console.read_text(errors="replace")

    def received(self, method: str) -> list[str]:
        """The SIP requests of `method` that liblinphone logged as received."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        messages = []
        for entry in LOG_LINE.split(text):
            head, _, message = entry.partition("\n")
            if "new bytes from" in head and message.startswith(f"{method} "):
                messages.append(message)
        return messages

    def wait_for_output(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.process.poll() is None, f"linphonec exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout}s:\n{self.output()}"
            time.sleep(0.1)

    def quit(self) -> None:
        """linphonec's own quit: un-PUBLISH, un-SUBSCRIBE, unregister, then exit."""
        self.command("quit")
        self.process.wait(20)

    def tuple_id(self) -> str:
        """The id of the tuple in this linphonec's first PUBLISH (random per start)."""
        found = re.search(r'<tuple id="([^"]+)">', self.log.read_text(errors="replace"))
        assert found is not None, "no PUBLISH in the log"
        return found[1]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)


def notify_about(watcher: Linphone, presentity: Linphone, basic: str, timeout: float = 5) -> str:
    """The last NOTIFY in the watcher's log about the presentity with this status
    (polled: liblinphone writes its log as it goes)."""
    deadline = time.monotonic() + timeout
    while True:
        for notify in reversed(watcher.received("NOTIFY")):
            if f"From: <{presentity.uri}>" in notify and f"<basic>{basic}</basic>" in notify:
                return notify
        if time.monotonic() > deadline:
            raise AssertionError(f"no NOTIFY with {basic}: {watcher.received('NOTIFY')}")
        time.sleep(0.1)


async def test_linphone_watcher_sees_linphone_presentity(
    stack: Stack, db: asyncpg.Connection, tmp_path: Path
) -> None:
    # Names of their own: the test database is shared by every module of the session.
    suffix = secrets.token_hex(3)
    alice = Linphone(tmp_path / "alice", f"alice-{suffix}", stack.sip)
    bob = None

    def count(sql: str, user: Linphone) -> Callable[[], Awaitable[object]]:
        return lambda: db.fetchval(sql, user.user)

    try:
        body = await eventually(
            lambda: db.fetchval("SELECT body FROM presentity WHERE username = $1", alice.user),
            lambda body: body is not None,
            "alice's publication",
        )
        assert "<basic>open</basic>" in str(body) and "<pidfonline:online/>" in str(body)
        contacts = await db.fetch("SELECT contact FROM location WHERE username = $1", alice.user)
        assert len(contacts) == 1 and contacts[0]["contact"].startswith(alice.uri + ":")

        bob = Linphone(tmp_path / "bob", f"bob-{suffix}", stack.sip)
        bob.command(f"friend add Alice {alice.uri}")
        bob.wait_for_output(f'Friend "Alice" <{alice.uri}> is Online')
        watcher = await db.fetchrow(
            "SELECT status, from_user FROM active_watchers"
            " WHERE to_user = $1 AND event = 'presence'",
            alice.user,
        )
        assert watcher is not None and tuple(watcher) == ("active", bob.user)
        notify = notify_about(bob, alice, "open")
        assert "Subscription-State: active" in notify
        assert "Content-Type: application/pidf+xml" in notify
        assert "<pidfonline:online/>" in notify  # linphone's extension, passed through

        alice.quit()
        bob.wait_for_output(f'Friend "Alice" <{alice.uri}> is Offline')
        assert "Subscription-State: active" in notify_about(bob, alice, "closed")
        await eventually(
            count("SELECT count(*) FROM presentity WHERE username = $1", alice),
            lambda n: n == 0,
            "alice's publication to be removed",
        )
        assert await count("SELECT count(*) FROM location WHERE username = $1", alice)() == 0

        # bob quits: his un-SUBSCRIBE ends the dialog at once (Expires 0; the row goes
        # when its final NOTIFY is answered or times out: linphonec may be gone by then).
        bob.quit()
        await eventually(
            count(
                "SELECT count(*) FROM active_watchers"
                " WHERE from_user = $1 AND expires > extract(epoch FROM now())",
                bob,
            ),
            lambda n: n == 0,
            "bob's subscription to end",
        )
        assert await count("SELECT count(*) FROM location WHERE username = $1", bob)() == 0
    finally:
        alice.kill()
        if bob is not None:
            bob.kill()


async def test_two_linphones_of_one_user_are_two_devices(
    stack: Stack, db: asyncpg.Connection, tmp_path: Path
) -> None:
    """alice on two linphones (each with its own instance id in its REGISTER, both
    writing the AOR as <contact>): a watcher sees both devices' tuples; when one
    quits (un-PUBLISH), the other's stays open."""
    user = f"alice-{secrets.token_hex(3)}"
    phone = Linphone(tmp_path / "phone", user, stack.sip)
    desk = Linphone(tmp_path / "desk", user, stack.sip)
    client = SipClient(stack.sip, "udp")
    watcher = WatcherDialog(client, phone.uri, secrets.token_hex(8), secrets.token_hex(4))
    try:
        devices = await eventually(
            lambda: db.fetch("SELECT device FROM presentity WHERE username = $1", user),
            lambda rows: len(rows) == 2,  # type: ignore[arg-type]
            "both linphones' publications",
        )
        kinds = {str(row["device"]).split(":", 2)[1] for row in devices}  # type: ignore[union-attr]
        assert kinds == {"urn"}, devices  # each tied to its registration's +sip.instance
        assert len({row["device"] for row in devices}) == 2  # type: ignore[union-attr]
        phone_tuple, desk_tuple = phone.tuple_id(), desk.tuple_id()

        assert (await asyncio.to_thread(watcher.subscribe)).status == 200
        both = await asyncio.to_thread(
            watcher.notify_until,
            lambda shown: shown.get(phone_tuple) == "open" and shown.get(desk_tuple) == "open",
        )
        assert len(both) == 2

        phone.quit()
        after = await asyncio.to_thread(
            watcher.notify_until, lambda shown: shown.get(phone_tuple) != "open"
        )
        assert after.get(desk_tuple) == "open", after
        await eventually(
            lambda: db.fetchval("SELECT count(*) FROM presentity WHERE username = $1", user),
            lambda n: n == 1,
            "only the desk's publication left",
        )
    finally:
        client.close()
        phone.kill()
        desk.kill()
