"""A burst at twice the sustainable PUBLISH rate, with clients that retransmit.

Three phases at fixed send schedules (open loop): half the sustainable rate, then
`--burst-factor` times it for `--burst-seconds`, then half again. Every request is an
initial PUBLISH of a presentity of its own, sent by a client that behaves as RFC 3261
§17.1.2 says over UDP: retransmitted after T1 = 0.5 s, doubling up to T2 = 4 s (T2
after a provisional response), until a final response or Timer F. Afterwards the
database says which requests were applied (a presentity row with their user), so the
run can check what the overload design promises:

- what can be answered in time is answered (200s, their latency by phase);
- the rest is refused early (503 with Retry-After, and how fast);
- no client is told 503 for a request whose effect was applied (`refused_but_applied`);
- retransmissions are absorbed, not amplified (`store_answers` vs admitted requests);
- latency is back to normal within seconds after the burst (`recovered_after_s`).

    .venv/bin/python bench/overload_bench.py --port 5060 --rate 300 --db-url postgresql://...
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import re
import secrets
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from publish_bench import percentile, publish

T1 = 0.5
T2 = 4.0
TIMER_F = 64 * T1
MAX_RATE = 5000.0
_CALL_ID = re.compile(rb"^(?:Call-ID|i)[ \t]*:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
_REASON = re.compile(rb"^SIP/2\.0 \d{3} ([^\r\n]*)")
_RETRY_AFTER = re.compile(rb"^Retry-After[ \t]*:[ \t]*(\d+)", re.IGNORECASE | re.MULTILINE)


@dataclass
class Call:
    user: str
    data: bytes
    phase: str
    sent_at: float
    interval: float = T1
    provisional: bool = False
    retransmissions: int = 0
    status: int | None = None
    reason: str = ""
    retry_after: int | None = None
    latency: float | None = None


@dataclass
class Calls(asyncio.DatagramProtocol):
    by_call_id: dict[bytes, Call] = field(default_factory=dict)
    unmatched: int = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.perf_counter()
        if not data.startswith(b"SIP/2.0 ") or not data[8:11].isdigit():
            return
        match = _CALL_ID.search(data)
        call = self.by_call_id.get(match.group(1)) if match else None
        if call is None:
            self.unmatched += 1
            return
        status = int(data[8:11])
        if status < 200:
            call.provisional = True
            return
        if call.status is not None:
            return  # a retransmitted final response
        call.status = status
        reason = _REASON.match(data)
        call.reason = reason.group(1).decode(errors="replace") if reason else ""
        retry = _RETRY_AFTER.search(data)
        call.retry_after = int(retry.group(1)) if retry else None
        call.latency = now - call.sent_at


def phases(args: argparse.Namespace) -> list[tuple[str, float, float]]:
    """(name, rate, seconds) in sending order."""
    calm = args.rate * args.calm_factor
    return [
        ("before", calm, args.before_seconds),
        ("burst", args.rate * args.burst_factor, args.burst_seconds),
        ("after", calm, args.after_seconds),
    ]


async def drive(args: argparse.Namespace) -> tuple[list[Call], Calls, float, float]:
    """Send the three phases with retransmissions; returns the calls, the protocol,
    the start and the burst's end (perf_counter times)."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        Calls, local_addr=("127.0.0.1", 0), remote_addr=(args.host, args.port)
    )
    local = transport.get_extra_info("sockname")
    run_id = secrets.token_hex(4)
    schedule: list[tuple[float, str]] = []
    offset = 0.0
    burst_end = 0.0
    for name, rate, seconds in phases(args):
        count = int(rate * seconds)
        schedule += [(offset + n / rate, name) for n in range(count)]
        offset += seconds
        if name == "burst":
            burst_end = offset
    calls: list[Call] = []
    retransmit: list[tuple[float, int]] = []  # (due, index into calls)
    start = time.perf_counter()
    next_new = 0
    last_send = start + offset
    while True:
        now = time.perf_counter()
        while next_new < len(schedule) and start + schedule[next_new][0] <= now:
            n = next_new
            user = f"ovl-{run_id}-{n}@example.com"
            call_id = f"{run_id}-{n}@overload"
            data = publish(user, call_id, f"z9hG4bK-{run_id}-{n}", local)
            call = Call(user.split("@")[0], data, schedule[n][1], now)
            calls.append(call)
            protocol.by_call_id[call_id.encode()] = call
            transport.sendto(data)
            heapq.heappush(retransmit, (now + T1, n))
            next_new += 1
        while retransmit and retransmit[0][0] <= now:
            _, n = heapq.heappop(retransmit)
            call = calls[n]
            if call.status is not None or now - call.sent_at >= TIMER_F:
                continue
            transport.sendto(call.data)
            call.retransmissions += 1
            # §17.1.2.2: doubling up to T2; every T2 once a provisional response came.
            call.interval = T2 if call.provisional else min(2 * call.interval, T2)
            heapq.heappush(retransmit, (now + call.interval, n))
        done_sending = next_new == len(schedule)
        if done_sending and (
            now > last_send + args.timeout or all(c.status is not None for c in calls)
        ):
            break
        upcoming = [start + schedule[next_new][0]] if not done_sending else []
        if retransmit:
            upcoming.append(retransmit[0][0])
        wait = min(upcoming, default=now + 0.05) - time.perf_counter()
        await asyncio.sleep(min(max(wait, 0), 0.05))
    transport.close()
    return calls, protocol, start, start + burst_end


