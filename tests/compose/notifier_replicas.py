"""Notifier replicas in the composed stack (make compose-test, after `--scale notifier=3`).

1. spread: PUBLISH changes for many presentities and count, per notifier replica,
   the change events it handled (each replica logs one line per change:
   `presentity_changed <user>@<domain> presence: <n> NOTIFY`); every replica must
   handle some (the presence.changes partitions are shared by the consumer group).
2. kill: watchers subscribe to presentities whose state changes in rounds; while
   PUBLISHes flow, the replica that handled most of them is killed (`docker kill`,
   SIGKILL: nothing committed, nothing said goodbye); the load goes on until the
   survivors have taken over its partitions, then stops. Every watcher must end up
   with a NOTIFY showing its presentity's last state: no NOTIFY lost.

Runs on the Docker host, not in a container: it speaks SIP over UDP straight to the
sip-edge container's address on the compose network (the host's address on that
bridge is the Contact of its watchers), and uses the docker CLI to find, read and
kill the notifier containers (by the labels both docker-compose 1.29 and Compose v2
set). Every wait has a deadline; nothing waits a fixed time.

    .venv/bin/python tests/compose/notifier_replicas.py --project presence-compose-test

The name does not match `test_*.py`: `make test` must not collect it.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from presence.sip.message import SipParseError, SipRequest, SipResponse
from presence.sip.parser import parse_message, serialize
from presence.sip.responses import make_response

DOMAIN = "example.com"
NOTE = re.compile(rb"<note[^>]*>change (\d+)</note>")
T1 = 0.5  # s, RFC 3261: PUBLISH and SUBSCRIBE are retransmitted from here, doubling to T2
T2 = 4.0
TIMER_B = 32.0
ROUND_INTERVAL = 0.5  # s between the starts of two rounds of changes in the kill check


class CheckFailed(Exception):
    pass


def say(text: str) -> None:
    print(f"compose-test:   {text}", flush=True)


# --- docker -----------------------------------------------------------------------


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CheckFailed(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Container:
    id: str
    name: str
    address: str


def containers(project: str, service: str) -> list[Container]:
    """The running containers of one compose service, by name."""
    ids = docker(
        "ps", "-q",
        "--filter", f"label=com.docker.compose.project={project}",
        "--filter", f"label=com.docker.compose.service={service}",
    ).split()  # fmt: skip
    found = []
    for id_ in ids:
        name, _, address = docker(
            "inspect", "-f",
            "{{.Name}} {{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", id_,
        ).strip().partition(" ")  # fmt: skip
        found.append(Container(id_, name.lstrip("/"), address.split()[0] if address else ""))
    return sorted(found, key=lambda c: c.name)


def handled(container: Container, prefix: str) -> list[str]:
    """The presentities (user part starting with prefix) of every change event the
    replica logged, one entry per event; a killed container's log stays readable."""
    done = subprocess.run(
        ["docker", "logs", container.id], capture_output=True, text=True, check=False
    )
    pattern = re.compile(
        rf"presentity_changed ({re.escape(prefix)}[^@\s]*)@{DOMAIN} presence: \d+ NOTIFY"
    )
    return pattern.findall(done.stdout + done.stderr)


def counts(replicas: list[Container], prefix: str) -> dict[str, int]:
    return {r.name: len(handled(r, prefix)) for r in replicas}


# --- SIP ----------------------------------------------------------------------------


@dataclass
class Dialog:
    user: str
    status: int = 0  # final response to the SUBSCRIBE
    notifies: int = 0
    notes: list[int] = field(default_factory=list)  # states shown, in arrival order
    terminated: bool = False

    @property
    def last(self) -> int:
        return max(self.notes, default=-1)


