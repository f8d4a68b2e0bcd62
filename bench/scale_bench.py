"""The scale part of `make bench`: the same figures with a stored population behind them.

    scale_bench.py load DB_URL --size N --edge-id ID --sink-port P --json FILE
    scale_bench.py tables DB_URL --json FILE
    scale_bench.py probe --pid NAME=PID ... [--store-http URL --token T] --json FILE
    scale_bench.py summarize DIR --json FILE       the table of DIR/r<round>-<size>/
    scale_bench.py table RESULT.json               the table of a `make bench` result

`load` empties the population tables (presentity, active_watchers, watchers,
processed_requests) and fills them with N presentities and N active subscriptions in
a few set-based statements (generate_series), then VACUUM ANALYZEs them and
checkpoints (the load's pages written before anything is measured). The rows are the
ones the store writes for an initial PUBLISH and an accepted SUBSCRIBE followed by
its first NOTIFY (publish_store.py, subscribe_store.py and the CSeq allocation
of presence.tables.notify_views): a ~600-byte PIDF document (publish_bench.pidf) with its device and
device marks; a dialog with To-tag (to_tag_pref + 16 hex digits), From-tag, Call-ID,
CSeqs, Contact, URIs, flow and the bench edge's id, status active, and the
(presentity, watcher) decision in watchers. Subscriptions are spread like a real
population: presentity k of N is watched by about sqrt(N/k)/2 dialogs (subscription
j watches presentity ceil(N (j/N)^2)), so the average is one, the most watched has
about sqrt(N), and about four in ten have none; every user watches once (watcher
1 + (7919 j mod N), a bijection). Publications expire in 600 to 3,600 s and
dialogs in 1,800 to 3,600 s, spread evenly as refreshes spread them: nothing
expires during a run, so the cleaner has nothing to send, and a dialog's Contact
and flow point at a loopback UDP port nobody listens on (--sink-port): should
anything ever notify one, the NOTIFY times out after Timer F and the store ends the
dialog (a 408), as it would for a vanished phone.

`tables` reads the size of every population table and each of its indexes
(pg_relation_size, TOAST included in the table's figure) and their rows; `probe`
reads the services' VmRSS from /proc and, given the store's HTTP port and admin
token, times the clean_period sweep (POST /admin/cleanup: the timer's own code) and
a /metrics scrape (which counts the tables for the gauges).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from publish_bench import pidf

DOMAIN = "example.com"
TABLES = ("presentity", "active_watchers", "watchers", "processed_requests")
# The store's default to_tag_pref; a tag is this plus 16 hex digits (new_to_tag).
TO_TAG_PREF = "10"
# Bijection of 1..N for every N that 7919 (a prime) does not divide.
WATCHER_STRIDE = 7919
SWEEPS = 3


# --- loading -------------------------------------------------------------------------------


def body_template() -> str:
    """publish_bench's document with the user as a placeholder, filled in by SQL."""
    return pidf("{user}@" + DOMAIN).decode()


