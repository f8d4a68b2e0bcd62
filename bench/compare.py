"""Side by side with Kamailio: the same sipp scenarios against either server.

    compare.py search SCENARIO --port P --server NAME --out DIR --json FILE [knobs]
    compare.py steady SCENARIO --rate R --port P --server NAME --out DIR --json FILE
    compare.py table RESULT.json      the comparison table of a `make bench` result

A rate search runs sipp (bench/sipp/SCENARIO.xml: `publish` or `subscribe`) in steps of
a bounded number of calls at a fixed rate: the rate doubles from --start while every
step is clean, and after the first step that is not, it is bisected between the
highest clean rate and the lowest unclean one (--refine steps at most). A step is
clean when every call succeeded, sipp retransmitted nothing (a request it had to resend
was not answered within 500 ms, a NOTIFY it received twice was resent by the server),
and sipp kept the offered rate. The answer is the highest clean rate below the lowest
unclean one. `steady` is one such step at a given rate, for its response times (sipp
reports whole milliseconds). scripts/bench.sh runs the same search, with the same sipp and the same
knobs, against the project's stack and then against Kamailio (scripts/kamailio.sh).
Every step's sipp files (statistics, response times, errors, screen) stay in --out.

The pure parts (stepping, sipp file parsing, the verdict) are unit tested in
tests/unit/test_bench_compare.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchctl import free_ports

SIPP_DIR = Path(__file__).resolve().parent / "sipp"
SCENARIOS = ("publish", "subscribe", "publish-dialog")
# Time allowed beyond the sending for the last calls to end (each receive in the
# scenarios gives up after 10 s, which fails the call): a hung step still ends.
STEP_GRACE_S = 25.0
# sipp is behind when sending took this much longer than calls/rate (plus the slack).
SENDER_SLACK = 1.25


@dataclass(frozen=True)
class SearchPlan:
    start: float = 50.0  # calls/s of the first step
    factor: float = 2.0  # growth while every step is clean
    refine: int = 2  # bisection steps after the first unclean one
    max_rate: float = 4000.0
    max_steps: int = 10

    def __post_init__(self) -> None:
        if not (0 < self.start <= self.max_rate and self.factor > 1):
            raise ValueError("need 0 < start <= max_rate and factor > 1")
        if self.refine < 0 or self.max_steps < 1:
            raise ValueError("need refine >= 0 and max_steps >= 1")


def bounds(steps: list[tuple[float, bool]]) -> tuple[float, float | None]:
    """(highest clean rate below the lowest unclean one or 0, lowest unclean or None)."""
    unclean = [rate for rate, clean in steps if not clean]
    ceiling = min(unclean) if unclean else None
    clean = [rate for rate, ok in steps if ok and (ceiling is None or rate < ceiling)]
    return (max(clean) if clean else 0.0), ceiling


def next_rate(plan: SearchPlan, steps: list[tuple[float, bool]]) -> float | None:
    """The rate of the next step given the (rate, clean) of the steps so far, or None
    when the search is over. Rates are whole calls per second."""
    if not steps:
        return float(round(plan.start))
    if len(steps) >= plan.max_steps:
        return None
    best, ceiling = bounds(steps)
    if ceiling is None:  # everything clean so far: grow, up to the cap
        if best >= plan.max_rate:
            return None
        return float(min(round(best * plan.factor), round(plan.max_rate)))
    first_unclean = next(i for i, (_, clean) in enumerate(steps) if not clean)
    if len(steps) - 1 - first_unclean >= plan.refine:
        return None
    middle = float(round((best + ceiling) / 2))
    if middle <= best or middle >= ceiling:  # nothing left between them
        return None
    return middle


# --- sipp's files --------------------------------------------------------------------------


def parse_stat_csv(text: str) -> dict[str, str]:
    """The last row of sipp's -trace_stat file (semicolon-separated, a header row, one
    row per -fd period and a final one), keyed by the header."""
    rows = [line.rstrip(";") for line in text.splitlines() if line.strip()]
    if len(rows) < 2:
        raise ValueError("sipp statistics: no data row")
    header, last = rows[0].split(";"), rows[-1].split(";")
    if len(last) != len(header):
        raise ValueError(f"sipp statistics: {len(last)} fields for {len(header)} columns")
    return dict(zip(header, last, strict=True))


def counters(stat: dict[str, str]) -> dict[str, Any]:
    """The cumulative counts a verdict needs, and every failure kind that occurred."""

    def count(name: str) -> int:
        return int(stat.get(f"{name}(C)", "0") or 0)

    failures = {
        key[len("Failed") : -3]: int(value)
        for key, value in stat.items()
        if key.startswith("Failed") and key.endswith("(C)") and key != "FailedCall(C)"
        and value.isdigit() and int(value)
    }  # fmt: skip
    return {
        "created": int(stat.get("TotalCallCreated", "0") or 0),
        "successful": count("SuccessfulCall"),
        "failed": count("FailedCall"),
        "failures": failures,
        "retransmissions": count("Retransmissions"),
        "out_of_call_messages": count("OutOfCallMsgs"),
        "dead_call_messages": count("DeadCallMsgs"),
        "elapsed_s": duration_s(stat.get("ElapsedTime(C)", "")),
    }


def duration_s(text: str) -> float:
    """sipp's durations: HH:MM:SS or HH:MM:SS:microseconds."""
    parts = text.split(":")
    if len(parts) not in (3, 4) or not all(p.isdigit() for p in parts):
        raise ValueError(f"sipp duration: {text!r}")
    h, m, s = (int(p) for p in parts[:3])
    return h * 3600 + m * 60 + s + (int(parts[3]) / 1e6 if len(parts) == 4 else 0.0)


