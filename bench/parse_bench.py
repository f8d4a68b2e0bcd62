"""Parse and serialize throughput of presence.sip.parser on one core.

Every request the edge handles is parsed once and every reply serialized once, so
these numbers bound what one sip-edge process can do before any I/O. The messages
are shaped like real traffic (a phone's PUBLISH and SUBSCRIBE, the server's NOTIFY
and 200 OK), because parse cost grows with header count and body size.

    .venv/bin/python bench/parse_bench.py [--iterations N] [--rounds R] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from presence.sip.parser import parse_message, serialize

PIDF = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf" '
    'xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" '
    'xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:alice@example.com">\n'
    '  <tuple id="t8a3f0c"><status><basic>open</basic></status>'
    '<contact priority="0.8">sip:alice@192.0.2.10:5060;transport=udp</contact>'
    "<timestamp>2024-05-01T09:30:47Z</timestamp></tuple>\n"
    '  <dm:person id="p1"><rpid:activities><rpid:on-the-phone/></rpid:activities>'
    "<dm:note>In a meeting until 11</dm:note></dm:person>\n"
    '  <dm:device id="d1"><dm:deviceID>urn:uuid:3f2504e0-4f89-11d3-9a0c-0305e82c3301'
    "</dm:deviceID></dm:device>\n"
    "</presence>\n"
)


def _message(start: str, headers: list[str], body: str = "") -> bytes:
    lines = [start, *headers, f"Content-Length: {len(body.encode())}", "", body]
    return "\r\n".join(lines).encode()


MESSAGES: dict[str, bytes] = {
    "PUBLISH": _message(
        "PUBLISH sip:alice@example.com SIP/2.0",
        [
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---5f2a;rport",
            "Max-Forwards: 70",
            'From: "Alice" <sip:alice@example.com>;tag=9fxced76sl',
            "To: <sip:alice@example.com>",
            "Call-ID: 3848276298220188511@192.0.2.10",
            "CSeq: 2 PUBLISH",
            "Event: presence",
            "Expires: 3600",
            "User-Agent: Bria 6.5.2",
            "Content-Type: application/pidf+xml",
        ],
        PIDF,
    ),
    "SUBSCRIBE": _message(
        "SUBSCRIBE sip:bob@example.com SIP/2.0",
        [
            "Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK-proxy-77ab2",
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---9c1d;rport=5060"
            ";received=192.0.2.10",
            "Record-Route: <sip:198.51.100.1;lr;ftag=9fxced76sl>",
            "Max-Forwards: 69",
            'From: "Alice" <sip:alice@example.com>;tag=9fxced76sl',
            "To: <sip:bob@example.com>",
            "Call-ID: 1f2e3d4c5b6a@192.0.2.10",
            "CSeq: 1 SUBSCRIBE",
            'Contact: <sip:alice@192.0.2.10:5060;transport=udp>;+sip.instance="<urn:uuid:'
            '3f2504e0-4f89-11d3-9a0c-0305e82c3301>"',
            "Accept: application/pidf+xml, application/rlmi+xml, multipart/related",
            "Event: presence",
            "Expires: 3600",
            "Supported: eventlist",
            "User-Agent: Bria 6.5.2",
        ],
    ),
    "NOTIFY": _message(
        "NOTIFY sip:alice@192.0.2.10:5060;transport=udp SIP/2.0",
        [
            "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-n-4f1b9e0c2d",
            "Route: <sip:198.51.100.1;lr;ftag=9fxced76sl>",
            "Max-Forwards: 70",
            "From: <sip:bob@example.com>;tag=10.a4c1e9",
            'To: "Alice" <sip:alice@example.com>;tag=9fxced76sl',
            "Call-ID: 1f2e3d4c5b6a@192.0.2.10",
            "CSeq: 3 NOTIFY",
            "Contact: <sip:127.0.0.1:5060>",
            "Event: presence",
            "Subscription-State: active;expires=3540",
            "Content-Type: application/pidf+xml",
        ],
        PIDF.replace("alice", "bob"),
    ),
    "200 OK": _message(
        "SIP/2.0 200 OK",
        [
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---5f2a;rport=5060"
            ";received=192.0.2.10",
            'From: "Alice" <sip:alice@example.com>;tag=9fxced76sl',
            "To: <sip:alice@example.com>;tag=2b8e07c1a5f3",
            "Call-ID: 3848276298220188511@192.0.2.10",
            "CSeq: 2 PUBLISH",
            "SIP-ETag: a.1714555847.12345.7.3",
            "Expires: 3600",
        ],
    ),
}


def rate(function: Callable[[], object], iterations: int, rounds: int) -> float:
    """Median calls per second over `rounds` timed loops of `iterations` calls."""
    results = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(iterations):
            function()
        results.append(iterations / (time.perf_counter() - started))
    return statistics.median(results)


def bench(data: bytes, iterations: int, rounds: int) -> dict[str, float]:
    """Parse, serialize and both, for one message; checks first that it round-trips."""
    message = parse_message(data)
    again = parse_message(serialize(message))
    if again != message:
        sys.exit(f"round trip changed the message:\n{data!r}")
    parse_rate = rate(lambda: parse_message(data), iterations, rounds)
    serialize_rate = rate(lambda: serialize(message), iterations, rounds)
    both_rate = rate(lambda: serialize(parse_message(data)), iterations, rounds)
    return {
        "bytes": len(data),
        "parse_per_s": parse_rate,
        "serialize_per_s": serialize_rate,
        "parse_serialize_per_s": both_rate,
        "parse_us": 1e6 / parse_rate,
        "serialize_us": 1e6 / serialize_rate,
        "parse_serialize_us": 1e6 / both_rate,
    }


def overall(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """An even mix of the message types: the mean time per message, as a rate."""
    total: dict[str, float] = {}
    for key in ("parse", "serialize", "parse_serialize"):
        mean_us = statistics.fmean(r[f"{key}_us"] for r in results.values())
        total[f"{key}_per_s"] = 1e6 / mean_us
        total[f"{key}_us"] = mean_us
    total["bytes"] = statistics.fmean(r["bytes"] for r in results.values())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000, help="calls per timed round")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (median reported)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    if not (1 <= args.iterations <= 100_000 and 1 <= args.rounds <= 20):
        sys.exit("--iterations must be 1..100000 and --rounds 1..20")

    started = time.perf_counter()
    # Warm up on every message before timing any: the first timed loop otherwise pays for
    # cold caches (and, on a VM, for a CPU that is still waking up).
    warm_until = time.perf_counter() + 1.0
    while time.perf_counter() < warm_until:
        for data in MESSAGES.values():
            serialize(parse_message(data))
    results = {name: bench(data, args.iterations, args.rounds) for name, data in MESSAGES.items()}
    results["overall"] = overall(results)
    elapsed = time.perf_counter() - started

    print(f"SIP parse/serialize, one core, median of {args.rounds} x {args.iterations} calls")
    print(
        f"{'message':<10}{'bytes':>6}{'parse/s':>11}{'serial/s':>11}{'both/s':>10}"
        f"{'parse µs':>10}{'serial µs':>10}{'both µs':>9}"
    )
    for name, r in results.items():
        print(
            f"{name:<10}{r['bytes']:>6.0f}{r['parse_per_s']:>11,.0f}"
            f"{r['serialize_per_s']:>11,.0f}{r['parse_serialize_per_s']:>10,.0f}"
            f"{r['parse_us']:>10.1f}{r['serialize_us']:>10.1f}{r['parse_serialize_us']:>9.1f}"
        )
    print(f"({elapsed:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps({"messages": results, "elapsed_s": elapsed}, indent=2))


if __name__ == "__main__":
    main()