async def load(db_url: str, size: int, edge_id: str, sink_port: int) -> dict[str, Any]:
    import asyncpg

    if size < 0 or (size and size % WATCHER_STRIDE == 0):
        sys.exit(f"--size must be >= 0 and not a multiple of {WATCHER_STRIDE}")
    connection = await asyncpg.connect(db_url)
    now = int(time.time())
    sink = f"127.0.0.1:{sink_port}"
    timings: dict[str, float] = {}
    try:
        started = time.monotonic()
        await connection.execute(f"TRUNCATE {', '.join(TABLES)}")
        async with connection.transaction():
            await connection.execute(
                """INSERT INTO presentity (username, domain, event, etag, expires,
                        received_time, body, device_marks, device)
                   SELECT 'pop' || i, $2::text, 'presence', substr(md5('etag' || i), 1, 22),
                          $3::bigint + 600 + i % 3001, $3::bigint,
                          replace($4::text, '{user}', 'pop' || i),
                          ARRAY['contact:sip:pop' || i || '@' || $2::text, 'id:t1'],
                          'flow:udp:198.51.100.' || (i % 250 + 1) || ':' || (5060 + i % 1000)
                   FROM generate_series(1, $1::int) AS i""",
                size, DOMAIN, now, body_template(),
            )  # fmt: skip
            timings["presentity_s"] = time.monotonic() - started
            await connection.execute(
                """INSERT INTO active_watchers (to_user, to_domain, from_user, from_domain,
                        event, event_id, to_tag, from_tag, callid, remote_cseq, local_cseq,
                        contact, record_route, expires, status, version, local_uri,
                        remote_uri, flow, edge_id, watcher_event)
                   SELECT 'pop' || p, $2::text, 'pop' || w, $2::text, 'presence', NULL,
                          $5::text || substr(md5('to' || j), 1, 16),
                          substr(md5('from' || j), 1, 8), md5('call' || j) || '@' || $3::text,
                          1, 1, 'sip:pop' || w || '@' || $3::text, NULL,
                          $4::bigint + 1800 + j % 1801, 'active', 1,
                          'sip:pop' || p || '@' || $2::text, 'sip:pop' || w || '@' || $2::text,
                          'udp:' || $3::text, $6::text, 'subscribe'
                   FROM generate_series(1, $1::int) AS j,
                        LATERAL (SELECT greatest(1, ceil($1::int * power(j::float8 / $1::int, 2)))
                                            ::bigint AS p,
                                        1 + (j::bigint * $7::int) % $1::int AS w) AS pair""",
                size, DOMAIN, sink, now, TO_TAG_PREF, edge_id, WATCHER_STRIDE,
            )  # fmt: skip
            await connection.execute(
                """INSERT INTO watchers (p_user, p_domain, w_user, w_domain, subs_status,
                        reason, inserted_time)
                   SELECT DISTINCT to_user, to_domain, from_user, from_domain, 'active',
                          NULL::varchar, $1::bigint
                   FROM active_watchers""",
                now,
            )
        timings["subscriptions_s"] = time.monotonic() - started - timings["presentity_s"]
        analyzed = time.monotonic()
        for table in TABLES:
            await connection.execute(f"VACUUM ANALYZE {table}")
        timings["vacuum_analyze_s"] = time.monotonic() - analyzed
        # The load's dirty pages written now, not by a checkpoint during the measuring.
        try:
            await connection.execute("CHECKPOINT")
        except asyncpg.InsufficientPrivilegeError:
            print("  (no CHECKPOINT: needs superuser or pg_checkpoint; a checkpoint may "
                  "write the load's pages during the measuring)")  # fmt: skip
        most = await connection.fetchval(
            """SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM active_watchers
               GROUP BY to_domain, to_user) AS per"""
        )
        unwatched = size - await connection.fetchval(
            "SELECT count(DISTINCT (to_domain, to_user)) FROM active_watchers"
        )
    finally:
        await connection.close()
    result = {
        "size": size, "presentities": size, "subscriptions": size,
        "most_watchers_of_one_presentity": most, "presentities_without_watchers": unwatched,
        "sink": f"udp:{sink}", "load_s": round(time.monotonic() - started, 2),
        **{k: round(v, 2) for k, v in timings.items()},
    }  # fmt: skip
    print(f"  loaded {size:,} presentities and {size:,} subscriptions in "
          f"{result['load_s']:.1f} s (most watched: {most}, unwatched: {unwatched:,})")  # fmt: skip
    return result


