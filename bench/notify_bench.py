"""NOTIFY fan-out load against a running stack: PUBLISH -> NOTIFY delay, and NOTIFYs/s.

Watchers are SIP dialogs spread over a few UDP sockets (one socket hosts many dialogs,
matched by Call-ID), so 1,000 watchers cost 10 file descriptors. Every NOTIFY is
answered 200 at once: a late answer makes the edge retransmit and hold back the
dialog's next NOTIFY (one in flight per dialog), and we would measure ourselves. Each
PUBLISH carries `<note>change N</note>` (with --event dialog: a dialog-info document
whose one dialog has `<duration>N</duration>`), which the aggregated document carries
through, so a NOTIFY says which state it shows.

  fanout      W watchers of ONE presentity, K changes one every `interval` s: for each
              (watcher, change) the delay from sending the PUBLISH to the first NOTIFY
              showing that change or a newer one (a newer state that replaced an older
              one while it waited at the edge delivers both).
  throughput  P presentities x w watchers, PUBLISH round robin at a fixed open-loop rate
              for a bounded time; NOTIFYs received per second in steady state (first
              and last second left out), PUBLISH->200 for context.

Only changes whose PUBLISH was answered 200 are expected at the watchers (an overloaded
edge drops datagrams, and this client does not retransmit). The CPU used by the
processes named with --cpu NAME=PID (and their children: PostgreSQL's backends) is read
over the measured window: on a small machine that is what decides whether replicas help.

    .venv/bin/python bench/notify_bench.py fanout --port 5060 [--watchers 1000] [--event dialog]
    .venv/bin/python bench/notify_bench.py throughput --port 5060 [--rate 200] --cpu notifier=PID
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import re
import secrets
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchctl import quantiles

from presence.sip.message import SipParseError, SipRequest, SipResponse
from presence.sip.parser import parse_message, serialize
from presence.sip.responses import make_response

DOMAIN = "example.com"
NOTE = re.compile(rb"<note[^>]*>change (\d+)</note>")
DURATION = re.compile(rb"<duration>(\d+)</duration>")
LOST_AFTER = 10.0  # s: a PUBLISH still unanswered by then was dropped (the edge 503s at 8 s)


def request(method: str, user: str, call_id: str, local: tuple[str, int], *headers: str,
            body: str = "") -> bytes:  # fmt: skip
    return "\r\n".join([
        f"{method} sip:{user}@{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bK-{call_id};rport",
        "Max-Forwards: 70", f"Call-ID: {call_id}", f"To: <sip:{user}@{DOMAIN}>", *headers,
        f"Content-Length: {len(body.encode())}", "", body,
    ]).encode()  # fmt: skip


def pidf(user: str, change: int) -> str:
    """One device with always the same tuple id: with PRESENCE_REPLACE_SAME_DEVICE (the
    default) each initial PUBLISH replaces the last, so the document has one note."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf"'
        f' entity="sip:{user}@{DOMAIN}"><tuple id="bench"><status><basic>open</basic></status>'
        f"<contact>sip:{user}@{DOMAIN}</contact></tuple><note>change {change}</note></presence>"
    )


