"""The steps of scripts/bench.sh that are easier in Python than in bash.

benchctl.py free-ports N                  N distinct ports free for UDP and TCP
benchctl.py recreate-db ADMIN_URL NAME    DROP (FORCE) and CREATE a database
benchctl.py wait-ready URL PID SECONDS    poll /health/ready while PID lives
benchctl.py delete-topics BOOTSTRAP NS    delete the Kafka topics of namespace NS
benchctl.py wait-group BOOTSTRAP GROUP N SECONDS   until N members all own partitions
benchctl.py breakdown BOOTSTRAP NS EDGE OUT   where PUBLISH time went, from the topics
benchctl.py report OUT WORKDIR K=V...     merge WORKDIR/*.json into OUT, print a summary
                                          (and compare.py's side-by-side table, and
                                          scale_bench.py's table)
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out for TCP that are also free for UDP; all sockets stay
    open until every port is chosen, so the ports differ from one another."""
    ports: list[int] = []
    with ExitStack() as stack:
        while len(ports) < count:
            tcp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            udp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            ports.append(port)
    return ports


async def recreate_db(admin_url: str, name: str) -> None:
    import asyncpg  # only here: the other steps must not need the database driver

    if not name.replace("_", "").isalnum():
        sys.exit(f"bad database name {name!r}")
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await connection.execute(f"CREATE DATABASE {name}")
    finally:
        await connection.close()


def wait_ready(url: str, pid: int, seconds: float) -> None:
    """Exit 0 once URL answers 200; 1 if the process died or time ran out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit(f"process {pid} exited before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    sys.exit(f"{url} not ready after {seconds:g}s")


async def delete_topics(bootstrap: str, namespace: str) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    if not namespace:
        sys.exit("refusing to delete topics of the empty namespace")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(namespace + ".")]
        if doomed:
            await admin.delete_topics(doomed)
        return doomed
    finally:
        await admin.close()


async def wait_group(bootstrap: str, group: str, members: int, seconds: float) -> None:
    """Wait until the consumer group is Stable with `members` members, each owning at
    least one partition. A replica that is ready (/health/ready) may still be waiting
    for its assignment: measuring then would credit it with work it did not do. The
    services log "partitions assigned" at INFO only, and the bench runs them at
    WARNING, so this asks the broker (DescribeGroups) instead of reading logs."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    deadline, seen = time.monotonic() + seconds, ""
    try:
        while time.monotonic() < deadline:
            (response,) = await admin.describe_consumer_groups([group])
            # (error_code, group, state, protocol_type, protocol, members, ...)
            state, described = response.groups[0][2], response.groups[0][5]
            owned = [
                len(ConsumerProtocolMemberAssignment.decode(m[4]).partitions()) if m[4] else 0
                for m in described
            ]
            seen = f"state {state}, partitions per member {owned}"
            if state == "Stable" and len(owned) == members and all(owned):
                print(f"consumer group {group}: {seen}")
                return
            await asyncio.sleep(0.5)
    finally:
        await admin.close()
    sys.exit(f"consumer group {group} not balanced over {members} after {seconds:g}s ({seen})")