async def tables(db_url: str) -> dict[str, Any]:
    """Bytes of each population table (heap with TOAST) and of each of its indexes."""
    import asyncpg

    connection = await asyncpg.connect(db_url)
    try:
        result: dict[str, Any] = {}
        for table in TABLES:
            rows = await connection.fetchval(f"SELECT count(*) FROM {table}")
            heap = await connection.fetchval("SELECT pg_table_size($1::regclass)", table)
            indexes = {
                row["name"]: row["bytes"]
                for row in await connection.fetch(
                    """SELECT indexrelid::regclass::text AS name,
                              pg_relation_size(indexrelid) AS bytes
                       FROM pg_index WHERE indrelid = $1::regclass ORDER BY 1""",
                    table,
                )
            }
            total = await connection.fetchval("SELECT pg_total_relation_size($1::regclass)", table)
            result[table] = {"rows": rows, "table_bytes": heap, "index_bytes": indexes,
                             "total_bytes": total}  # fmt: skip
        return result
    finally:
        await connection.close()


# --- what each hot statement reads ---------------------------------------------------------

# The statements a PUBLISH, a SUBSCRIBE, a change and the clean_period sweep run (as in
# publish_store.py, presentity_documents.py, subscribe_store.py, handlers.py,
# presence/active_watchers.py, presence/notify_views.py and cleaner.py), for the last
# loaded dialog: its presentity ({user}, watched once), its watcher ({watcher}) and its
# To-tag ({to_tag}). The shared blocks each one touches do not depend on the machine's
# load: a statement whose blocks grow with the size reads more than its own rows.
PLANS = {
    "publish: live publications": """SELECT count(*) FROM presentity
        WHERE username = {user} AND domain = {domain} AND event = 'presence' AND expires > {now}""",
    "publish: the document": """SELECT etag, received_time, body, device FROM presentity
        WHERE username = {user} AND domain = {domain} AND event = 'presence' AND expires > {now}
        ORDER BY received_time, id""",
    "publish: idempotency lookup": """SELECT reply, notices FROM processed_requests
        WHERE request_id = 'no-such-request'""",
    "subscribe: the watcher's dialogs": """SELECT count(*) FROM active_watchers
        WHERE from_domain = {domain} AND from_user = {watcher} AND status <> 'terminated'
          AND expires > {now}""",
    "subscribe: the presentity's dialogs": """SELECT count(*) FROM active_watchers
        WHERE to_domain = {domain} AND to_user = {user} AND event = 'presence'
          AND status <> 'terminated' AND expires > {now}""",
    "subscribe: in-dialog refresh": """SELECT id, callid, from_tag, remote_cseq
        FROM active_watchers WHERE to_tag = {to_tag} AND expires > {now}""",
    "publish and notifier: anyone watching": """SELECT EXISTS (SELECT 1 FROM active_watchers
        WHERE to_domain = {domain} AND to_user = {user} AND event = 'presence'
          AND status <> 'terminated')""",
    "sweep: expired publications": """SELECT id, username, domain, event, body FROM presentity
        WHERE expires <= {now} ORDER BY expires LIMIT 500""",
    "sweep: expired subscriptions": """SELECT id FROM active_watchers
        WHERE expires <= {now} AND status <> 'terminated' ORDER BY expires LIMIT 500""",
    "sweep: terminated dialogs": """SELECT ctid FROM active_watchers
        WHERE status = 'terminated' AND expires <= {now} - 300 LIMIT 500""",
    "sweep: stale pending watchers": """SELECT ctid FROM watchers
        WHERE subs_status = 'pending' AND inserted_time <= {now} - 30 * 86400 LIMIT 500""",
    "sweep: old idempotency records": """SELECT ctid FROM processed_requests
        WHERE created_at <= {now} - 3600 LIMIT 500""",
    # Writes (rolled back): a new dialog and its decision, a new publication, a NOTIFY's
    # CSeq; a random To-tag and entity tag land where real ones do in their indexes.
    "subscribe: new dialog (insert)": """INSERT INTO active_watchers (to_user, to_domain,
            from_user, from_domain, event, to_tag, from_tag, callid, remote_cseq, local_cseq,
            contact, expires, status, version, local_uri, remote_uri, flow, edge_id)
        VALUES ({user}, {domain}, 'probe', {domain}, 'presence',
            '10' || substr(md5(clock_timestamp()::text), 1, 16), 'f', 'c@h', 1, 0,
            'sip:probe@127.0.0.1:9', {now} + 3600, 'active', 0, 'sip:u', 'sip:w',
            'udp:127.0.0.1:9', 'bench-edge')""",
    "subscribe: its decision (upsert)": """INSERT INTO watchers (p_user, p_domain, w_user,
            w_domain, subs_status, reason, inserted_time)
        VALUES ({user}, {domain}, 'probe', {domain}, 'active', NULL, {now})
        ON CONFLICT (p_user, p_domain, w_user, w_domain) DO UPDATE
            SET subs_status = EXCLUDED.subs_status, reason = EXCLUDED.reason""",
    "publish: new publication (insert)": """INSERT INTO presentity (username, domain, event,
            etag, expires, received_time, body, device_marks, device)
        VALUES ({user}, {domain}, 'presence', substr(md5(clock_timestamp()::text), 1, 22),
            {now} + 600, {now}, repeat('x', 630), ARRAY['id:t1'], 'flow:udp:127.0.0.1:9')""",
    "store and notifier: a NOTIFY's CSeq (update)": """UPDATE active_watchers
        SET local_cseq = local_cseq + 1, version = version + 1 WHERE to_tag = {to_tag}""",
}


