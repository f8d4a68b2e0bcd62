"""The pure parts of bench/compare.py: rate-search stepping, sipp's files, the verdict,
the side-by-side table. No sipp, no server."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from compare import (
    SearchPlan,
    bounds,
    counters,
    cpu_used,
    duration_s,
    next_rate,
    parse_rtt_csv,
    parse_stat_csv,
    table_rows,
    verdict,
)


def run_search(plan: SearchPlan, capacity: float) -> list[tuple[float, bool]]:
    """Drive next_rate against a server that is clean up to `capacity` calls/s."""
    steps: list[tuple[float, bool]] = []
    while (rate := next_rate(plan, steps)) is not None:
        steps.append((rate, rate <= capacity))
        assert len(steps) <= plan.max_steps
    return steps


def test_doubles_then_bisects_twice():
    steps = run_search(SearchPlan(start=50, refine=2), capacity=1950)
    assert [r for r, _ in steps] == [50, 100, 200, 400, 800, 1600, 3200, 2400, 2000]
    assert bounds(steps) == (1600, 2000)


def test_first_step_unclean_searches_downwards():
    steps = run_search(SearchPlan(start=50, refine=2), capacity=20)
    assert [r for r, _ in steps] == [50, 25, 12]
    assert bounds(steps) == (12, 25)


def test_nothing_clean_gives_zero():
    steps = run_search(SearchPlan(start=50, refine=1), capacity=0)
    assert bounds(steps) == (0.0, 25)


def test_stops_at_the_cap_when_all_clean():
    steps = run_search(SearchPlan(start=50, max_rate=300), capacity=10_000)
    assert [r for r, _ in steps] == [50, 100, 200, 300]
    assert bounds(steps) == (300, None)


def test_max_steps_bounds_the_search():
    steps = run_search(SearchPlan(start=1, max_rate=1e6, max_steps=4), capacity=1e9)
    assert len(steps) == 4


def test_no_refinement_stops_at_the_first_unclean_step():
    steps = run_search(SearchPlan(start=100, refine=0), capacity=250)
    assert [r for r, _ in steps] == [100, 200, 400]
    assert bounds(steps) == (200, 400)


def test_nothing_left_between_adjacent_rates():
    assert next_rate(SearchPlan(start=1, refine=5), [(1, True), (2, False)]) is None


def test_a_clean_step_above_an_unclean_one_does_not_count():
    """Noise: 300 clean after 200 failed; the answer stays below the lowest failure."""
    assert bounds([(100, True), (200, False), (300, True)]) == (100, 200)


@pytest.mark.parametrize(
    "kwargs", [{"start": 0}, {"factor": 1.0}, {"refine": -1}, {"max_steps": 0}, {"start": 5000}]
)
def test_plan_refuses_nonsense(kwargs):
    with pytest.raises(ValueError):
        SearchPlan(**kwargs)


# sipp 3.6's -trace_stat file, cut to the columns that matter plus a few others.
STAT = (
    "StartTime;LastResetTime;CurrentTime;ElapsedTime(P);ElapsedTime(C);TargetRate;"
    "TotalCallCreated;SuccessfulCall(P);SuccessfulCall(C);FailedCall(P);FailedCall(C);"
    "FailedMaxUDPRetrans(P);FailedMaxUDPRetrans(C);FailedUnexpectedMessage(P);"
    "FailedUnexpectedMessage(C);Retransmissions(P);Retransmissions(C);"
    "ResponseTime1(P);ResponseTime1(C);\n"
    "2026-12-02\t13:06:56.370108\t1796216816.370108;x;x;00:00:01;00:00:01;100;100;100;100;"
    "0;0;0;0;0;0;0;0;00:00:00:000000;00:00:00:000000;\n"
    "2026-12-02\t13:06:58.376291\t1796216818.376291;x;x;00:00:01;00:00:08:250000;100;800;"
    "10;790;0;10;0;3;0;7;5;42;00:00:00:000000;00:00:00:004000;\n"
)


def test_stat_csv_last_row_and_counters():
    stat = parse_stat_csv(STAT)
    assert stat["TotalCallCreated"] == "800"
    count = counters(stat)
    assert count["created"] == 800
    assert count["successful"] == 790
    assert count["failed"] == 10
    assert count["failures"] == {"MaxUDPRetrans": 3, "UnexpectedMessage": 7}
    assert count["retransmissions"] == 42
    assert count["elapsed_s"] == pytest.approx(8.25)


@pytest.mark.parametrize("text", ["", "A;B;C\n", "A;B;C\n1;2\n"])
def test_stat_csv_refuses_what_sipp_did_not_finish(text):
    with pytest.raises(ValueError):
        parse_stat_csv(text)


def test_durations():
    assert duration_s("00:01:02") == 62
    assert duration_s("01:00:00:500000") == pytest.approx(3600.5)
    with pytest.raises(ValueError):
        duration_s("")


def test_rtt_csv_by_response_time_number():
    text = "Date_ms;response_time_ms;rtd_no\n16.001;4;1\n28.001;0;1\n30.5;12;2\n\n"
    assert parse_rtt_csv(text) == {"1": [4.0, 0.0], "2": [12.0]}


def clean_counts(**changes):
    base = {"created": 800, "successful": 800, "failed": 0, "failures": {},
            "retransmissions": 0, "elapsed_s": 8.1}  # fmt: skip
    return {**base, **changes}


def test_verdict_clean():
    assert verdict(100, 800, clean_counts(), 0) == []


def test_verdict_names_every_reason():
    reasons = verdict(
        100, 800,
        clean_counts(successful=790, failed=10, failures={"UnexpectedMessage": 10},
                     retransmissions=3, elapsed_s=40.0),
        255,
    )  # fmt: skip
    text = "; ".join(reasons)
    assert "10 failed calls (UnexpectedMessage 10)" in text
    assert "3 retransmissions" in text
    assert "790 of 800 calls succeeded" in text
    assert "took 40.0 s" in text
    assert "sipp exited 255" in text


def test_verdict_retransmissions_alone_make_a_step_unclean():
    assert verdict(100, 800, clean_counts(retransmissions=1), 0) == ["1 retransmissions"]


def test_table_ratio_means_ours_at_least_as_good_when_at_least_one():
    compare = {
        "ours": {"publish_search": {"highest_clean_rate": 300},
                 "steady": {"latency_ms": {"p50": 20.0, "p99": 40.0}}},
        "kamailio": {"publish_search": {"highest_clean_rate": 1500},
                     "steady": {"latency_ms": {"p50": 1.0, "p99": 4.0}}},
    }  # fmt: skip
    rows = {label: (a, b, r) for label, a, b, r in table_rows(compare)}
    assert rows["highest clean PUBLISH rate"] == ("300/s", "1,500/s", "0.20")
    assert rows["PUBLISH->200 p99 at steady rate"] == ("40.0 ms", "4.0 ms", "0.10")
    assert rows["fan-out: PUBLISH->last NOTIFY"] == ("-", "-", "-")


def test_sipp_times_are_compared_at_whole_milliseconds():
    compare = {
        "ours": {"subscribe_steady": {"response_ms": {"1": {"p50": 4.0, "p99": 0.0}}}},
        "kamailio": {"subscribe_steady": {"response_ms": {"1": {"p50": 0.0, "p99": 0.0}}}},
    }
    rows = {label: (a, b, r) for label, a, b, r in table_rows(compare)}
    assert rows["SUBSCRIBE->first NOTIFY p50 at steady rate"] == ("4 ms", "<1 ms", "0.25")
    assert rows["SUBSCRIBE->first NOTIFY p99 at steady rate"] == ("<1 ms", "<1 ms", "1.00")


def test_cpu_of_a_child_that_ended_meanwhile_is_left_out_not_negative() -> None:
    import os

    hz = os.sysconf("SC_CLK_TCK")
    before = {"postgres": {10: 5 * hz, 11: 2 * hz}}
    after = {"postgres": {10: 6 * hz, 12: hz}}  # 11 ended, 12 was born
    assert cpu_used(before, after) == {"postgres": 2.0}