async def applied_users(db_url: str, users: list[str]) -> set[str]:
    connection = await asyncpg.connect(db_url)
    try:
        rows = await connection.fetch(
            "SELECT DISTINCT username FROM presentity WHERE username = ANY($1::text[])", users
        )
    finally:
        await connection.close()
    return {row["username"] for row in rows}


def store_answers(metrics_url: str | None) -> float | None:
    """presence_store_requests_total summed: requests the store answered, copies too."""
    if not metrics_url:
        return None
    with urllib.request.urlopen(metrics_url, timeout=10) as answer:
        text = answer.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("presence_store_requests_total{")
    )


def ms(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(v * 1000 for v in values)
    return {
        "p50": percentile(ordered, 0.5),
        "p99": percentile(ordered, 0.99),
        "max": percentile(ordered, 1.0),
    }


def summarize(
    calls: list[Call], start: float, burst_end: float, applied: set[str], args: argparse.Namespace
) -> dict[str, Any]:
    by_phase: dict[str, Any] = {}
    for name, rate, seconds in phases(args):
        group = [c for c in calls if c.phase == name]
        answers = Counter(f"{c.status} {c.reason}" for c in group if c.status is not None)
        by_phase[name] = {
            "rate": rate,
            "seconds": seconds,
            "sent": len(group),
            "ok_200": sum(1 for c in group if c.status == 200),
            "refused_503": sum(1 for c in group if c.status == 503),
            "answers": dict(answers.most_common()),
            "timeouts": sum(1 for c in group if c.status is None),
            "client_retransmissions": sum(c.retransmissions for c in group),
            "ms_200": ms([c.latency for c in group if c.status == 200 and c.latency is not None]),
            "ms_503": ms([c.latency for c in group if c.status == 503 and c.latency is not None]),
            "with_retry_after_503": sum(
                1 for c in group if c.status == 503 and c.retry_after is not None
            ),
        }
    # By second of sending: where the burst's effect starts and ends.
    seconds: dict[int, list[Call]] = {}
    for call in calls:
        seconds.setdefault(int(call.sent_at - start), []).append(call)
    timeline = []
    for second, group in sorted(seconds.items()):
        ok = sorted(c.latency * 1000 for c in group if c.status == 200 and c.latency)
        timeline.append(
            {
                "second": second,
                "sent": len(group),
                "ok_200": len(ok),
                "refused_503": sum(1 for c in group if c.status == 503),
                "timeouts": sum(1 for c in group if c.status is None),
                "p99_ms_200": percentile(ok, 0.99),
            }
        )
    before = by_phase["before"]["ms_200"]["p99"] or 0.0
    normal_ms = max(2 * before, before + 20.0)
    burst_end_second = int(burst_end - start)

    def normal(entry: dict[str, Any]) -> bool:
        return (
            entry["refused_503"] == 0
            and entry["timeouts"] == 0
            and (entry["p99_ms_200"] or 0.0) <= normal_ms
        )

    after = [e for e in timeline if e["second"] >= burst_end_second]
    recovered_at = None
    for index, entry in enumerate(after):
        if all(normal(e) for e in after[index:]):
            recovered_at = entry["second"]
            break
    refused = [c for c in calls if c.status == 503]
    return {
        "sustainable_rate": args.rate,
        "burst_factor": args.burst_factor,
        "phases": by_phase,
        "refused_but_applied": sum(1 for c in refused if c.user in applied),
        "timed_out_but_applied": sum(1 for c in calls if c.status is None and c.user in applied),
        "applied": len(applied),
        "answered_200_not_applied": sum(
            1 for c in calls if c.status == 200 and c.user not in applied
        ),
        "normal_p99_ms": normal_ms,
        "recovered_after_s": None if recovered_at is None else recovered_at - burst_end_second,
        "timeline": timeline,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    answered_before = store_answers(args.store_metrics)
    calls, protocol, start, burst_end = await drive(args)
    # Requests still on their way to the store when the clients stopped waiting
    # must have landed (or been refused) before the database is read.
    await asyncio.sleep(args.settle)
    applied = await applied_users(args.db_url, [c.user for c in calls])
    result = summarize(calls, start, burst_end, applied, args)
    result["unmatched_responses"] = protocol.unmatched
    answered_after = store_answers(args.store_metrics)
    if answered_before is not None and answered_after is not None:
        admitted = sum(1 for c in calls if not (c.status == 503 and c.reason == "Overloaded"))
        result["store_answers"] = answered_after - answered_before
        result["admitted_requests"] = admitted
    return result


def print_summary(result: dict[str, Any]) -> None:
    print(
        f"overload: sustainable {result['sustainable_rate']:g}/s, burst x{result['burst_factor']:g}"
    )
    for name, p in result["phases"].items():
        print(
            f"  {name:<6} {p['rate']:>6.0f}/s x {p['seconds']:g} s: sent {p['sent']}, "
            f"200 {p['ok_200']} (p50 {p['ms_200']['p50'] or 0:.0f} / p99 "
            f"{p['ms_200']['p99'] or 0:.0f} ms), 503 {p['refused_503']} (p50 "
            f"{p['ms_503']['p50'] or 0:.0f} / p99 {p['ms_503']['p99'] or 0:.0f} ms, Retry-After "
            f"on {p['with_retry_after_503']}), no answer {p['timeouts']}, client "
            f"retransmissions {p['client_retransmissions']}"
        )
    print(
        f"  told 503 but applied: {result['refused_but_applied']}; no answer but applied: "
        f"{result['timed_out_but_applied']}; 200 but not applied: "
        f"{result['answered_200_not_applied']}"
    )
    if "store_answers" in result:
        print(
            f"  store answers {result['store_answers']:.0f} for "
            f"{result['admitted_requests']} admitted requests"
        )
    recovered = result["recovered_after_s"]
    print(
        "  back to normal (no 503, p99 <= "
        f"{result['normal_p99_ms']:.0f} ms) "
        + ("never within the run" if recovered is None else f"{recovered} s after the burst")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5060, help="sip-edge UDP port")
    parser.add_argument("--rate", type=float, default=300.0, help="sustainable PUBLISH/s")
    parser.add_argument("--burst-factor", type=float, default=2.0)
    parser.add_argument("--calm-factor", type=float, default=0.5)
    parser.add_argument("--before-seconds", type=float, default=10.0)
    parser.add_argument("--burst-seconds", type=float, default=30.0)
    parser.add_argument("--after-seconds", type=float, default=20.0)
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="s to wait for answers after the last send"
    )
    parser.add_argument(
        "--settle", type=float, default=3.0, help="s before reading the database afterwards"
    )
    parser.add_argument("--db-url", required=True, help="the stack's PostgreSQL database")
    parser.add_argument("--store-metrics", help="presence-store's /metrics URL")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    if args.host != "127.0.0.1":
        sys.exit("--host: this benchmark sends only to 127.0.0.1")
    total = args.before_seconds + args.burst_seconds + args.after_seconds
    if not (0 < args.rate * args.burst_factor <= MAX_RATE and 0 < total <= 300):
        sys.exit(f"the burst rate must be in (0, {MAX_RATE:.0f}] and all phases <= 300 s")
    result = asyncio.run(run(args))
    print_summary(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