def numbered(sql: str, values: dict[str, Any]) -> tuple[str, list[Any]]:
    """SQL with {names} as $1, $2, ... in order of first use, and the arguments."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"\{([a-z_]+)\}", number, sql), [values[name] for name in names]


async def plans(db_url: str) -> dict[str, Any]:
    """Per statement: shared blocks touched (hit + read), execution ms, the plan's scans,
    and the WAL it wrote the first time (right after the load's checkpoint: every page
    it changes is then written whole, as after any checkpoint) and the second time."""
    import asyncpg

    connection = await asyncpg.connect(db_url)
    try:
        last = await connection.fetchrow(
            "SELECT to_user, from_user, to_tag FROM active_watchers ORDER BY id DESC LIMIT 1"
        )
        values = {
            "user": last["to_user"] if last else "pop1",
            "domain": DOMAIN,
            "watcher": last["from_user"] if last else "pop1",
            "to_tag": last["to_tag"] if last else "none",
            "now": int(time.time()),
        }
        result: dict[str, Any] = {}
        for name, sql in PLANS.items():
            text, args = numbered(sql, values)
            # Twice: the first run may read what the second finds in shared buffers.
            runs = []
            for _ in range(2):
                transaction = connection.transaction()
                await transaction.start()
                try:
                    (plan,) = json.loads(
                        await connection.fetchval(
                            f"EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) {text}", *args
                        )
                    )
                finally:
                    await transaction.rollback()
                runs.append(plan)
            first, top = runs[0]["Plan"], runs[1]["Plan"]
            result[name] = {
                "blocks": top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0),
                "ms": round(runs[1]["Execution Time"], 3),
                "scans": sorted(set(_scans(top))),
                "wal_bytes_after_checkpoint": first.get("WAL Bytes", 0),
                "wal_full_pages_after_checkpoint": first.get("WAL FPI", 0),
                "wal_bytes": top.get("WAL Bytes", 0),
            }
        return result
    finally:
        await connection.close()


def _scans(node: dict[str, Any]) -> list[str]:
    found = []
    if "Scan" in node.get("Node Type", ""):
        found.append(f"{node['Node Type']} {node.get('Index Name') or node.get('Relation Name')}")
    for child in node.get("Plans", []):
        found += _scans(child)
    return found


# --- probing the running services ----------------------------------------------------------


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def timed_request(url: str, token: str | None = None, method: str = "GET") -> float:
    request = urllib.request.Request(url, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()
    return (time.perf_counter() - started) * 1000


def probe(pids: dict[str, int], store_http: str | None, token: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {"rss_kb": {name: rss_kb(pid) for name, pid in pids.items()},
                              "loadavg": Path("/proc/loadavg").read_text().split()[:3]}  # fmt: skip
    if store_http:
        # The gauges recount at most every 5 s: a scrape now recounts (none ran before).
        result["metrics_scrape_ms"] = round(timed_request(f"{store_http}/metrics"), 2)
        sweeps = [timed_request(f"{store_http}/admin/cleanup", token, "POST")
                  for _ in range(SWEEPS)]  # fmt: skip
        result["cleanup_sweep_ms"] = [round(ms, 2) for ms in sweeps]
    return result


# --- the table ----------------------------------------------------------------------------


def dig(data: Any, *path: str) -> float | None:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return float(data) if isinstance(data, int | float) else None


def figures(folder: Path) -> dict[str, Any]:
    """One run at one size: the figures the table shows, from its parts' files."""

    def part(name: str) -> dict[str, Any]:
        path = folder / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    loaded, sizes, before, after = part("load"), part("tables"), part("before"), part("after")
    statements = part("plans")
    steady, flows, search, fanout = (
        part("steady"), part("subscribe_steady"), part("publish_search"), part("fanout")
    )  # fmt: skip
    subscriptions = int(loaded.get("subscriptions") or 0)
    presentities = int(loaded.get("presentities") or 0)

    def per_row(*tables_: str, rows: int) -> float | None:
        if not rows or not sizes:
            return None
        return sum(sizes[t]["total_bytes"] for t in tables_) / rows

    sweeps = before.get("cleanup_sweep_ms") or []
    return {
        "size": int(loaded.get("size", -1)),
        "round": int(folder.name.split("-")[0].lstrip("r") or 0),
        "publish_p50_ms": dig(steady, "latency_ms", "p50"),
        "publish_p99_ms": dig(steady, "latency_ms", "p99"),
        "publish_ok": f"{steady.get('ok_200', 0)}/{steady.get('sent', 0)}",
        "highest_clean_publish_rate": dig(search, "highest_clean_rate"),
        "subscribe_notify_p50_ms": dig(flows, "response_ms", "1", "p50"),
        "subscribe_notify_p99_ms": dig(flows, "response_ms", "1", "p99"),
        "subscribe_steady_clean": flows.get("clean"),
        "fanout_p50_ms": dig(fanout, "notify_delay_ms", "p50"),
        "fanout_last_ms": dig(fanout, "notify_delay_ms", "max"),
        "fanout_missing": fanout.get("deliveries_missing"),
        "cleanup_sweep_ms": statistics.median(sweeps) if sweeps else None,
        "metrics_scrape_ms": before.get("metrics_scrape_ms"),
        "bytes_per_subscription": per_row("active_watchers", rows=subscriptions),
        "bytes_per_subscription_with_watchers": per_row(
            "active_watchers", "watchers", rows=subscriptions
        ),
        "bytes_per_presentity": per_row("presentity", rows=presentities),
        "rss_kb_before": before.get("rss_kb"),
        "rss_kb_after": after.get("rss_kb"),
        "loadavg_before": before.get("loadavg"),
        "loadavg_after": after.get("loadavg"),
        "load_s": loaded.get("load_s"),
        "statement_blocks": sum(p["blocks"] for p in statements.values()) if statements else None,
        "tables": sizes,
        "plans": statements,
        "population": {k: loaded.get(k) for k in
                       ("most_watchers_of_one_presentity", "presentities_without_watchers")},
    }  # fmt: skip


