"""Open-loop PUBLISH load against a running sip-edge, over a real UDP socket.

Each request is an initial PUBLISH (no SIP-If-Match) with a PIDF body (or, with
--event dialog, a PBX's dialog-info document about one call), so every one crosses
the whole path: edge -> Kafka -> store (PostgreSQL, Redis lock) -> Kafka ->
edge. Send times follow a fixed schedule, independent of the answers, so a slow
server shows up as latency rather than as a slower sender (no coordinated omission).
Final responses are matched by Call-ID; 1xx are ignored. Exits 1 when any request
failed or timed out, so a broken run cannot pass for a fast one.

    .venv/bin/python bench/publish_bench.py --port 5060 [--rate 200] [--duration 30]
        [--event dialog]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_DURATION = 300.0
MAX_RATE = 5000.0
_CALL_ID = re.compile(rb"^(?:Call-ID|i)[ \t]*:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


def pidf(user: str) -> bytes:
    """A phone's typical document: one tuple, a person with an activity, ~600 bytes."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
        f'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:{user}">\n'
        '  <tuple id="t1"><status><basic>open</basic></status>'
        f'<contact priority="0.8">sip:{user}</contact>'
        "<timestamp>2024-05-01T09:30:47Z</timestamp></tuple>\n"
        '  <dm:person id="p1"><rpid:activities><rpid:on-the-phone/></rpid:activities>'
        "<dm:note>In a meeting until 11</dm:note></dm:person>\n"
        '  <dm:device id="d1"><dm:deviceID>urn:uuid:3f2504e0-4f89-11d3-9a0c-0305e82c3301'
        "</dm:deviceID></dm:device>\n"
        "</presence>\n"
    ).encode()


