"""The pure part of bench/overload_bench.py: the summary of a run (what was refused
and applied, when latency was normal again). No server."""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from overload_bench import Call, summarize


def args() -> argparse.Namespace:
    return argparse.Namespace(
        rate=10.0,
        calm_factor=0.5,
        burst_factor=2.0,
        before_seconds=2.0,
        burst_seconds=2.0,
        after_seconds=4.0,
    )


def call(n: int, phase: str, sent: float, status: int | None, latency: float = 0.01) -> Call:
    return Call(f"u{n}", b"", phase, sent, status=status, latency=latency if status else None)


def test_a_refused_request_found_in_the_database_is_counted() -> None:
    calls = [
        call(0, "before", 0.0, 200),
        call(1, "burst", 2.1, 503),
        call(2, "burst", 2.2, 503),
        call(3, "after", 4.5, 200),
    ]
    result = summarize(calls, 0.0, 4.0, {"u0", "u2", "u3"}, args())
    assert result["refused_but_applied"] == 1
    assert result["phases"]["burst"]["refused_503"] == 2
    assert result["answered_200_not_applied"] == 0


def test_recovery_is_the_first_second_after_which_every_second_is_normal() -> None:
    calls = [call(0, "before", 0.5, 200, 0.010)]
    # After the burst (ends at 4 s): second 4 slow, second 5 a refusal, 6 and 7 normal.
    calls += [call(1, "after", 4.2, 200, 0.900), call(2, "after", 5.1, 503)]
    calls += [call(3, "after", 6.3, 200, 0.012), call(4, "after", 7.4, 200, 0.011)]
    result = summarize(calls, 0.0, 4.0, {"u0", "u1", "u3", "u4"}, args())
    assert result["recovered_after_s"] == 2
    assert result["normal_p99_ms"] == 30.0


def test_no_recovery_within_the_run_is_reported_as_none() -> None:
    calls = [call(0, "before", 0.5, 200), call(1, "after", 7.5, None)]
    result = summarize(calls, 0.0, 4.0, set(), args())
    assert result["recovered_after_s"] is None
    assert result["phases"]["after"]["timeouts"] == 1
