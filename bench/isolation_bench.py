"""What one misbehaving client costs everybody else: other users' PUBLISH latency while
a bad input is sent every second.

Against a running stack (`make run`, with or without PRESENCE_AUTH=digest), it has
`--users` well-behaved users publish over UDP at `--rate` PUBLISH/s in all (each
user refreshes its own publication with SIP-If-Match), and meanwhile, once a second,
one of these:

  none            nothing: the baseline
  auth-nul        a PUBLISH whose digest user name holds a NUL (needs digest)
  auth-nonascii   a PUBLISH whose digest response is not ASCII (needs digest)
  tcp-blackhole   a new SUBSCRIBE whose Record-Route names a loopback TCP port
                  that accepts no connection (its listen queue is full, so the
                  connect for its NOTIFY hangs)

It prints the good PUBLISHes' latency (send to 200) and what the bad requests got,
and writes both to a JSON file. With digest, users are added to the credentials
table first (`--db-url`).

    .venv/bin/python bench/isolation_bench.py --scenario auth-nul --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import secrets
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from presence.sip.digest import ha1, hash_hex
from presence.sip.message import SipRequest, SipResponse
from presence.sip.parser import parse_message

DOMAIN = "example.com"
PASSWORD = "isolation-bench-password"
ANSWER_TIMEOUT = 10.0


def pidf(entity: str, note: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{entity}">'
        f'<tuple id="t1"><status><basic>open</basic></status><note>{note}</note></tuple>'
        "</presence>"
    ).encode()


def digest(user: str, method: str, uri: str, nonce: str, nc: int) -> str:
    algorithm, cnonce = "SHA-256", secrets.token_hex(4)
    secret = ha1(algorithm, user, DOMAIN, PASSWORD)
    response = hash_hex(
        algorithm,
        f"{secret}:{nonce}:{nc:08x}:{cnonce}:auth:{hash_hex(algorithm, f'{method}:{uri}')}",
    )
    return (
        f'Digest username="{user}", realm="{DOMAIN}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm={algorithm}, qop=auth, nc={nc:08x}, cnonce="{cnonce}"'
    )


def sha256_nonce(response: SipResponse) -> str | None:
    for value in response.headers.get_all("WWW-Authenticate"):
        if "SHA-256" in value:
            for part in value[len("Digest ") :].split(","):
                name, _, raw = part.strip().partition("=")
                if name == "nonce":
                    return raw.strip('"')
    return None


class UdpAgent(asyncio.DatagramProtocol):
    """One UDP socket; responses matched to requests by Call-ID and CSeq; NOTIFYs
    answered 200."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[tuple[str, str], asyncio.Future[SipResponse]] = {}
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            message = parse_message(data, datagram=True)
        except Exception:
            return
        if isinstance(message, SipRequest):
            self._answer(message, addr)
            return
        if message.status < 200:
            return
        key = (message.headers.get("Call-ID") or "", message.headers.get("CSeq") or "")
        future = self.waiting.pop(key, None)
        if future is not None and not future.done():
            future.set_result(message)

    def _answer(self, request: SipRequest, addr: tuple[str, int]) -> None:
        lines = ["SIP/2.0 200 OK"]
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            lines += [f"{name}: {value}" for value in request.headers.get_all(name)]
        lines += ["Content-Length: 0", "", ""]
        assert self.transport is not None
        self.transport.sendto("\r\n".join(lines).encode(), addr)

    async def transact(
        self, server: tuple[str, int], data: bytes, call_id: str, cseq: str
    ) -> SipResponse | None:
        future: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        self.waiting[(call_id, cseq)] = future
        assert self.transport is not None
        self.transport.sendto(data, server)
        try:
            return await asyncio.wait_for(future, ANSWER_TIMEOUT)
        except TimeoutError:
            self.waiting.pop((call_id, cseq), None)
            return None