def dialog_info(user: str, change: int) -> str:
    """A PBX's one call on the line, the change number as its duration; the same dialog
    id each time, so each initial PUBLISH replaces the last (the same device)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<dialog-info '
        'xmlns="urn:ietf:params:xml:ns:dialog-info" version="0" state="full" '
        f'entity="sip:{user}@{DOMAIN}"><dialog id="bench" call-id="bench@pbx" '
        f'direction="recipient"><state>confirmed</state><duration>{change}</duration>'
        "</dialog></dialog-info>"
    )


# event package -> (body of change N, its Content-Type, what finds N in a NOTIFY)
PACKAGES: dict[str, tuple[Callable[[str, int], str], str, re.Pattern[bytes]]] = {
    "presence": (pidf, "application/pidf+xml", NOTE),
    "dialog": (dialog_info, "application/dialog-info+xml", DURATION),
}


@dataclass
class Dialog:
    presentity: int
    status: int = 0  # final response to the SUBSCRIBE
    notifies: int = 0
    last_cseq: int = 0
    notes: list[int] = field(default_factory=list)  # states shown, increasing ...
    times: list[float] = field(default_factory=list)  # ... and when each first arrived
    terminated: bool = False


@dataclass
class Bench:
    """What the sockets saw, keyed the way the datagrams identify it."""

    presentities: int
    marker: re.Pattern[bytes] = NOTE  # what finds a change's number in a NOTIFY body
    dialogs: dict[str, Dialog] = field(default_factory=dict)
    changes: list[list[tuple[int, float, str]]] = field(default_factory=list)  # note, sent, id
    publish_sent: dict[str, float] = field(default_factory=dict)
    publish_final: dict[str, tuple[int, float]] = field(default_factory=dict)  # status, delay
    notify_at: list[float] = field(default_factory=list)  # arrival of each new NOTIFY
    seen: set[tuple[str, str]] = field(default_factory=set)
    anomalies: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.changes = [[] for _ in range(self.presentities)]

    def received(self, data: bytes, addr: tuple[str, int], transport: Any) -> None:
        now = time.perf_counter()
        try:
            message = parse_message(data)
        except SipParseError:
            self.anomalies["unparsable"] += 1
            return
        call_id = message.headers.get("Call-ID") or ""
        if isinstance(message, SipResponse):
            if message.status >= 200 and call_id in self.dialogs:
                self.dialogs[call_id].status = self.dialogs[call_id].status or message.status
            elif message.status >= 200 and call_id in self.publish_sent:
                delay = now - self.publish_sent[call_id]
                self.publish_final.setdefault(call_id, (message.status, delay))
            return
        if message.method != "NOTIFY":
            return
        transport.sendto(serialize(make_response(message, 200)), addr)
        cseq = message.headers.get("CSeq") or "0"
        if (call_id, cseq) in self.seen:
            self.anomalies["notify_retransmissions"] += 1
            return
        self.seen.add((call_id, cseq))
        self.notify_at.append(now)
        if call_id not in self.dialogs:
            self.anomalies["notify_unknown_dialog"] += 1
        else:
            self._notify(self.dialogs[call_id], int(cseq.split()[0]), message, now)

    def _notify(self, dialog: Dialog, cseq: int, message: SipRequest, now: float) -> None:
        """Checks what RFC 6665 promises a watcher: CSeqs grow, states never go back."""
        dialog.notifies += 1
        if cseq < dialog.last_cseq:
            self.anomalies["notify_cseq_out_of_order"] += 1
        dialog.last_cseq = max(dialog.last_cseq, cseq)
        state = (message.headers.get("Subscription-State") or "").lower()
        dialog.terminated = dialog.terminated or state.startswith("terminated")
        # The newest change a document shows: ours keeps one note (the same device
        # replaces its publication); a server that keeps every initial PUBLISH as a
        # publication of its own (Kamailio) aggregates all their notes.
        notes = [int(n) for n in self.marker.findall(message.body)]
        if not notes:
            self.anomalies["notify_without_note"] += 1
        elif dialog.notes and max(notes) < dialog.notes[-1]:
            self.anomalies["notify_older_state_after_newer"] += 1
        elif not dialog.notes or max(notes) > dialog.notes[-1]:
            dialog.notes.append(max(notes))
            dialog.times.append(now)

    def live(self) -> list[Dialog]:
        return [d for d in self.dialogs.values() if d.status == 200 and not d.terminated]

    def applied(self, p: int) -> list[tuple[int, float]]:
        """(note, sent at) of the changes of presentity p that were answered 200."""
        return [(n, t) for n, t, c in self.changes[p] if self.publish_final.get(c, (0,))[0] == 200]

    def caught_up(self) -> bool:
        """No PUBLISH is still on its way, and every watcher shows the last applied state."""
        now, last = time.perf_counter(), {p: self.applied(p)[-1:] for p in range(self.presentities)}
        waiting = any(c not in self.publish_final and now - t < LOST_AFTER
                      for changes in self.changes for _, t, c in changes)  # fmt: skip
        return not waiting and all(
            not last[d.presentity] or (d.notes and d.notes[-1] >= last[d.presentity][0][0])
            for d in self.live()
        )

    def deliveries(self) -> tuple[list[tuple[float, float]], int, int]:
        """(sent at, delay) of every (watcher, applied change) seen, how many were never
        seen, and how many watchers lack the last applied state."""
        seen: list[tuple[float, float]] = []
        missing = without_last = 0
        for dialog in self.live():
            for note, sent in self.applied(dialog.presentity):
                i = bisect.bisect_left(dialog.notes, note)
                if i < len(dialog.notes):
                    seen.append((sent, dialog.times[i] - sent))
                else:
                    missing += 1
            without_last += bool(self.applied(dialog.presentity)) and i == len(dialog.notes)
        return seen, missing, without_last


class Endpoint(asyncio.DatagramProtocol):
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.bench.received(data, addr, self.transport)

    def error_received(self, exc: Exception) -> None:
        self.bench.anomalies["socket_errors"] += 1


def cpu_ticks(pids: dict[str, int]) -> dict[str, dict[int, int]]:
    """utime+stime (clock ticks) of each named process and of its children, by pid."""
    stats: dict[int, tuple[int, int]] = {}  # pid -> (ppid, ticks)
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended meanwhile
        stats[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return {name: {p: t for p, (pp, t) in stats.items() if pid in (p, pp)}
            for name, pid in pids.items()}  # fmt: skip


def machine_busy_ticks() -> int:
    ticks = [int(v) for v in Path("/proc/stat").read_text().split()[1:9]]
    return sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait


async def cpu_window(pids: dict[str, int], begin: float, end: asyncio.Event) -> dict:
    """% of one core each process used from `begin` (perf_counter) until `end`; a child
    born meanwhile (a new database backend) counts in full. "other" is the rest of the
    machine: another job on it shows there."""
    pids = {**pids, "load-generator": os.getpid()}
    await asyncio.sleep(max(0.0, begin - time.perf_counter()))
    t0, busy0, before = time.perf_counter(), machine_busy_ticks(), cpu_ticks(pids)
    await end.wait()
    seconds, hz = time.perf_counter() - t0, os.sysconf("SC_CLK_TCK")
    after, machine = cpu_ticks(pids), (machine_busy_ticks() - busy0) / hz
    used = {n: sum(t - before[n].get(p, 0) for p, t in after[n].items()) / hz for n in pids}
    pct = {name: round(100 * s / seconds, 1) for name, s in used.items()}
    pct["other (not listed)"] = round(100 * (machine - sum(used.values())) / seconds, 1)
    return {"window_s": round(seconds, 2), "machine_pct": round(100 * machine / seconds, 1),
            "capacity_pct": 100 * (os.cpu_count() or 1), "pct_of_one_core": pct}  # fmt: skip


def udp_state(ports: set[int]) -> tuple[int, int]:
    """(bytes waiting in the receive queues, datagrams dropped so far) of these local UDP
    ports: a receiver that falls behind shows here before anywhere else."""
    queued = drops = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        cols = line.split()
        if int(cols[1].split(":")[1], 16) in ports:
            queued, drops = queued + int(cols[4].split(":")[1], 16), drops + int(cols[-1])
    return queued, drops


async def watch_queues(ports: dict[str, set[int]], peaks: dict[str, int]) -> None:
    while True:
        for name, group in ports.items():
            peaks[name] = max(peaks.get(name, 0), udp_state(group)[0])
        await asyncio.sleep(0.2)


async def until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def paced(count: int, rate: float, send: Callable[[int], None]) -> float:
    """Open loop: item n leaves at start + n/rate whatever the answers (a slow server
    shows as delay, not as a slower sender); returns start."""
    start = time.perf_counter()
    for n in range(count):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        send(n)
    return start


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loop, fanout = asyncio.get_running_loop(), args.mode == "fanout"
    presentities, per = (1, args.watchers) if fanout else (args.presentities, args.per_presentity)
    make_body, content_type, marker = PACKAGES[args.event]
    bench, run_id = Bench(presentities, marker), secrets.token_hex(3)
    target = (args.host, args.port)
    endpoints = []
    for _ in range(args.sockets + 1):  # the last one publishes
        transport, _ = await loop.create_datagram_endpoint(
            lambda: Endpoint(bench), local_addr=("127.0.0.1", 0)
        )
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        endpoints.append(transport)
    publisher, ports = endpoints[-1], {t.get_extra_info("sockname")[1] for t in endpoints}
    users = [f"nb-{args.mode}-{run_id}-{p}" for p in range(presentities)]

    def publish(p: int, note: int) -> None:
        call_id = f"{run_id}-pub-{len(bench.publish_sent)}"
        data = request("PUBLISH", users[p], call_id, publisher.get_extra_info("sockname"),
                       f"From: <sip:{users[p]}@{DOMAIN}>;tag=p{run_id}", "CSeq: 1 PUBLISH",
                       f"Event: {args.event}", "Expires: 600", f"Content-Type: {content_type}",
                       body=make_body(users[p], note))  # fmt: skip
        bench.publish_sent[call_id] = now = time.perf_counter()
        if note > 0:
            bench.changes[p].append((note, now, call_id))
        publisher.sendto(data, target)

    def subscribe(n: int, attempt: int = 0) -> None:
        p, transport = n % presentities, endpoints[n % args.sockets]
        call_id = f"{run_id}-sub-{n}" + (f"-again{attempt}" if attempt else "")
        me = transport.get_extra_info("sockname")
        subscribes[call_id] = (request(
            "SUBSCRIBE", users[p], call_id, me, f"From: <sip:w{n}@{DOMAIN}>;tag=w{run_id}{n}",
            "CSeq: 1 SUBSCRIBE", f"Contact: <sip:w{n}@{me[0]}:{me[1]}>", f"Event: {args.event}",
            f"Accept: {content_type}", "Expires: 600"), transport)  # fmt: skip
        bench.dialogs[call_id] = Dialog(p)
        transport.sendto(subscribes[call_id][0], target)

    # Setup: a first state (note 0), the subscriptions, their first NOTIFYs.
    await paced(presentities, args.setup_rate, lambda p: publish(p, 0))
    subscribes: dict[str, tuple[bytes, Any]] = {}
    setup_start = await paced(presentities * per, args.setup_rate, subscribe)
    while not await until(lambda: all(d.status for d in bench.dialogs.values()), 2):
        if time.perf_counter() - setup_start > 60:
            break
        for call_id, (data, transport) in subscribes.items():  # lost on the way? again
            if not bench.dialogs[call_id].status:
                transport.sendto(data, target)
    # A SUBSCRIBE refused with 503 (the edge's admission: the store was behind) is
    # sent again as a new request after a pause, as a phone does after Retry-After;
    # how many were refused at first is reported.
    refused_at_first = sum(1 for d in bench.dialogs.values() if d.status == 503)
    for attempt in range(1, 6):
        refused = [cid for cid, d in bench.dialogs.items() if d.status == 503]
        if not refused:
            break
        await asyncio.sleep(attempt)
        for call_id in refused:
            del bench.dialogs[call_id], subscribes[call_id]
            subscribe(int(call_id.split("-sub-")[1].split("-")[0]), attempt)
        await until(lambda: all(d.status for d in bench.dialogs.values()), 30)
    await until(lambda: all(d.notifies for d in bench.live()), 30)
    statuses = Counter(d.status for d in bench.dialogs.values())
    setup_s = time.perf_counter() - setup_start
    if refused_at_first:
        print(f"  {refused_at_first} SUBSCRIBEs refused 503 at first, sent again after a pause")
    print(f"  {len(bench.dialogs)} SUBSCRIBE answered {dict(statuses)} in {setup_s:.1f} s, "
          f"{sum(1 for d in bench.dialogs.values() if d.notifies)} first NOTIFYs")  # fmt: skip
    bench.notify_at.clear()
    bench.publish_final.clear()

    # Load, and CPU over the measured window: all of fanout, throughput's steady part.
    peaks: dict[str, int] = {}
    drops = [udp_state(ports)[1], udp_state({args.port})[1]]
    watching = asyncio.create_task(watch_queues({"bench": ports, "edge": {args.port}}, peaks))
    done = asyncio.Event()
    if fanout:
        window = args.changes * args.interval
        cpu = asyncio.create_task(cpu_window(dict(args.cpu), 0, done))
        start = await paced(args.changes, 1 / args.interval, lambda i: publish(0, i + 1))
    else:
        window, steady_end = args.duration, asyncio.Event()
        loop.call_later(args.duration - 1, steady_end.set)
        cpu = asyncio.create_task(cpu_window(dict(args.cpu), time.perf_counter() + 1, steady_end))
        start = await paced(int(args.rate * args.duration), args.rate,
                            lambda n: publish(n % presentities, n // presentities + 1))  # fmt: skip
    send_end = time.perf_counter()
    drained = await until(bench.caught_up, args.drain)
    drain_s = time.perf_counter() - send_end
    done.set()
    cpu_used = await cpu
    watching.cancel()
    await asyncio.sleep(0.2)  # let the last 200s leave
    for transport in endpoints:
        transport.close()

    delivered, missing, without_last = bench.deliveries()
    per_second = Counter(int(t - start) for t in bench.notify_at)
    seconds = [per_second.get(s, 0) for s in range(int(window + drain_s) + 1)]
    by_second: dict[int, list[float]] = {}  # delays by second of sending the PUBLISH
    for sent, delay in delivered:
        by_second.setdefault(int(sent - start), []).append(delay)
    p50_by_second = [quantiles(v)["p50"] for _, v in sorted(by_second.items())]
    steady = seconds[1 : int(window) - 1]
    publish_status = Counter(s for s, _ in bench.publish_final.values())
    return {
        "mode": args.mode, "event": args.event, "presentities": presentities,
        "watchers_per_presentity": per,
        "subscribe_status": {str(k): v for k, v in statuses.items()}, "setup_s": round(setup_s, 1),
        "subscribe_refused_at_first": refused_at_first,
        "changes_sent": sum(map(len, bench.changes)),
        "publish_status": {str(k): v for k, v in sorted(publish_status.items())},
        "publish_unanswered": sum(map(len, bench.changes)) - len(bench.publish_final),
        "publish_to_200_ms": quantiles([d for s, d in bench.publish_final.values() if s == 200]),
        "notify_delay_ms": quantiles([d for _, d in delivered]),
        "notify_delay_p50_ms_by_second": p50_by_second,
        "deliveries_expected": len(delivered) + missing, "deliveries_missing": missing,
        "final_state_missing": without_last, "drained": drained, "drain_s": round(drain_s, 2),
        "notifies_received": len(bench.notify_at), "notifies_per_s_by_second": seconds,
        "target_rate": None if fanout else args.rate,
        "offered_notifies_per_s": None if fanout else args.rate * per,
        "steady_notifies_per_s": None if fanout or not steady else sum(steady) / len(steady),
        "anomalies": dict(bench.anomalies), "cpu": cpu_used, "udp_receive_queue_peak_bytes": peaks,
        "udp_drops": {"bench": udp_state(ports)[1] - drops[0],
                      "edge": udp_state({args.port})[1] - drops[1]},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("mode", choices=["fanout", "throughput"])
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=5060, help="sip-edge UDP port")
    add("--sockets", type=int, default=10, help="UDP sockets hosting the watchers")
    add("--setup-rate", type=float, default=200.0, help="SUBSCRIBE per second")
    add("--watchers", type=int, default=1000, help="fanout: watchers of the presentity")
    add("--changes", type=int, default=10, help="fanout: changes published")
    add("--interval", type=float, default=2.0, help="fanout: seconds between changes")
    add("--presentities", type=int, default=200, help="throughput: presentities")
    add("--per-presentity", type=int, default=5, help="throughput: watchers of each")
    add("--rate", type=float, default=200.0, help="throughput: PUBLISH per second")
    add("--duration", type=float, default=20.0, help="throughput: seconds of PUBLISH")
    add("--drain", type=float, default=30.0, help="at most this long for the last NOTIFYs")
    add("--event", choices=sorted(PACKAGES), default="presence", help="the event package")
    add("--cpu", action="append", default=[], metavar="NAME=PID", help="a process to measure")
    add("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    if args.host != "127.0.0.1":
        sys.exit("--host: this benchmark sends only to 127.0.0.1")
    args.cpu = [(name, int(pid)) for name, _, pid in (v.partition("=") for v in args.cpu)]
    span = args.changes * args.interval if args.mode == "fanout" else args.duration
    if not (3 <= span <= 120 and 0 < args.rate <= 2000 and 0 < args.drain <= 60):
        sys.exit("the load must last 3..120 s, --rate <= 2000/s, --drain <= 60 s")
    if not (1 <= args.sockets <= 100 and 1 <= args.watchers * args.per_presentity <= 20_000):
        sys.exit("--sockets must be in 1..100, and at most 20,000 watchers")

    print(f"notify_bench {args.mode} ({args.event}) against udp {args.host}:{args.port}")
    r = asyncio.run(run(args))
    lat, pub = r["notify_delay_ms"], r["publish_to_200_ms"]
    print(f"  PUBLISH->NOTIFY ms  p50 {lat.get('p50', 0):.1f}  p90 {lat.get('p90', 0):.1f}  "
          f"p99 {lat.get('p99', 0):.1f}  max {lat.get('max', 0):.1f}  ({lat.get('n', 0)} "
          f"deliveries, {r['deliveries_missing']} missing, {r['final_state_missing']} "
          f"watchers without the last state)")  # fmt: skip
    if r["steady_notifies_per_s"] is not None:
        print(f"  NOTIFY/s steady {r['steady_notifies_per_s']:.0f} (offered "
              f"{r['offered_notifies_per_s']:g}); by second: "
              + " ".join(map(str, r["notifies_per_s_by_second"])))  # fmt: skip
    print(f"  PUBLISH->200 ms p50 {pub.get('p50', 0):.1f}  p99 {pub.get('p99', 0):.1f}; status "
          f"{r['publish_status']}, unanswered {r['publish_unanswered']}; anomalies "
          f"{r['anomalies'] or 'none'}; UDP drops {r['udp_drops']}, receive queue peaks "
          f"(bytes) {r['udp_receive_queue_peak_bytes']}")  # fmt: skip
    cpu = r["cpu"]
    print(f"  CPU, % of one core (machine {cpu['machine_pct']:g} of {cpu['capacity_pct']}): "
          + ", ".join(f"{k} {v:g}" for k, v in cpu["pct_of_one_core"].items()))  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    # Under overload (throughput) a backlog may outlast --drain: reported, not a failure.
    if r["subscribe_status"].keys() - {"200"} or (args.mode == "fanout" and not r["drained"]):
        sys.exit("FAILED: a subscription failed or a watcher never saw the last applied state")


if __name__ == "__main__":
    main()