def parse_rtt_csv(text: str) -> dict[str, list[float]]:
    """sipp's -trace_rtt file (Date_ms;response_time_ms;rtd_no): the response times in
    ms by response-time number. sipp reports whole milliseconds (truncated)."""
    times: dict[str, list[float]] = {}
    for line in text.splitlines()[1:]:
        fields = line.strip().rstrip(";").split(";")
        if len(fields) == 3 and fields[1].replace(".", "", 1).isdigit():
            times.setdefault(fields[2], []).append(float(fields[1]))
    return times


def ms_quantiles(values: list[float]) -> dict[str, float]:
    """Nearest-rank percentiles of values already in ms."""
    ordered = sorted(values)
    if not ordered:
        return {}

    def pick(fraction: float) -> float:
        return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]

    return {"n": len(ordered), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99),
            "max": ordered[-1]}  # fmt: skip


def verdict(rate: float, calls: int, count: dict[str, Any], exit_code: int) -> list[str]:
    """Why a step is not clean (empty: clean)."""
    reasons = []
    if count["failed"]:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(count["failures"].items()))
        reasons.append(f"{count['failed']} failed calls" + (f" ({kinds})" if kinds else ""))
    if count["retransmissions"]:
        reasons.append(f"{count['retransmissions']} retransmissions")
    if count["successful"] != calls:
        reasons.append(f"{count['successful']} of {calls} calls succeeded")
    if count["elapsed_s"] > SENDER_SLACK * calls / rate + STEP_GRACE_S / 5:
        reasons.append(
            f"took {count['elapsed_s']:.1f} s for {calls} calls at {rate:g}/s "
            "(sipp could not keep the rate, or calls lasted seconds)"
        )
    if exit_code not in (0, 1):
        reasons.append(f"sipp exited {exit_code}")
    return reasons


def cpu_used(
    before: dict[str, dict[int, int]], after: dict[str, dict[int, int]]
) -> dict[str, float]:
    """CPU seconds each named process and its children used between two
    `notify_bench.cpu_ticks` readings: a child born meanwhile counts in full, one
    that ended meanwhile (a database backend of a closed connection) is left out
    rather than counted negative."""
    hz = os.sysconf("SC_CLK_TCK")
    return {
        name: sum(t - before[name].get(pid, 0) for pid, t in ticks.items()) / hz
        for name, ticks in after.items()
    }


# --- running sipp --------------------------------------------------------------------------


@dataclass
class Step:
    rate: float
    calls: int
    clean: bool = False
    reasons: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    response_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    exit_code: int = 0
    folder: str = ""
    idle_wait: dict[str, Any] = field(default_factory=dict)  # settle() before the step
    # CPU of the server's processes per call (steady runs given --cpu).
    cpu: dict[str, Any] = field(default_factory=dict)