@dataclass
class User:
    """A UA that keeps one publication (and a Call-ID/CSeq space of its own)."""

    name: str
    agent: UdpAgent
    server: tuple[str, int]
    call_id: str = field(default_factory=lambda: secrets.token_hex(8))
    cseq: int = 0
    nonce: str | None = None
    nc: int = 0
    etag: str | None = None

    @property
    def aor(self) -> str:
        return f"sip:{self.name}@{DOMAIN}"

    def build(
        self,
        method: str,
        uri: str,
        headers: list[tuple[str, str]],
        body: bytes = b"",
        *,
        authorization: str | None = None,
        call_id: str | None = None,
    ) -> tuple[bytes, str, str]:
        self.cseq += 1
        call_id = call_id or self.call_id
        cseq = f"{self.cseq} {method}"
        if authorization:
            headers = [*headers, ("Authorization", authorization)]
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.agent.port}"
            f";branch=z9hG4bK{secrets.token_hex(8)};rport",
            "Max-Forwards: 70",
            f"From: <{self.aor}>;tag={secrets.token_hex(4)}",
            f"To: <{uri}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq}",
            *(f"{name}: {value}" for name, value in headers),
            f"Content-Length: {len(body)}",
            "",
            "",
        ]
        return "\r\n".join(lines).encode() + body, call_id, cseq

    async def send(
        self, method: str, uri: str, headers: list[tuple[str, str]], body: bytes = b""
    ) -> SipResponse | None:
        """The request, authenticated when the server challenges (once per nonce)."""
        for _ in range(2):
            authorization = None
            if self.nonce is not None:
                self.nc += 1
                authorization = digest(self.name, method, uri, self.nonce, self.nc)
            data, call_id, cseq = self.build(
                method, uri, headers, body, authorization=authorization
            )
            response = await self.agent.transact(self.server, data, call_id, cseq)
            if response is None or response.status != 401:
                return response
            self.nonce, self.nc = sha256_nonce(response), 0
        return response

    async def publish(self, note: str) -> SipResponse | None:
        headers = [
            ("Event", "presence"),
            ("Content-Type", "application/pidf+xml"),
            ("Expires", "300"),
        ]
        if self.etag:
            headers.append(("SIP-If-Match", self.etag))
        response = await self.send("PUBLISH", self.aor, headers, pidf(self.aor, note))
        if response is not None:
            if response.status == 200:
                self.etag = response.headers.get("SIP-ETag")
            elif response.status == 412:
                self.etag = None
        return response


async def good_load(
    users: list[User],
    rate: float,
    duration: float,
    latencies: list[float],
    failures: list[str],
    answer_times: list[float],
) -> None:
    """Each user publishes in turn so that all together send `rate` PUBLISH/s; a
    user's next PUBLISH waits for its previous answer (as a phone does). Records the
    time to a 200 (`latencies`) and to any final answer or the give-up
    (`answer_times`: a stall answered with 503 shows there, not in `latencies`)."""
    interval = len(users) / rate

    async def run(user: User, offset: float) -> None:
        await asyncio.sleep(offset)
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < duration:
            sent = time.monotonic()
            response = await user.publish(f"n{n}")
            n += 1
            answer_times.append(time.monotonic() - sent)
            if response is None:
                failures.append("timeout")
            elif response.status != 200:
                failures.append(str(response.status))
            else:
                latencies.append(time.monotonic() - sent)
            await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))

    await asyncio.gather(*(run(u, i * interval / len(users)) for i, u in enumerate(users)))


