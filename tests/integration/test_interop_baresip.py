"""A real SIP client against the real stack: two baresip instances (Debian's
baresip-core, installed by `make test`). alice publishes her presence; bob
subscribes to alice and must see her Online, then Offline; the same over TLS.

baresip pre-loads a Route to its outbound proxy (our edge), publishes with its
own PIDF and subscribes without Accept: the interoperability cases a real client brings.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from presence.pidf.device import tuple_id_suffix
from presence.runtime.local_ca import ensure

from .conftest import Stack, free_port, running_stack
from .sip_client import SipClient
from .test_subscribe import WatcherDialog

pytestmark = pytest.mark.integration

CONFIG = """poll_method\tepoll
sip_listen\t127.0.0.1:{port}
net_interface\t127.0.0.1
module_path\t/usr/lib/baresip/modules
module\tstdio.so
module_app\taccount.so
module_app\tcontact.so
module_app\tmenu.so
module_app\tpresence.so
audio_player\taufile,/dev/null
audio_source\taufile,/dev/null
"""


class Baresip:
    """One baresip process, driven through its console keys on stdin."""

    def __init__(
        self,
        home: Path,
        user: str,
        server: tuple[str, int],
        contacts: str = "",
        tls_ca: Path | None = None,
    ) -> None:
        """With `tls_ca`, `server` is the TLS port and baresip reaches it over TLS
        (its outbound proxy `;transport=tls`), with that CA file as `sip_cafile`."""
        home.mkdir(parents=True)
        # baresip also binds TLS on its SIP port + 1: keep both free.
        port = free_port()
        while not _free(port + 1):
            port = free_port()
        config = CONFIG.format(port=port)
        if tls_ca is not None:
            config += f"sip_cafile\t{tls_ca}\n"
        (home / "config").write_text(config)
        self.port = port  # its PUBLISHes come from here: the flow that is its device
        transport = ";transport=tls" if tls_ca is not None else ""
        outbound = f'outbound="sip:{server[0]}:{server[1]}{transport}"'
        (home / "accounts").write_text(f"<sip:{user}@127.0.0.1>;regint=0;pubint=60;{outbound}\n")
        (home / "contacts").write_text(contacts)
        self.log = home / "console.log"
        self.process = subprocess.Popen(
            ["baresip", "-f", str(home)],
            stdin=subprocess.PIPE,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def key(self, keys: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(keys.encode())
        self.process.stdin.flush()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def stack(test_database: str) -> Iterator[Stack]:
    with running_stack(test_database, PRESENCE_FORCE_ACTIVE="1") as running:
        yield running


def alice_as_bob_sees_her(bob: Baresip, timeout: float = 20) -> str:
    """Ask bob's console for its contact list until alice's status is known."""
    deadline = time.monotonic() + timeout
    status = "Unknown"
    while time.monotonic() < deadline:
        bob.key("C")  # the console key for "list contacts"
        time.sleep(0.3)  # the console's answer: polled, under the deadline above
        listed = re.findall(r"(\w+)\s+Alice <sip:alice@127.0.0.1>", _plain(bob.output()))
        if listed and listed[-1] != "Unknown":
            status = listed[-1]
            break
    return status


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_baresip_watcher_sees_baresip_presentity(stack: Stack, tmp_path: Path) -> None:
    alice = Baresip(tmp_path / "alice", "alice", stack.sip)
    bob = Baresip(
        tmp_path / "bob", "bob", stack.sip, contacts='"Alice" <sip:alice@127.0.0.1>;presence=p2p\n'
    )
    try:
        alice.key("[")  # presence online
        assert alice_as_bob_sees_her(bob) == "Online", bob.output()
        alice.key("]")  # presence offline
        deadline = time.monotonic() + 20
        while alice_as_bob_sees_her(bob, timeout=2) != "Offline":
            assert time.monotonic() < deadline, bob.output()
    finally:
        alice.stop()
        bob.stop()


def test_two_baresips_of_one_user_are_two_devices(stack: Stack, tmp_path: Path) -> None:
    """alice on two baresips: identical PIDF bodies (tuple id t4109, the AOR as
    contact), no instance id, no registration: their flows tell them apart. A watcher
    sees both tuples (under ids made unique per device); when one quits (its
    un-PUBLISH), the other's tuple stays open."""
    user = f"alice-{secrets.token_hex(3)}"
    phone = Baresip(tmp_path / "phone", user, stack.sip)
    desk = Baresip(tmp_path / "desk", user, stack.sip)
    client = SipClient(stack.sip, "udp")
    watcher = WatcherDialog(
        client, f"sip:{user}@127.0.0.1", secrets.token_hex(8), secrets.token_hex(4)
    )

    def shown_as(device: Baresip) -> str:
        return "t4109-" + tuple_id_suffix(f"flow:udp:127.0.0.1:{device.port}")

    try:
        assert watcher.subscribe().status == 200
        phone.key("[")  # presence online
        desk.key("[")
        both = watcher.notify_until(
            lambda shown: (
                shown.get(shown_as(phone)) == "open" and shown.get(shown_as(desk)) == "open"
            )
        )
        assert len(both) == 2, both
        phone.stop()  # baresip un-PUBLISHes as it exits
        after = watcher.notify_until(lambda shown: shown_as(phone) not in shown)
        assert after == {"t4109": "open"}, after  # the desk's, its id plain again
    finally:
        client.close()
        phone.stop()
        desk.stop()


def test_baresip_watcher_sees_baresip_presentity_over_tls(
    test_database: str, tmp_path: Path
) -> None:
    """Debian's baresip over TLS (libre's OpenSSL transport, `sip_cafile` the CA made
    for the test): alice publishes, bob watches, both over TLS. (baresip 1.0 does not
    verify the server: with a CA that did not sign the server's certificate it is
    served all the same, so this shows TLS interoperability, not its verification;
    PJSIP's test covers that.)"""
    local_ca = ensure(tmp_path / "ca")
    with running_stack(
        test_database,
        PRESENCE_FORCE_ACTIVE="1",
        PRESENCE_TLS_CERT=str(local_ca.server_cert),
        PRESENCE_TLS_KEY=str(local_ca.server_key),
    ) as stack:
        server = ("127.0.0.1", int(stack.env["PRESENCE_SIP_TLS_PORT"]))
        alice = Baresip(tmp_path / "alice", "alice", server, tls_ca=local_ca.ca_cert)
        bob = Baresip(
            tmp_path / "bob",
            "bob",
            server,
            contacts='"Alice" <sip:alice@127.0.0.1>;presence=p2p\n',
            tls_ca=local_ca.ca_cert,
        )
        try:
            alice.key("[")  # presence online
            assert alice_as_bob_sees_her(bob) == "Online", bob.output()
            assert "tls" in asyncio.run(live_watcher_transports(stack.db_url, "alice", "bob"))
            alice.key("]")  # presence offline
            deadline = time.monotonic() + 20
            while alice_as_bob_sees_her(bob, timeout=2) != "Offline":
                assert time.monotonic() < deadline, bob.output()
        finally:
            alice.stop()
            bob.stop()


async def live_watcher_transports(db_url: str, presentity: str, watcher: str) -> set[str]:
    """The transports of the flows of `watcher`'s unexpired presence subscriptions."""
    connection = await asyncpg.connect(db_url)
    try:
        flows = await connection.fetch(
            "SELECT flow FROM active_watchers WHERE to_user = $1 AND from_user = $2"
            " AND event = 'presence' AND expires > extract(epoch FROM now())",
            presentity,
            watcher,
        )
    finally:
        await connection.close()
    return {row["flow"].partition(":")[0] for row in flows}