class Agent(asyncio.DatagramProtocol):
    """One UDP socket for every publisher and watcher; answers each NOTIFY at once."""

    def __init__(self, edge: tuple[str, int], local_ip: str) -> None:
        self.edge = edge
        self.local_ip = local_ip
        self.local_port = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.finals: dict[str, asyncio.Future[SipResponse]] = {}
        self.dialogs: dict[str, Dialog] = {}
        self.seen: set[tuple[str, str]] = set()
        self.anomalies: dict[str, int] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's
        self.local_port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            message = parse_message(data)
        except SipParseError:
            self._anomaly("unparsable datagram")
            return
        call_id = message.headers.get("Call-ID") or ""
        if isinstance(message, SipResponse):
            future = self.finals.get(call_id)
            if message.status >= 200 and future is not None and not future.done():
                future.set_result(message)
            return
        if message.method != "NOTIFY":
            return
        assert self.transport is not None
        self.transport.sendto(serialize(make_response(message, 200)), addr)
        self._notify(call_id, message)

    def _notify(self, call_id: str, message: SipRequest) -> None:
        cseq = message.headers.get("CSeq") or ""
        if (call_id, cseq) in self.seen:
            return  # a retransmission
        self.seen.add((call_id, cseq))
        dialog = self.dialogs.get(call_id)
        if dialog is None:
            self._anomaly("NOTIFY for an unknown dialog")
            return
        dialog.notifies += 1
        state = (message.headers.get("Subscription-State") or "").lower()
        dialog.terminated = dialog.terminated or state.startswith("terminated")
        match = NOTE.search(message.body)
        if match is None:
            self._anomaly("NOTIFY without a note (pending subscription? PRESENCE_FORCE_ACTIVE=1)")
            return
        note = int(match.group(1))
        if note < dialog.last:
            self._anomaly("NOTIFY with an older state after a newer one")
        dialog.notes.append(note)

    def _anomaly(self, what: str) -> None:
        self.anomalies[what] = self.anomalies.get(what, 0) + 1

    def _request(
        self, method: str, user: str, call_id: str, headers: list[str], body: str = ""
    ) -> bytes:
        lines = [
            f"{method} sip:{user}@{DOMAIN} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.local_ip}:{self.local_port};branch=z9hG4bK-{call_id};rport",
            "Max-Forwards: 70",
            f"Call-ID: {call_id}",
            f"To: <sip:{user}@{DOMAIN}>",
            f"CSeq: 1 {method}",
            *headers,
            f"Content-Length: {len(body.encode())}",
            "",
            body,
        ]
        return "\r\n".join(lines).encode()

    async def _transact(self, call_id: str, data: bytes) -> SipResponse:
        """Send, retransmit as RFC 3261 §17.1.2 says, return the final response."""
        assert self.transport is not None
        future = self.finals[call_id] = asyncio.get_running_loop().create_future()
        interval, deadline = T1, time.monotonic() + TIMER_B
        try:
            while True:
                self.transport.sendto(data, self.edge)
                try:
                    return await asyncio.wait_for(asyncio.shield(future), interval)
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise CheckFailed(
                            f"no final response to {call_id} within {TIMER_B:.0f}s"
                        ) from None
                    interval = min(interval * 2, T2)
        finally:
            del self.finals[call_id]

    async def publish(self, user: str, change: int) -> int:
        """An initial PUBLISH of one device (always the same tuple id): it replaces
        the device's last publication (PRESENCE_REPLACE_SAME_DEVICE), so no entity
        tags to track, and the document shows `change <n>`."""
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf"'
            f' entity="sip:{user}@{DOMAIN}"><tuple id="load"><status><basic>open</basic></status>'
            f"<contact>sip:{user}@{DOMAIN}</contact></tuple><note>change {change}</note></presence>"
        )
        call_id = f"pub-{secrets.token_hex(6)}"
        headers = [
            f"From: <sip:{user}@{DOMAIN}>;tag={secrets.token_hex(4)}",
            "Event: presence", "Expires: 600", "Content-Type: application/pidf+xml",
        ]  # fmt: skip
        response = await self._transact(
            call_id, self._request("PUBLISH", user, call_id, headers, body)
        )
        return response.status

    async def subscribe(self, user: str, watcher: str) -> Dialog:
        call_id = f"sub-{secrets.token_hex(6)}"
        dialog = self.dialogs[call_id] = Dialog(user)  # its NOTIFY may overtake the 200
        headers = [
            f"From: <sip:{watcher}@{DOMAIN}>;tag={secrets.token_hex(4)}",
            f"Contact: <sip:{watcher}@{self.local_ip}:{self.local_port}>",
            "Event: presence", "Accept: application/pidf+xml", "Expires: 600",
        ]  # fmt: skip
        response = await self._transact(call_id, self._request("SUBSCRIBE", user, call_id, headers))
        dialog.status = response.status
        if response.status != 200:
            raise CheckFailed(f"SUBSCRIBE to {user} got {response.status} {response.reason}")
        return dialog