def summarize(folder: Path) -> list[dict[str, Any]]:
    runs = [figures(path) for path in folder.iterdir() if path.is_dir()]
    return sorted(runs, key=lambda r: (r["round"], r["size"]))


COLUMNS = (
    # (header, key, format)
    ("PUB p50", "publish_p50_ms", "{:.1f}"),
    ("PUB p99", "publish_p99_ms", "{:.1f}"),
    ("PUB max/s", "highest_clean_publish_rate", "{:,.0f}"),
    ("SUB p50", "subscribe_notify_p50_ms", "{:.0f}"),
    ("SUB p99", "subscribe_notify_p99_ms", "{:.0f}"),
    ("fan p50", "fanout_p50_ms", "{:.0f}"),
    ("fan last", "fanout_last_ms", "{:.0f}"),
    ("sweep ms", "cleanup_sweep_ms", "{:.1f}"),
    ("blocks", "statement_blocks", "{:,.0f}"),
    ("scrape ms", "metrics_scrape_ms", "{:.1f}"),
    ("B/sub", "bytes_per_subscription", "{:,.0f}"),
    ("B/sub+w", "bytes_per_subscription_with_watchers", "{:,.0f}"),
    ("B/pres", "bytes_per_presentity", "{:,.0f}"),
)


def rss_mb(rss: dict[str, int | None] | None) -> str:
    if not rss:
        return "-"
    return "/".join("-" if v is None else f"{v / 1024:.0f}" for v in rss.values())