def run_step(args: argparse.Namespace, rate: float, index: int) -> Step:
    calls = max(1, round(rate * args.step_seconds))
    folder = args.out / f"step-{index:02d}-{rate:g}"
    folder.mkdir(parents=True, exist_ok=True)
    (local_port,) = free_ports(1)
    run_id = f"{args.server[:3]}{index}{secrets.token_hex(2)}"
    command = [
        args.sipp, f"127.0.0.1:{args.port}", "-sf", str(SIPP_DIR / f"{args.scenario}.xml"),
        "-key", "run", run_id, "-key", "domain", "example.com",
        "-i", "127.0.0.1", "-p", str(local_port), "-t", "u1",
        "-r", f"{rate:g}", "-rp", "1000", "-m", str(calls), "-l", str(calls),
        "-buff_size", str(1 << 22), "-nostdin",
        "-timeout", f"{args.step_seconds + STEP_GRACE_S:g}s", "-timeout_error",
        "-trace_stat", "-stf", "stat.csv", "-fd", "1",
        "-trace_rtt", "-rtt_freq", "1", "-trace_err", "-trace_screen",
    ]  # fmt: skip
    started = time.monotonic()
    with (folder / "sipp.out").open("w") as out:
        out.write(" ".join(command) + "\n")
        out.flush()
        code = subprocess.run(
            command, cwd=folder, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            timeout=args.step_seconds + 2 * STEP_GRACE_S, check=False,
        ).returncode  # fmt: skip
    step = Step(rate=rate, calls=calls, exit_code=code, folder=str(folder))
    try:
        step.counts = counters(parse_stat_csv((folder / "stat.csv").read_text()))
    except (OSError, ValueError) as error:
        step.reasons = [f"no sipp statistics ({error}); sipp exited {code}"]
        return step
    rtt = {}
    for path in folder.glob(f"{args.scenario}_*_rtt.csv"):
        for name, values in parse_rtt_csv(path.read_text()).items():
            rtt.setdefault(name, []).extend(values)
    step.response_ms = {name: ms_quantiles(values) for name, values in sorted(rtt.items())}
    step.reasons = verdict(rate, calls, step.counts, code)
    step.clean = not step.reasons
    print(f"  {args.server} {args.scenario} {rate:>6g}/s x {calls:>6}: "
          f"{'clean' if step.clean else 'NOT clean: ' + '; '.join(step.reasons)}"
          f" ({time.monotonic() - started:.0f} s)", flush=True)  # fmt: skip
    return step


def search(args: argparse.Namespace) -> dict[str, Any]:
    plan = SearchPlan(args.start, args.factor, args.refine, args.max_rate, args.max_steps)
    steps: list[Step] = []
    while (rate := next_rate(plan, [(s.rate, s.clean) for s in steps])) is not None:
        waited: dict[str, Any] = {}
        if steps:  # let the server finish what the last step left
            time.sleep(args.cooldown)
            waited = settle(args.port, args.settle_ms, args.settle_max)
            if not waited["settled"]:
                print(f"  {args.server}: not idle after {waited['waited_s']} s "
                      f"(last probe {waited['last_probe_ms']} ms); going on")  # fmt: skip
        steps.append(run_step(args, rate, len(steps) + 1))
        steps[-1].idle_wait = waited
    best, ceiling = bounds([(s.rate, s.clean) for s in steps])
    at_best = next((s for s in steps if s.rate == best and s.clean), None)
    return {
        "server": args.server, "scenario": args.scenario, "port": args.port,
        "highest_clean_rate": best, "lowest_unclean_rate": ceiling,
        "capped": ceiling is None and best >= args.max_rate,
        "response_ms_at_highest_clean": at_best.response_ms if at_best else {},
        "plan": asdict(plan), "step_seconds": args.step_seconds, "cooldown_s": args.cooldown,
        "steps": [asdict(s) for s in steps],
    }  # fmt: skip


# --- waiting for an idle server ------------------------------------------------------------