async def until(what: str, condition: Callable[[], bool], timeout: float) -> float:
    """Poll condition until true; seconds it took, CheckFailed at the deadline."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise CheckFailed(f"after {timeout:.0f}s still not: {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def publish_all(agent: Agent, users: list[str], change: int) -> None:
    statuses = await asyncio.gather(*(agent.publish(u, change) for u in users))
    failed = [s for s in statuses if s != 200]
    if failed:
        raise CheckFailed(
            f"{len(failed)} of {len(users)} PUBLISHes (change {change}) failed:"
            f" {sorted(set(failed))}"
        )


async def setup(
    agent: Agent, prefix: str, presentities: int, watchers: int
) -> tuple[list[str], list[Dialog]]:
    """Presentities showing change 0, each watched by `watchers` subscriptions that saw it."""
    users = [f"{prefix}-{i}" for i in range(presentities)]
    await publish_all(agent, users, 0)
    dialogs = list(
        await asyncio.gather(
            *(agent.subscribe(u, f"w{k}-{u}") for u in users for k in range(watchers))
        )
    )
    await until(
        "every watcher got its first NOTIFY with change 0",
        lambda: all(d.last >= 0 for d in dialogs),
        30,
    )
    return users, dialogs


# --- the checks ---------------------------------------------------------------------


async def spread(agent: Agent, project: str, presentities: int) -> None:
    """Each replica handles some of the change events, in one round after the group settled."""
    replicas = containers(project, "notifier")
    if len(replicas) < 3:
        raise CheckFailed(
            f"{len(replicas)} notifier containers run, 3 expected (--scale notifier=3)"
        )
    prefix = f"spread-{secrets.token_hex(3)}"
    users, dialogs = await setup(agent, prefix, presentities, 1)
    # setup()'s first PUBLISHes came before any watcher: a presentity nobody watches
    # puts no change event on the bus, so only the rounds below are counted.
    published = sum(counts(replicas, prefix).values())
    start = time.monotonic()
    for change in range(1, 1000):
        before = counts(replicas, prefix)
        await publish_all(agent, users, change)
        published += len(users)
        await until(
            f"every watcher saw change {change}",
            lambda c=change: all(d.last >= c for d in dialogs),
            30,
        )
        # The log line follows the NOTIFY's hand-off; wait until every event is logged.
        await until(
            f"the notifier logs show {published} change events of {prefix}",
            lambda n=published: sum(counts(replicas, prefix).values()) >= n,
            30,
        )
        after = counts(replicas, prefix)
        this_round = {name: after[name] - before[name] for name in after}
        say(
            f"round {change}: {len(users)} PUBLISHes, change events handled per replica: "
            + ", ".join(f"{name} {n}" for name, n in this_round.items())
        )
        if all(this_round.values()):
            break
        if time.monotonic() - start > 90:
            raise CheckFailed(
                "after 90s of rounds, some notifier replica still handles no change event"
            )
    total = counts(replicas, prefix)
    for name, n in total.items():
        say(f"{name}: {n} change events of {len(users)} presentities ({prefix}-*)")


async def kill_one(agent: Agent, project: str, presentities: int, watchers: int) -> None:
    """Kill a notifier replica while PUBLISHes flow; every watcher gets the last state."""
    replicas = containers(project, "notifier")
    if len(replicas) < 2:
        raise CheckFailed(f"{len(replicas)} notifier containers run; killing one needs 2 or more")
    prefix = f"kill-{secrets.token_hex(3)}"
    users, dialogs = await setup(agent, prefix, presentities, watchers)
    say(f"{len(users)} presentities x {watchers} watchers subscribed, all saw change 0")

    rounds, answered_at = 0, 0.0
    stop = asyncio.Event()

    async def load() -> None:
        """A change of every presentity each ROUND_INTERVAL (each round's 200s awaited)."""
        nonlocal rounds, answered_at
        while not stop.is_set():
            began = time.monotonic()
            await publish_all(agent, users, rounds + 1)
            rounds, answered_at = rounds + 1, time.monotonic()
            await asyncio.sleep(max(0.0, ROUND_INTERVAL - (time.monotonic() - began)))

    loader = asyncio.create_task(load())
    try:
        await until("two rounds of changes answered", lambda: rounds >= 2 or loader.done(), 60)
        if loader.done():
            loader.result()
        before = {r.name: handled(r, prefix) for r in replicas}
        victim = max(replicas, key=lambda r: len(before[r.name]))
        theirs = set(before[victim.name])  # presentities on the victim's partitions
        survivors = [r for r in replicas if r is not victim]
        taken_before = sum(sum(u in theirs for u in before[r.name]) for r in survivors)
        docker("kill", victim.id)
        killed_at, killed_round = time.monotonic(), rounds
        say(
            f"killed {victim.name} (SIGKILL) after round {killed_round}, PUBLISHes flowing; it had"
            f" handled {len(before[victim.name])} change events of {len(theirs)} presentities"
        )

        def taken_over() -> bool:
            if loader.done():
                return True
            now = sum(sum(u in theirs for u in handled(r, prefix)) for r in survivors)
            return now > taken_before

        took = await until(
            f"the survivors handle changes of {victim.name}'s presentities", taken_over, 120
        )
        if loader.done():
            loader.result()
        say(f"the survivors took over its partitions {took:.1f}s after the kill (round {rounds})")
        # Two more rounds on the new assignment, then the load stops.
        target = rounds + 2
        await until(f"round {target} answered", lambda: rounds >= target or loader.done(), 60)
    finally:
        stop.set()
        await loader  # ends after the round in hand; raises what the load hit
    final, ended_at = rounds, answered_at
    await until(
        f"every watcher saw change {final}, the last state of its presentity",
        lambda: all(d.last >= final for d in dialogs),
        120,
    )
    waited = time.monotonic() - ended_at
    terminated = [d for d in dialogs if d.terminated]
    if terminated:
        raise CheckFailed(f"{len(terminated)} subscriptions were terminated")
    notifies = sum(d.notifies for d in dialogs)
    shown = sorted(len(set(d.notes)) for d in dialogs)
    load_span = f"the last answered {ended_at - killed_at:.1f}s after the kill"
    say(f"load: {final} rounds of {len(users)} PUBLISHes, {load_span}")
    say(
        f"all {len(dialogs)} watchers show change {final}, {waited:.1f}s after the last 200;"
        f" {notifies} NOTIFYs, distinct states seen per watcher min {shown[0]}"
        f" median {shown[len(shown) // 2]} of {final + 1}"
    )
    for name, n in counts(replicas, prefix).items():
        say(f"{name}{' (killed)' if name == victim.name else ''}: {n} change events of {prefix}-*")


async def main(args: argparse.Namespace) -> int:
    edges = containers(args.project, "sip-edge")
    if not edges or not edges[0].address:
        raise CheckFailed(f"no running sip-edge container in compose project {args.project}")
    edge = (edges[0].address, 5060)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect(edge)
    local_ip = probe.getsockname()[0]  # the host's address on the compose network
    probe.close()
    loop = asyncio.get_running_loop()
    transport, agent = await loop.create_datagram_endpoint(
        lambda: Agent(edge, local_ip), local_addr=("0.0.0.0", 0)
    )
    try:
        if "spread" in args.checks:
            say(f"change events over the notifier replicas (SIP to {edge[0]} from {local_ip})")
            await spread(agent, args.project, args.presentities)
        if "kill" in args.checks:
            say("one notifier killed mid-load")
            await kill_one(agent, args.project, args.presentities, args.watchers)
    finally:
        transport.close()
    if agent.anomalies:
        say("noticed (not failures): " + ", ".join(f"{k}: {v}" for k, v in agent.anomalies.items()))
    return 0


def cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", default="presence-compose-test", help="compose project name")
    parser.add_argument("--checks", default="spread,kill", help="spread, kill or both")
    parser.add_argument("--presentities", type=int, default=24)
    parser.add_argument("--watchers", type=int, default=2, help="per presentity, in the kill check")
    args = parser.parse_args()
    try:
        return asyncio.run(main(args))
    except CheckFailed as failure:
        print(f"compose-test:   FAILED: {failure}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(cli())