def median_by_size(runs: list[dict[str, Any]]) -> dict[int, dict[str, float | None]]:
    by_size: dict[int, dict[str, float | None]] = {}
    for size in sorted({r["size"] for r in runs}):
        same = [r for r in runs if r["size"] == size]
        by_size[size] = {}
        for _, key, _ in COLUMNS:
            values = [r[key] for r in same if r[key] is not None]
            by_size[size][key] = statistics.median(values) if values else None
    return by_size


def print_table(runs: list[dict[str, Any]]) -> None:
    if not runs:
        return
    print("\n== scale: the same figures with N stored presentities and N active subscriptions ==")
    print("  PUB: PUBLISH->200 ms at a steady rate, highest clean PUBLISH rate (sipp search);"
          " SUB: SUBSCRIBE->first NOTIFY ms (sipp, whole ms); fan: 1 presentity x watchers,"
          " PUBLISH->NOTIFY ms; sweep: POST /admin/cleanup ms (median of"
          f" {SWEEPS}); blocks: shared blocks the hot statements touch together;"
          " scrape: store /metrics ms; B/sub: active_watchers bytes (table +"
          " indexes) per subscription, +w with its watchers row; B/pres: presentity bytes"
          " per publication; RSS MB edge/store/notifier after the run")  # fmt: skip

    def cell(value: Any, fmt: str) -> str:
        return "-" if value is None else fmt.format(value)

    header = f"  {'size':>7} {'rnd':>3} " + " ".join(f"{h:>9}" for h, _, _ in COLUMNS)
    print(header + f" {'RSS MB':>12} {'load avg':>15}")
    for run in runs:
        cells = " ".join(f"{cell(run[key], fmt):>9}" for _, key, fmt in COLUMNS)
        load = " ".join(run["loadavg_before"] or ["-"])
        print(f"  {run['size']:>7,} {run['round']:>3} {cells} {rss_mb(run['rss_kb_after']):>12}"
              f" {load:>15}")  # fmt: skip
    medians = median_by_size(runs)
    if len(runs) > len(medians):
        print("  median by size:")
        for size, values in medians.items():
            cells = " ".join(f"{cell(values[key], fmt):>9}" for _, key, fmt in COLUMNS)
            print(f"  {size:>7,} {'':>3} {cells}")
    sizes = sorted(medians)
    if len(sizes) > 1 and sizes[0] == 0:
        largest = sizes[-1]
        ratios = []
        for header_, key, _ in COLUMNS[:7]:
            empty, full = medians[0][key], medians[largest][key]
            if empty and full is not None:
                ratios.append(f"{header_} {full / empty:.2f}")
        print(f"  {largest:,} / empty: " + ", ".join(ratios)
              + " (within 20 %: 0.80..1.20; for PUB max/s higher is better)")  # fmt: skip
    print_plans(runs)
    for run in runs:
        problems = []
        if run["publish_ok"].split("/")[0] != run["publish_ok"].split("/")[1]:
            problems.append(f"PUBLISH answered 200: {run['publish_ok']}")
        if run["subscribe_steady_clean"] is False:
            problems.append("subscription flows at the steady rate not clean")
        if run["fanout_missing"]:
            problems.append(f"fan-out: {run['fanout_missing']} NOTIFYs missing")
        if problems:
            print(f"  note: size {run['size']:,} round {run['round']}: " + "; ".join(problems))


