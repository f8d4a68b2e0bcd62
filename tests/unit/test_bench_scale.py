"""The pure parts of bench/scale_bench.py: one size's figures from its parts' files, the
medians and ratios of the table; and the store's gauge pause, which grows with what
counting the tables costs. No database, no server."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from scale_bench import (
    PLANS,
    body_template,
    figures,
    median_by_size,
    numbered,
    print_table,
    summarize,
)

from presence_store.gauges import MAX_SHARE, REFRESH_EVERY, refresh_pause


def write_run(root: Path, round_: int, size: int, publish_p99: float, rate: float) -> None:
    folder = root / f"r{round_}-{size}"
    folder.mkdir(parents=True)
    parts = {
        "load": {"size": size, "presentities": size, "subscriptions": size},
        "tables": {
            table: {"rows": size, "total_bytes": size * per_row}
            for table, per_row in (
                ("presentity", 1000),
                ("active_watchers", 500),
                ("watchers", 200),
                ("processed_requests", 0),
            )
        },
        "steady": {"latency_ms": {"p50": 10.0, "p99": publish_p99}, "ok_200": 5, "sent": 5},
        "publish_search": {"highest_clean_rate": rate},
        "subscribe_steady": {"clean": True, "response_ms": {"1": {"p50": 3.0, "p99": 9.0}}},
        "fanout": {"notify_delay_ms": {"p50": 100.0, "max": 200.0}, "deliveries_missing": 0},
        "before": {
            "rss_kb": {"sip-edge": 70_000},
            "cleanup_sweep_ms": [4.0, 2.0, 3.0],
            "metrics_scrape_ms": 8.0,
            "loadavg": ["0.5", "0.4", "0.3"],
        },
        "after": {"rss_kb": {"sip-edge": 72_000}, "loadavg": ["0.9", "0.5", "0.3"]},
    }
    for name, data in parts.items():
        (folder / f"{name}.json").write_text(json.dumps(data))


def test_figures_read_every_part_of_one_size(tmp_path: Path) -> None:
    write_run(tmp_path, 2, 1000, publish_p99=30.0, rate=400.0)
    run = figures(tmp_path / "r2-1000")
    assert (run["size"], run["round"]) == (1000, 2)
    assert run["publish_p99_ms"] == 30.0 and run["highest_clean_publish_rate"] == 400.0
    assert run["subscribe_notify_p99_ms"] == 9.0 and run["fanout_last_ms"] == 200.0
    assert run["cleanup_sweep_ms"] == 3.0  # the median of the sweeps
    assert run["bytes_per_subscription"] == 500
    assert run["bytes_per_subscription_with_watchers"] == 700
    assert run["bytes_per_presentity"] == 1000


def test_an_empty_population_has_no_bytes_per_row(tmp_path: Path) -> None:
    write_run(tmp_path, 1, 0, publish_p99=20.0, rate=400.0)
    run = figures(tmp_path / "r1-0")
    assert run["bytes_per_subscription"] is None and run["bytes_per_presentity"] is None


def test_a_missing_part_leaves_its_figures_empty(tmp_path: Path) -> None:
    write_run(tmp_path, 1, 10, publish_p99=20.0, rate=400.0)
    (tmp_path / "r1-10" / "fanout.json").unlink()
    run = figures(tmp_path / "r1-10")
    assert run["fanout_p50_ms"] is None and run["publish_p99_ms"] == 20.0


def test_rounds_are_summarized_by_size_with_their_median(tmp_path: Path, capsys) -> None:
    for round_, p99 in ((1, 20.0), (2, 40.0), (3, 30.0)):
        write_run(tmp_path, round_, 0, publish_p99=p99, rate=400.0)
        write_run(tmp_path, round_, 5000, publish_p99=p99 * 1.5, rate=300.0)
    runs = summarize(tmp_path)
    assert [(r["round"], r["size"]) for r in runs] == [
        (1, 0), (1, 5000), (2, 0), (2, 5000), (3, 0), (3, 5000)
    ]  # fmt: skip
    medians = median_by_size(runs)
    assert medians[0]["publish_p99_ms"] == 30.0 and medians[5000]["publish_p99_ms"] == 45.0
    print_table(runs)
    out = capsys.readouterr().out
    assert "5,000 / empty: PUB p50 1.00, PUB p99 1.50, PUB max/s 0.75" in out


def test_the_loaded_body_is_the_publish_benchs_document() -> None:
    body = body_template()
    assert body.count("{user}@example.com") == 2  # entity and contact
    assert body.startswith("<?xml") and '<tuple id="t1">' in body


@pytest.mark.parametrize(
    ("count_s", "pause"),
    [(0.0, REFRESH_EVERY), (0.02, REFRESH_EVERY), (0.2, 0.2 / MAX_SHARE), (2.0, 2.0 / MAX_SHARE)],
)
def test_gauges_pause_longer_when_counting_costs_more(count_s: float, pause: float) -> None:
    assert refresh_pause(count_s) == pytest.approx(pause)


def test_named_parameters_are_numbered_in_order_of_first_use() -> None:
    text, args = numbered(
        "WHERE a = {user} AND b = {now} AND c = {user} AND d <= {now} - 1 AND e = 's:x'::text",
        {"user": "u", "now": 7},
    )
    assert text == "WHERE a = $1 AND b = $2 AND c = $1 AND d <= $2 - 1 AND e = 's:x'::text"
    assert args == ["u", 7]


def test_every_plan_names_only_known_parameters() -> None:
    known = {"user": 1, "domain": 1, "watcher": 1, "to_tag": 1, "now": 1}
    for sql in PLANS.values():
        numbered(sql, known)  # a KeyError names a parameter nobody supplies


def test_the_table_lists_each_statements_blocks_by_size(tmp_path: Path, capsys) -> None:
    for size, blocks in ((0, 1), (100_000, 4)):
        write_run(tmp_path, 1, size, publish_p99=20.0, rate=400.0)
        (tmp_path / f"r1-{size}" / "plans.json").write_text(
            json.dumps({"publish: the document": {"blocks": blocks, "ms": 0.1, "scans": []}})
        )
    runs = summarize(tmp_path)
    assert [r["statement_blocks"] for r in runs] == [1, 4]
    print_table(runs)
    line = next(x for x in capsys.readouterr().out.splitlines() if "publish: the document" in x)
    assert line.split()[-2:] == ["1", "4"]