def probe_publish(port: int, timeout: float) -> float | None:
    """One initial PUBLISH of a presentity of its own over UDP: seconds to its 200, or
    None (another answer, or none within `timeout`)."""
    tag = secrets.token_hex(6)
    user = f"settle-{tag}@example.com"
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:{user}">'
        '<tuple id="t1"><status><basic>open</basic></status></tuple></presence>\n'
    ).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        me = sock.getsockname()[1]
        head = "\r\n".join([
            f"PUBLISH sip:{user} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{tag};rport",
            "Max-Forwards: 70", f"From: <sip:{user}>;tag={tag}", f"To: <sip:{user}>",
            f"Call-ID: {tag}@settle", "CSeq: 1 PUBLISH", "Event: presence", "Expires: 60",
            "Content-Type: application/pidf+xml", f"Content-Length: {len(body)}", "", "",
        ])  # fmt: skip
        sent = time.monotonic()
        sock.sendto(head.encode() + body, ("127.0.0.1", port))
        while (left := sent + timeout - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(65535)
            except TimeoutError:
                return None
            if data.startswith(b"SIP/2.0 1"):
                continue
            return time.monotonic() - sent if data.startswith(b"SIP/2.0 200") else None
    return None


def settle(port: int, under_ms: float, max_wait: float, probes: int = 3) -> dict[str, Any]:
    """Wait until `probes` PUBLISHes in a row are each answered 200 within `under_ms`:
    what a step left behind (a backlog in a queue, retransmissions) is then gone, and
    the next step starts from an idle server. Gives up after `max_wait` seconds."""
    started, in_a_row, last = time.monotonic(), 0, None
    while in_a_row < probes and time.monotonic() - started < max_wait:
        answered = probe_publish(port, timeout=max(1.0, under_ms / 1000 * 4))
        last = None if answered is None else round(answered * 1000, 1)
        in_a_row = in_a_row + 1 if answered is not None and answered * 1000 <= under_ms else 0
        if in_a_row < probes:
            time.sleep(0.2)
    return {"settled": in_a_row >= probes, "waited_s": round(time.monotonic() - started, 1),
            "last_probe_ms": last}  # fmt: skip


# --- the table -----------------------------------------------------------------------------

# Times read from sipp are whole milliseconds, truncated: 0 means below 1 ms.
SIPP_PARTS = ("publish_search", "subscribe_search", "subscribe_steady")

ROWS = (
    # (label, part, path into the part's JSON, unit, higher is better)
    ("highest clean PUBLISH rate", "publish_search", ("highest_clean_rate",), "/s", True),
    ("highest clean subscription-flow rate", "subscribe_search", ("highest_clean_rate",), "/s",
     True),
    ("SUBSCRIBE->first NOTIFY p50 at steady rate", "subscribe_steady",
     ("response_ms", "1", "p50"), "ms", False),
    ("SUBSCRIBE->first NOTIFY p99 at steady rate", "subscribe_steady",
     ("response_ms", "1", "p99"), "ms", False),
    ("PUBLISH->200 p50 at steady rate", "steady", ("latency_ms", "p50"), "ms", False),
    ("PUBLISH->200 p99 at steady rate", "steady", ("latency_ms", "p99"), "ms", False),
    ("fan-out: PUBLISH->NOTIFY p50", "fanout", ("notify_delay_ms", "p50"), "ms", False),
    ("fan-out: PUBLISH->NOTIFY p99", "fanout", ("notify_delay_ms", "p99"), "ms", False),
    ("fan-out: PUBLISH->last NOTIFY", "fanout", ("notify_delay_ms", "max"), "ms", False),
    ("CPU per PUBLISH at steady rate, all server processes", "steady",
     ("cpu", "server_ms_per_publish"), "ms", False),
    ("CPU per subscription flow at steady rate, all server processes", "subscribe_steady",
     ("cpu", "server_ms_per_call"), "ms", False),
)  # fmt: skip


def dig(data: Any, path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return float(data) if isinstance(data, int | float) else None


def ratio(ours: float | None, theirs: float | None, higher_better: bool) -> float | None:
    """ours relative to Kamailio, >= 1.0 when ours is at least as good."""
    if ours is None or theirs is None:
        return None
    if higher_better:
        return ours / theirs if theirs else None
    return theirs / ours if ours else None


def table_rows(compare: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(label, ours, kamailio, ratio) cells; the ratio says ours/Kamailio for rates and
    Kamailio/ours for times, so >= 1.00 always means ours is at least as good."""
    ours, theirs = compare.get("ours") or {}, compare.get("kamailio") or {}

    def cell(value: float | None, unit: str, whole_ms: bool) -> str:
        if value is None:
            return "-"
        if unit == "/s":
            return f"{value:,.0f}{unit}"
        if whole_ms:
            return "<1 ms" if value < 1 else f"{value:,.0f} ms"
        return f"{value:,.1f} {unit}"

    rows = []
    for label, part, path, unit, higher in ROWS:
        a, b = dig(ours.get(part), path), dig(theirs.get(part), path)
        whole_ms = unit == "ms" and part in SIPP_PARTS
        if whole_ms:  # compare at sipp's resolution: below 1 ms counts as 1 ms
            r = ratio(
                None if a is None else max(a, 1.0), None if b is None else max(b, 1.0), higher
            )
        else:
            r = ratio(a, b, higher)
        rows.append(
            (
                label,
                cell(a, unit, whole_ms),
                cell(b, unit, whole_ms),
                "-" if r is None else f"{r:.2f}",
            )
        )
    return rows


def notes(compare: dict[str, dict[str, Any]]) -> list[str]:
    """What a reader must know to trust a column: a capped search, a failed part."""
    lines = []
    for server, parts in compare.items():
        for part, data in sorted((parts or {}).items()):
            if not isinstance(data, dict):
                continue
            if data.get("capped"):
                cap = data["highest_clean_rate"]
                lines.append(f"{server} {part}: clean up to the cap ({cap:g}/s)")
            if part.endswith("_search") and data.get("highest_clean_rate") == 0:
                first = (data.get("steps") or [{}])[0]
                lines.append(f"{server} {part}: not clean even at {first.get('rate', 0):g}/s: "
                             + "; ".join(first.get("reasons", [])))  # fmt: skip
            if part == "subscribe_steady" and not data.get("clean"):
                lines.append(f"{server} subscribe_steady at {data.get('rate', 0):g}/s not clean: "
                             + "; ".join(data.get("reasons", [])))  # fmt: skip
            if part == "steady" and (data.get("timeouts") or data.get("other_final")):
                lines.append(f"{server} steady: {data.get('timeouts')} timeouts, "
                             f"other answers {data.get('other_final')}")  # fmt: skip
            if part == "fanout" and (
                data.get("deliveries_missing") or set(data.get("subscribe_status", {})) - {"200"}
            ):
                lines.append(f"{server} fanout: SUBSCRIBE answers {data.get('subscribe_status')}, "
                             f"{data.get('deliveries_missing')} NOTIFYs missing")  # fmt: skip
    return lines


def print_table(compare: dict[str, dict[str, Any]], meta: dict[str, Any] | None = None) -> None:
    meta = meta or {}
    print("\n== side by side with Kamailio (same machine, same tools, one after the other) ==")
    if meta.get("kamailio_version"):
        print(f"  reference: {meta['kamailio_version'].strip()}, "
              f"{meta.get('kamailio_children', '?')} UDP workers, "
              f"subs_db_mode {meta.get('kamailio_subs_db_mode', '?')}; sipp "
              f"{meta.get('sipp_version', '?')}")  # fmt: skip
    rows = table_rows(compare)
    width = max(len(r[0]) for r in rows)
    print(f"  {'':<{width}}  {'this project':>14}  {'Kamailio':>12}  {'ratio':>6}")
    for label, a, b, r in rows:
        print(f"  {label:<{width}}  {a:>14}  {b:>12}  {r:>6}")
    parts = compare.get("ours") or compare.get("kamailio") or {}
    steady, flows = parts.get("steady") or {}, parts.get("subscribe_steady") or {}
    print("  (ratio >= 1.00: this project at least as good; steady: "
          f"{flows.get('rate', 0):g} subscription flows/s for "
          f"{flows.get('calls', 0) / (flows.get('rate') or 1):g} s, "
          f"{steady.get('target_rate', 0):g} PUBLISH/s for {steady.get('duration_s', 0):g} s; "
          "distinct presentities)")  # fmt: skip
    if meta.get("loadavg_before"):
        after = meta.get("loadavg_after", "?")
        print(f"  load average before {meta['loadavg_before']}, after {after} "
              "(other work on the machine skews both columns)")  # fmt: skip
    for server, parts in compare.items():
        per = ((parts or {}).get("steady") or {}).get("cpu", {}) or {}
        if per.get("ms_per_publish"):
            print(f"  CPU ms per PUBLISH, {server}: " + ", ".join(
                f"{name} {ms:g}" for name, ms in per["ms_per_publish"].items()))  # fmt: skip
        per = ((parts or {}).get("subscribe_steady") or {}).get("cpu", {}) or {}
        if per.get("ms_per_call"):
            print(f"  CPU ms per subscription flow, {server}: " + ", ".join(
                f"{name} {ms:g}" for name, ms in per["ms_per_call"].items()))  # fmt: skip
    for line in notes(compare):
        print(f"  note: {line}")


def add_settle_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--settle-ms",
        type=float,
        default=250.0,
        help="idle: 3 probe PUBLISHes in a row answered within this",
    )
    parser.add_argument("--settle-max", type=float, default=60.0,
                        help="seconds to wait for an idle server at most")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("search", help="a rate search with sipp against one server")
    s.add_argument("scenario", choices=SCENARIOS)
    s.add_argument("--port", type=int, required=True, help="the server's UDP port on 127.0.0.1")
    s.add_argument("--server", required=True, help="a name for the results (ours, kamailio)")
    s.add_argument("--out", type=Path, required=True, help="folder for sipp's files")
    s.add_argument("--json", type=Path, required=True)
    s.add_argument("--start", type=float, default=50.0, help="calls/s of the first step")
    s.add_argument("--factor", type=float, default=2.0)
    s.add_argument("--refine", type=int, default=2, help="bisection steps after the first failure")
    s.add_argument("--max-rate", type=float, default=4000.0)
    s.add_argument("--max-steps", type=int, default=10)
    s.add_argument("--step-seconds", type=float, default=8.0, help="calls = rate x this")
    s.add_argument("--cooldown", type=float, default=3.0, help="idle seconds between steps")
    s.add_argument("--sipp", default=shutil.which("sipp") or "sipp")
    add_settle_arguments(s)
    st = sub.add_parser("steady", help="one sipp step at a fixed rate against one server")
    st.add_argument("scenario", choices=SCENARIOS)
    st.add_argument("--rate", type=float, required=True)
    st.add_argument("--port", type=int, required=True, help="the server's UDP port on 127.0.0.1")
    st.add_argument("--server", required=True, help="a name for the results (ours, kamailio)")
    st.add_argument("--out", type=Path, required=True, help="folder for sipp's files")
    st.add_argument("--json", type=Path, required=True)
    st.add_argument("--step-seconds", type=float, default=10.0, help="calls = rate x this")
    st.add_argument("--sipp", default=shutil.which("sipp") or "sipp")
    st.add_argument("--cpu", action="append", default=[], metavar="NAME=PID",
                    help="a server process whose CPU (with its children) to measure")  # fmt: skip
    se = sub.add_parser("settle", help="wait until a server answers PUBLISH promptly again")
    se.add_argument("--port", type=int, required=True, help="the server's UDP port on 127.0.0.1")
    add_settle_arguments(se)
    t = sub.add_parser("table", help="print the table of a make bench result file")
    t.add_argument("result", type=Path)
    args = parser.parse_args()
    if args.command == "steady":
        args.cpu = [(name, int(pid)) for name, _, pid in (v.partition("=") for v in args.cpu)]
    if args.command == "table":
        result = json.loads(args.result.read_text())
        print_table(result.get("compare") or {}, result)
        return
    if args.command == "settle":
        waited = settle(args.port, args.settle_ms, args.settle_max)
        state = "idle" if waited["settled"] else "NOT idle"
        print(f"  udp 127.0.0.1:{args.port}: {state} after {waited['waited_s']} s "
              f"(last probe {waited['last_probe_ms']} ms)")  # fmt: skip
        return
    if args.command == "steady":
        if not (1 <= args.step_seconds <= 60 and 0 < args.rate <= 10_000):
            sys.exit("--step-seconds must be in 1..60 and --rate in (0, 10000]")
        pids = dict(args.cpu)
        from notify_bench import cpu_ticks  # imports the project's SIP package: only here

        before = cpu_ticks(pids)
        step = run_step(args, args.rate, 1)
        if pids:
            used = cpu_used(before, cpu_ticks(pids))
            per_call = {name: round(1000 * s / step.calls, 3) for name, s in used.items()}
            step.cpu = {
                "ms_per_call": per_call,
                "server_ms_per_call": round(sum(per_call.values()), 3),
            }
        args.json.write_text(json.dumps(asdict(step), indent=2))
        return
    if not (1 <= args.step_seconds <= 60 and 0 <= args.cooldown <= 60 and args.max_steps <= 20):
        sys.exit("--step-seconds must be in 1..60, --cooldown in 0..60, --max-steps <= 20")
    try:
        SearchPlan(args.start, args.factor, args.refine, args.max_rate, args.max_steps)
    except ValueError as error:
        sys.exit(f"rate search: {error}")
    result = search(args)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"  {args.server} {args.scenario}: highest clean rate {result['highest_clean_rate']:g}/s"
          + (" (the cap)" if result["capped"] else ""))  # fmt: skip


if __name__ == "__main__":
    main()
