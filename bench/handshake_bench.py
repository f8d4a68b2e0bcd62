"""TLS and WSS handshake rate of a running sip-edge: new connections per second.

Each connection is opened, its handshake completed (TLS; or TLS then the
WebSocket upgrade with the `sip` subprotocol), one OPTIONS answered over it (so
the connection was really served, not only accepted), and closed. `--concurrency`
connections are under way at once for `--seconds`; the client runs on the same
machine, so the rate is that of the edge and this client sharing its cores.

    .venv/bin/python bench/handshake_bench.py --ca var/tls/ca.pem \\
        [--tls 127.0.0.1:5061] [--wss 127.0.0.1:7443] [--seconds 10] [--concurrency 8] \\
        [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import ssl
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from websockets.asyncio.client import connect

from presence.sip.framing import StreamFramer


def options(transport: str) -> bytes:
    branch = "z9hG4bK" + secrets.token_hex(8)
    return (
        f"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} bench.invalid;branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:bench@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:127.0.0.1>\r\nCall-ID: {secrets.token_hex(8)}\r\nCSeq: 1 OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


async def tls_once(host: str, port: int, context: ssl.SSLContext) -> None:
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        writer.write(options("TLS"))
        framer = StreamFramer()
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError("closed before the answer")
            if any(
                isinstance(m, bytes) and m.startswith(b"SIP/2.0 200") for m in framer.feed(chunk)
            ):
                return
    finally:
        writer.close()
        await writer.wait_closed()


async def wss_once(host: str, port: int, context: ssl.SSLContext) -> None:
    async with connect(
        f"wss://{host}:{port}/",
        ssl=context,
        subprotocols=["sip"],  # type: ignore[list-item]
        compression=None,
    ) as websocket:
        await websocket.send(options("WSS").decode())
        answer = await websocket.recv()
        if not str(answer).startswith("SIP/2.0 200"):
            raise ConnectionError(f"unexpected answer {str(answer)[:40]!r}")


async def measure(
    once: Callable[[], Awaitable[None]], seconds: float, concurrency: int
) -> dict[str, float]:
    """Connections completed per second, and the time each took (ms)."""
    took: list[float] = []
    failures = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal failures
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                await asyncio.wait_for(once(), 10)
            except (OSError, TimeoutError, ConnectionError) as error:
                failures += 1
                if failures <= 3:
                    print(f"  failed: {error!r}")
                continue
            took.append((time.monotonic() - started) * 1000)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    ordered = sorted(took) or [0.0]
    return {
        "connections": len(took),
        "failures": failures,
        "seconds": round(elapsed, 2),
        "per_second": round(len(took) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered), 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
    }


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ca", required=True, help="the CA file that signed the server certificate"
    )
    parser.add_argument("--tls", default="127.0.0.1:5061", help="SIP over TLS; empty: skip")
    parser.add_argument("--wss", default="127.0.0.1:7443", help="SIP over WSS; empty: skip")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    if not 1 <= args.seconds <= 120 or not 1 <= args.concurrency <= 256:
        parser.error("--seconds must be 1-120 and --concurrency 1-256")
    context = ssl.create_default_context(cafile=args.ca)
    results: dict[str, dict[str, float]] = {}
    for name, target, once in (("tls", args.tls, tls_once), ("wss", args.wss, wss_once)):
        if not target:
            continue
        host, port = address(target)
        print(f"{name}: {args.concurrency} at once for {args.seconds:g} s against {target}")
        results[name] = await measure(
            lambda once=once, host=host, port=port: once(host, port, context),
            args.seconds,
            args.concurrency,
        )
        print(f"  {results[name]}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