def dialog_info(user: str) -> bytes:
    """A PBX's report of one ringing call on a line (RFC 4235), ~400 bytes; the same
    dialog id each time, so the PBX's next PUBLISH replaces it (same device)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="1" state="full" '
        f'entity="sip:{user}">\n'
        '  <dialog id="call" call-id="a84b4c76e66710@pbx" local-tag="1928301774" '
        'direction="recipient"><state>early</state>\n'
        "    <remote><identity>sip:caller@example.com</identity></remote></dialog>\n"
        "</dialog-info>\n"
    ).encode()


# event package -> (body, Content-Type)
BODIES = {
    "presence": (pidf, "application/pidf+xml"),
    "dialog": (dialog_info, "application/dialog-info+xml"),
}


def publish(
    user: str, call_id: str, branch: str, local: tuple[str, int], event: str = "presence"
) -> bytes:
    make_body, content_type = BODIES[event]
    body = make_body(user)
    head = (
        f"PUBLISH sip:{user} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}>;tag={branch[-8:]}\r\n"
        f"To: <sip:{user}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 PUBLISH\r\n"
        f"Event: {event}\r\n"
        "Expires: 600\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class Results(asyncio.DatagramProtocol):
    """Send times by Call-ID, and what came back for them."""

    sent_at: dict[bytes, float] = field(default_factory=dict)
    latency: dict[bytes, float] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    unmatched: int = 0
    socket_errors: int = 0
    expected: int = 0  # set before the first send
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.perf_counter()
        if not data.startswith(b"SIP/2.0 "):
            return  # a request (or keep-alive) from the server: not ours to count
        status = int(data[8:11]) if data[8:11].isdigit() else 0
        match = _CALL_ID.search(data)
        if status < 200:
            return
        if match is None or match.group(1) not in self.sent_at:
            self.unmatched += 1
            return
        call_id = match.group(1)
        if call_id in self.latency:
            return  # a retransmitted final response
        self.latency[call_id] = now - self.sent_at[call_id]
        self.statuses[status] += 1
        if len(self.latency) == self.expected:
            self.done.set()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable (no edge listening) arrives here, once per datagram.
        if not self.socket_errors:
            print(f"socket error: {exc}", file=sys.stderr)
        self.socket_errors += 1


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when empty: valid JSON)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sending_done = asyncio.Event()
    cpu = None
    if args.cpu:
        # Imported only here: notify_bench imports the project's SIP package.
        from notify_bench import cpu_window

        # From the second second (warm-up) to the last send.
        cpu = asyncio.create_task(cpu_window(dict(args.cpu), time.perf_counter() + 1, sending_done))
    loop = asyncio.get_running_loop()
    transport, results = await loop.create_datagram_endpoint(
        Results, local_addr=("127.0.0.1", 0), remote_addr=(args.host, args.port)
    )
    local = transport.get_extra_info("sockname")
    run_id = secrets.token_hex(4)
    total = results.expected = max(1, int(args.rate * args.duration))
    max_lag = 0.0
    start = time.perf_counter()
    for n in range(total):
        # The schedule, not the previous send, decides when request n leaves.
        due = start + n / args.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        user = f"bench-{n % args.users}@example.com"
        call_id = f"{run_id}-{n}@bench"
        sent = time.perf_counter()
        max_lag = max(max_lag, sent - due)
        results.sent_at[call_id.encode()] = sent
        transport.sendto(publish(user, call_id, f"z9hG4bK-{run_id}-{n}", local, args.event))
    send_time = time.perf_counter() - start
    sending_done.set()
    cpu_used = await cpu if cpu is not None else None
    try:
        await asyncio.wait_for(results.done.wait(), args.timeout)
    except TimeoutError:
        pass
    transport.close()

    ms = sorted(v * 1000 for v in results.latency.values())
    # Latency by second of sending: a queue that grows, or a stall, shows its shape here.
    by_second: dict[int, list[float]] = {}
    for call_id, sent in results.sent_at.items():
        by_second.setdefault(int(sent - start), []).append(
            results.latency.get(call_id, math.inf) * 1000
        )
    timeline = [percentile(sorted(v), 0.5) for _, v in sorted(by_second.items())]
    ok = results.statuses.get(200, 0)
    if cpu_used is not None:
        # What one PUBLISH costs each process, at this steady rate.
        per = {
            name: round(pct * 10 / args.rate, 3)
            for name, pct in cpu_used["pct_of_one_core"].items()
        }
        cpu_used["ms_per_publish"] = per
        # The server side in all: every listed process but the load generator.
        cpu_used["server_ms_per_publish"] = round(
            sum(v for k, v in per.items() if k not in ("load-generator", "other (not listed)")), 3
        )
    return {
        "event": args.event,
        "cpu": cpu_used,
        "target_rate": args.rate,
        "duration_s": args.duration,
        "users": args.users,
        "sent": total,
        "achieved_rate": (total - 1) / send_time if total > 1 else float(total),
        "max_send_lag_ms": max_lag * 1000,
        "ok_200": ok,
        "other_final": {str(k): v for k, v in sorted(results.statuses.items()) if k != 200},
        "timeouts": total - len(results.latency),
        "unmatched_responses": results.unmatched,
        "socket_errors": results.socket_errors,
        "p50_ms_by_second": [None if v is None or math.isinf(v) else v for v in timeline],
        "latency_ms": {
            "p50": percentile(ms, 0.50),
            "p90": percentile(ms, 0.90),
            "p99": percentile(ms, 0.99),
            "max": percentile(ms, 1.0),
            "min": ms[0] if ms else None,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5060, help="sip-edge UDP port")
    parser.add_argument("--rate", type=float, default=200.0, help="PUBLISH per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of sending")
    parser.add_argument("--users", type=int, default=1000, help="presentities bench-<n>")
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds to wait for final responses after the last send",
    )
    parser.add_argument("--event", choices=sorted(BODIES), default="presence")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--cpu", action="append", default=[], metavar="NAME=PID",
        help="a process whose CPU (with its children) to measure while sending",
    )  # fmt: skip
    args = parser.parse_args()
    args.cpu = [(name, int(pid)) for name, _, pid in (v.partition("=") for v in args.cpu)]
    if args.host != "127.0.0.1":
        sys.exit("--host: this benchmark sends only to 127.0.0.1")
    if not (0 < args.duration <= MAX_DURATION and 0 < args.rate <= MAX_RATE):
        sys.exit(f"--duration must be in (0, {MAX_DURATION:.0f}] and --rate in (0, {MAX_RATE:.0f}]")
    if not (args.users >= 1 and 0 < args.timeout <= 60):
        sys.exit("--users must be >= 1 and --timeout in (0, 60]")

    print(
        f"PUBLISH ({args.event}) to udp {args.host}:{args.port}: {args.rate:g}/s for "
        f"{args.duration:g} s, "
        f"{args.users} presentities"
    )
    report = asyncio.run(run(args))
    lat = report["latency_ms"]
    print(
        f"sent {report['sent']} at {report['achieved_rate']:.1f}/s "
        f"(sender at most {report['max_send_lag_ms']:.1f} ms behind schedule)"
    )
    print(
        f"200 OK {report['ok_200']}, other finals {report['other_final'] or 'none'}, "
        f"timeouts {report['timeouts']}, unmatched {report['unmatched_responses']}"
    )
    print(
        "PUBLISH->final ms: "
        + ", ".join(f"{k} {'-' if v is None else format(v, '.1f')}" for k, v in lat.items())
    )
    print(
        "p50 ms by second of sending: "
        + " ".join("-" if v is None else f"{v:.0f}" for v in report["p50_ms_by_second"])
    )
    if report["cpu"]:
        per = report["cpu"]["ms_per_publish"]
        print("CPU ms per PUBLISH: " + ", ".join(f"{k} {v:g}" for k, v in per.items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if report["ok_200"] != report["sent"]:
        print("FAILED: not every PUBLISH got a 200 OK", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