def blackhole_listener() -> tuple[socket.socket, list[socket.socket], int]:
    """A loopback TCP port whose listen queue is full: the kernel drops further SYNs,
    so a connect to it neither succeeds nor fails until the client gives up."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    return listener, fillers, port


async def bad_load(
    scenario: str, agent: UdpAgent, server: tuple[str, int], duration: float, outcomes: list[str]
) -> None:
    mallory = User("mallory", agent, server)
    victim = User("victim", agent, server)
    held: list[socket.socket] = []
    if scenario == "tcp-blackhole":
        listener, fillers, port = blackhole_listener()
        held = [listener, *fillers]
        watcher = User("watcher", agent, server)
    start = time.monotonic()
    n = 0
    try:
        while time.monotonic() - start < duration:
            n += 1
            if scenario == "tcp-blackhole":
                task = blackhole_subscribe(watcher, victim, port)
            else:
                task = bad_publish(scenario, mallory)
            asyncio.get_running_loop().create_task(record(task, outcomes))
            await asyncio.sleep(max(0.0, start + n - time.monotonic()))
        await asyncio.sleep(ANSWER_TIMEOUT)
    finally:
        for sock in held:
            sock.close()


async def blackhole_subscribe(watcher: User, victim: User, port: int) -> SipResponse | None:
    """A new subscription to the victim whose Record-Route names the blackhole: its
    first NOTIFY needs a TCP connect there that never completes."""
    return await watcher.send(
        "SUBSCRIBE",
        victim.aor,
        [
            ("Event", "presence"),
            ("Accept", "application/pidf+xml"),
            ("Expires", "600"),
            ("Contact", f"<sip:watcher@127.0.0.1:{watcher.agent.port}>"),
            ("Record-Route", f"<sip:127.0.0.1:{port};transport=tcp;lr>"),
        ],
    )


async def record(task: object, outcomes: list[str]) -> None:
    response = await task  # type: ignore[misc]
    outcomes.append(f"{response.status} {response.reason}" if response else "no answer")


async def bad_publish(scenario: str, mallory: User) -> SipResponse | None:
    """A PUBLISH with a fresh nonce of ours and a malformed Authorization."""
    headers = [("Event", "presence"), ("Content-Type", "application/pidf+xml")]
    challenge = await mallory.agent.transact(mallory.server, *_built(mallory, headers, None))
    nonce = sha256_nonce(challenge) if challenge is not None else None
    if nonce is None:
        return challenge  # no digest on this stack: nothing malformed to send
    good = digest(mallory.name, "PUBLISH", mallory.aor, nonce, 1)
    if scenario == "auth-nul":
        bad = good.replace('username="mallory"', 'username="mal\x00lory"')
    else:
        bad = good.replace('response="', 'response="\u00e9', 1)
    return await mallory.agent.transact(mallory.server, *_built(mallory, headers, bad))


def _built(
    user: User, headers: list[tuple[str, str]], authorization: str | None
) -> tuple[bytes, str, str]:
    return user.build(
        "PUBLISH",
        user.aor,
        headers,
        pidf(user.aor, "x"),
        authorization=authorization,
        call_id=secrets.token_hex(8),
    )


async def add_users(db_url: str, names: list[str]) -> None:
    import asyncpg

    from presence_store.credentials import set_password

    connection = await asyncpg.connect(db_url)
    try:
        for name in names:
            await set_password(connection, name, DOMAIN, PASSWORD)
    finally:
        await connection.close()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario", default="none", choices=["none", "auth-nul", "auth-nonascii", "tcp-blackhole"]
    )
    parser.add_argument("--sip", default="127.0.0.1:5060")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--rate", type=float, default=40.0, help="good PUBLISH/s in all")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument(
        "--db-url", default="postgresql://presence:presence@127.0.0.1:15432/presence"
    )
    parser.add_argument("--out", default="var/bench")
    args = parser.parse_args()
    host, _, port = args.sip.rpartition(":")
    server = (host, int(port))

    names = [f"good{i:03d}" for i in range(args.users)]
    await add_users(args.db_url, [*names, "mallory", "victim", "watcher"])
    loop = asyncio.get_running_loop()
    agents = []
    for _ in range(len(names) + 1):
        _, agent = await loop.create_datagram_endpoint(UdpAgent, local_addr=("127.0.0.1", 0))
        agents.append(agent)
    users = [User(name, agent, server) for name, agent in zip(names, agents[:-1], strict=True)]
    # First publications (and nonces) before the clock starts.
    for user in users:
        if (await user.publish("start")) is None:
            sys.exit(f"no answer from {args.sip}: is the stack running?")

    latencies: list[float] = []
    failures: list[str] = []
    outcomes: list[str] = []
    answer_times: list[float] = []
    jobs = [good_load(users, args.rate, args.duration, latencies, failures, answer_times)]
    if args.scenario != "none":
        jobs.append(bad_load(args.scenario, agents[-1], server, args.duration, outcomes))
    await asyncio.gather(*jobs)

    summary = {
        "scenario": args.scenario,
        "duration_s": args.duration,
        "good_rate": args.rate,
        "good_sent": len(latencies) + len(failures),
        "good_answered_200": len(latencies),
        "good_failures": {f: failures.count(f) for f in sorted(set(failures))},
        "latency_ms": summary_ms(latencies),
        "any_answer_ms": summary_ms(answer_times),
        "bad_outcomes": {o: outcomes.count(o) for o in sorted(set(outcomes))},
    }
    print(json.dumps(summary, indent=2))
    print(f"written to {write_summary(Path(args.out), args.scenario, summary)}")


def summary_ms(samples: list[float]) -> dict[str, float | None]:
    """p50, p90, p99 and max of `samples` (seconds) in milliseconds."""
    return {
        name: (round(1000 * v, 1) if v is not None else None)
        for name, v in (
            ("p50", percentile(samples, 0.50)),
            ("p90", percentile(samples, 0.90)),
            ("p99", percentile(samples, 0.99)),
            ("max", max(samples) if samples else None),
        )
    }


def write_summary(out: Path, scenario: str, summary: dict[str, object]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"isolation-{scenario}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


if __name__ == "__main__":
    asyncio.run(main())