async def read_topic(bootstrap: str, topic: str) -> list[tuple[float, dict[str, Any]]]:
    """Every record of a topic, as (producer timestamp in s, decoded JSON event)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    if not partitions:
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, fetch_max_wait_ms=20
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records: list[tuple[float, dict[str, Any]]] = []
        while [tp for tp in partitions if await consumer.position(tp) < end[tp]]:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                records += [(r.timestamp / 1000, json.loads(r.value or b"{}")) for r in batch]
        return records
    finally:
        await consumer.stop()


def quantiles(values: list[float]) -> dict[str, float]:
    """Nearest-rank percentiles, in ms, of durations in seconds."""
    ordered = sorted(v * 1000 for v in values)
    if not ordered:
        return {}

    def pick(fraction: float) -> float:
        return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]

    return {
        "n": len(ordered),
        "p50": pick(0.5),
        "p90": pick(0.9),
        "p99": pick(0.99),
        "max": ordered[-1],
    }


async def breakdown(bootstrap: str, namespace: str, edge_id: str) -> dict[str, Any]:
    """Split PUBLISH latency with the timestamps the bus already carries: the edge's
    received_at and the CreateTime (ms) of the request and reply records (one machine,
    one clock). What the client sees beyond the last stage is the edge consuming its
    inbox and sending the response. No service code is touched for this."""
    requests = await read_topic(bootstrap, f"{namespace}.sip.requests")
    replies = await read_topic(bootstrap, f"{namespace}.sip.edge.{edge_id}")
    sent = {
        e["request_id"]: (e["received_at"], ts) for ts, e in requests if e.get("type") == "publish"
    }
    replied = {e["request_id"]: ts for ts, e in replies if e.get("type") == "reply"}
    both = [rid for rid in sent if rid in replied]
    # While the store has a backlog, this is its throughput (capacity), not the offered load.
    span = max(replied.values()) - min(replied.values()) if len(replied) > 1 else 0.0
    return {
        "store_replies_per_s": (len(replied) - 1) / span if span else None,
        "edge_received_to_request_produced_ms": quantiles([sent[r][1] - sent[r][0] for r in sent]),
        "request_produced_to_reply_produced_ms": quantiles([replied[r] - sent[r][1] for r in both]),
        "edge_received_to_reply_produced_ms": quantiles([replied[r] - sent[r][0] for r in both]),
        "requests_without_reply": len(sent) - len(both),
    }


def report(out: Path, work: Path, meta: list[str]) -> None:
    """One JSON file per run (from the parts in `work`), and the handful of numbers
    worth reading on a terminal."""
    result: dict[str, Any] = dict(item.split("=", 1) for item in meta)
    parts = ("parse", "publish", "breakdown", "fanout", "dialog_publish", "dialog_sipp",
             "dialog_fanout", "throughput_1", "throughput_3", "overload")  # fmt: skip
    for part in parts:
        path = work / f"{part}.json"
        result[part] = json.loads(path.read_text()) if path.exists() else None
    # compare-SERVER-PART.json: the side-by-side parts, by server.
    compare: dict[str, dict[str, Any]] = {}
    for path in sorted(work.glob("compare-*-*.json")):
        _, server, part = path.stem.split("-", 2)
        compare.setdefault(server, {})[part] = json.loads(path.read_text())
    result["compare"] = compare or None
    scale = work / "scale.json"  # one entry per (round, size): scale_bench.py
    result["scale"] = json.loads(scale.read_text()) if scale.exists() else None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    print("\n== make bench summary ==")
    if result["parse"]:
        for name, r in result["parse"]["messages"].items():
            print(
                f"  parse+serialize {name:<10} {r['parse_serialize_per_s']:>9,.0f} msg/s"
                f"  (parse {r['parse_per_s']:,.0f}/s, serialize {r['serialize_per_s']:,.0f}/s,"
                f" {r['parse_serialize_us']:.1f} µs)"
            )
    publish_summary(result["publish"], "PUBLISH")
    if not result["publish"] and "publish" in result.get("parts", "publish"):
        print("  PUBLISH: no results (the load generator did not finish)")
    rate = (result.get("breakdown") or {}).get("store_replies_per_s")
    if rate:
        print(f"  presence-store replied at {rate:.1f}/s on average (first to last reply)")
    for stage, q in (result.get("breakdown") or {}).items():
        if isinstance(q, dict) and q:
            print(
                f"  {stage:<40} p50 {q['p50']:.1f}  p90 {q['p90']:.1f}  p99 {q['p99']:.1f}"
                f"  max {q['max']:.1f}"
            )
    notify_summary(result)
    if result["compare"]:
        from compare import print_table  # imports this module: only when needed

        print_table(result["compare"], result)
    if result["overload"]:
        from overload_bench import print_summary  # only when the part ran

        print_summary(result["overload"])
    if result["scale"]:
        from scale_bench import print_table as print_scale_table

        print_scale_table(result["scale"])
    print(f"  results: {out}")


def publish_summary(publish: dict[str, Any] | None, what: str) -> None:
    """PUBLISH->200 under the steady load of publish_bench.py (presence or dialog)."""
    if not publish:
        return
    lat = {k: float("nan") if v is None else v for k, v in publish["latency_ms"].items()}
    print(
        f"  {what} sent {publish['sent']} at {publish['achieved_rate']:.1f}/s "
        f"(target {publish['target_rate']:g}/s, {publish['users']} users)"
    )
    print(
        f"  {what}->200 ms   p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  "
        f"p99 {lat['p99']:.1f}  max {lat['max']:.1f}"
    )
    print(
        f"  200 OK {publish['ok_200']}, other {publish['other_final'] or 'none'}, "
        f"timeouts {publish['timeouts']}"
    )


def fanout_summary(fanout: dict[str, Any] | None, what: str) -> None:
    if not fanout:
        return
    q = fanout["notify_delay_ms"]
    print(
        f"  {what} 1 presentity x {fanout['watchers_per_presentity']} watchers, "
        f"{fanout['changes_sent']} changes: PUBLISH->NOTIFY ms p50 {q['p50']:.1f}  "
        f"p90 {q['p90']:.1f}  p99 {q['p99']:.1f}  max {q['max']:.1f}; missing "
        f"{fanout['deliveries_missing']} of {fanout['deliveries_expected']}, "
        f"last state missing at {fanout['final_state_missing']} watchers"
    )


def notify_summary(result: dict[str, Any]) -> None:
    """The NOTIFY parts: fan-out delay, NOTIFYs/s by replica count, and the CPU each
    process used meanwhile (what explains the ratio on a small machine)."""
    fanout_summary(result.get("fanout"), "fan-out")
    publish_summary(result.get("dialog_publish"), "dialog PUBLISH")
    sipp = result.get("dialog_sipp")
    if sipp:
        answered = sipp.get("counts", {}).get("successful", "?")
        q = sipp.get("response_ms", {}).get("1", {})
        print(
            f"  dialog PUBLISH from sipp at {sipp['rate']:g}/s: {answered} of {sipp['calls']} "
            f"answered 200, PUBLISH->200 ms p50 {q.get('p50', float('nan')):.0f}  "
            f"p99 {q.get('p99', float('nan')):.0f}; "
            + ("clean" if sipp.get("clean") else "NOT clean: " + "; ".join(sipp["reasons"]))
        )
    fanout_summary(result.get("dialog_fanout"), "dialog fan-out")
    runs = {n: result.get(f"throughput_{n}") for n in (1, 3)}
    for n, run in runs.items():
        if run:
            pub = run["publish_to_200_ms"]
            print(
                f"  NOTIFY/s with {n} notifier{'s' if n > 1 else ' '} "
                f"{run['steady_notifies_per_s'] or 0:6.0f} steady (offered "
                f"{run['offered_notifies_per_s']:g}; {run['presentities']} presentities x "
                f"{run['watchers_per_presentity']}); PUBLISH->200 p50 {pub.get('p50', 0):.0f} ms, "
                f"NOTIFY retransmissions {run['anomalies'].get('notify_retransmissions', 0)}"
            )
    if runs[1] and runs[3] and runs[1]["steady_notifies_per_s"]:
        ratio = (runs[3]["steady_notifies_per_s"] or 0) / runs[1]["steady_notifies_per_s"]
        print(f"  3 notifiers / 1 notifier: {ratio:.2f}")
    cpus = {n: run["cpu"] for n, run in runs.items() if run and run.get("cpu")}
    if cpus:
        names = list(dict.fromkeys(k for c in cpus.values() for k in c["pct_of_one_core"]))
        print("  CPU during throughput, % of one core: " + "   ".join(
            f"[{n} notifier{'s' if n > 1 else ''}: machine {c['machine_pct']:g} of "
            f"{c['capacity_pct']}]" for n, c in cpus.items()))  # fmt: skip
        for name in names:
            cells = [cpus[n]["pct_of_one_core"].get(name) for n in cpus]
            print(f"    {name:<20}" + "".join(f"{'-' if c is None else c:>8}" for c in cells))


def main() -> None:
    command, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if command == "free-ports" and len(args) == 1:
        print(" ".join(map(str, free_ports(int(args[0])))))
    elif command == "recreate-db" and len(args) == 2:
        asyncio.run(recreate_db(args[0], args[1]))
    elif command == "wait-ready" and len(args) == 3:
        wait_ready(args[0], int(args[1]), float(args[2]))
    elif command == "delete-topics" and len(args) == 2:
        deleted = asyncio.run(delete_topics(args[0], args[1]))
        print(f"deleted {len(deleted)} topics of namespace {args[1]}")
    elif command == "wait-group" and len(args) == 4:
        asyncio.run(wait_group(args[0], args[1], int(args[2]), float(args[3])))
    elif command == "breakdown" and len(args) == 4:
        result = asyncio.run(breakdown(args[0], args[1], args[2]))
        Path(args[3]).write_text(json.dumps(result, indent=2))
    elif command == "report" and len(args) >= 2:
        report(Path(args[0]), Path(args[1]), args[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