def print_plans(runs: list[dict[str, Any]]) -> None:
    """Blocks each hot statement touches, by size (the first round that read them)."""
    by_size: dict[int, dict[str, Any]] = {}
    for run in runs:
        if run.get("plans") and run["size"] not in by_size:
            by_size[run["size"]] = run["plans"]
    if not by_size:
        return
    names = list(next(iter(by_size.values())))
    width = max(len(name) for name in names)
    print("  shared blocks per statement (the services' statements, EXPLAIN ANALYZE,"
          " BUFFERS; writes: also WAL bytes, first after a checkpoint / again):")  # fmt: skip
    print(f"  {'':<{width}} " + " ".join(f"{size:>15,}" for size in by_size))
    for name in names:
        cells = []
        for size in by_size:
            plan = by_size[size].get(name, {})
            cell = str(plan.get("blocks", "-"))
            if plan.get("wal_bytes_after_checkpoint"):
                cell += f" {plan['wal_bytes_after_checkpoint']}/{plan.get('wal_bytes', 0)}"
            cells.append(f"{cell:>15}")
        print(f"  {name:<{width}} " + " ".join(cells))


# --- command line -------------------------------------------------------------------------


def named_pid(text: str) -> tuple[str, int]:
    name, _, pid = text.partition("=")
    if not name or not pid.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=PID, got {text!r}")
    return name, int(pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ld = sub.add_parser("load", help="empty the population tables and load N of each")
    ld.add_argument("db_url")
    ld.add_argument("--size", type=int, required=True)
    ld.add_argument("--edge-id", required=True, help="the edge that would send their NOTIFYs")
    ld.add_argument("--sink-port", type=int, required=True,
                    help="loopback UDP port nobody listens on: the dialogs' Contact")  # fmt: skip
    ld.add_argument("--json", type=Path, required=True)
    tb = sub.add_parser("tables", help="bytes and rows of the population tables")
    tb.add_argument("db_url")
    tb.add_argument("--json", type=Path, required=True)
    pr = sub.add_parser("probe", help="the services' RSS; the cleaner sweep and a scrape")
    pr.add_argument("--pid", type=named_pid, action="append", default=[])
    pr.add_argument("--store-http", help="http://127.0.0.1:PORT of the presence-store")
    pr.add_argument("--token", help="its admin token")
    pr.add_argument("--json", type=Path, required=True)
    pl = sub.add_parser("plans", help="blocks each hot statement touches")
    pl.add_argument("db_url")
    pl.add_argument("--json", type=Path, required=True)
    sm = sub.add_parser("summarize", help="the table of DIR/r<round>-<size>/")
    sm.add_argument("folder", type=Path)
    sm.add_argument("--json", type=Path, required=True)
    tt = sub.add_parser("table", help="print the scale table of a make bench result file")
    tt.add_argument("result", type=Path)
    args = parser.parse_args()
    if args.command == "load":
        result = asyncio.run(load(args.db_url, args.size, args.edge_id, args.sink_port))
    elif args.command == "tables":
        result = asyncio.run(tables(args.db_url))
    elif args.command == "plans":
        result = asyncio.run(plans(args.db_url))
    elif args.command == "probe":
        if args.store_http and not args.token:
            sys.exit("--store-http needs --token (the cleanup endpoint is an admin one)")
        result = probe(dict(args.pid), args.store_http, args.token)
    elif args.command == "summarize":
        runs = summarize(args.folder)
        args.json.write_text(json.dumps(runs, indent=2) + "\n")
        print_table(runs)
        return
    else:
        print_table(json.loads(args.result.read_text()).get("scale") or [])
        return
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
