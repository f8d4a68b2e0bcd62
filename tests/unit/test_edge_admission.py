"""sip_edge.admission: the backlog limit follows the store's reply rate (Little's law)."""

from __future__ import annotations

from sip_edge.admission import Admission


def steady_replies(admission: Admission, rate: float, start: float, seconds: float) -> float:
    """Replies at `rate` per second from `start` for `seconds`; returns the end time."""
    count = int(rate * seconds)
    for n in range(count):
        admission.replied(start + n / rate)
    return start + seconds


def test_a_quiet_edge_admits_up_to_the_minimum_backlog() -> None:
    admission = Admission(queue_delay=0.25, min_backlog=100)
    assert admission.admits(99, now=10.0)
    assert not admission.admits(100, now=10.0)


def test_the_limit_is_the_reply_rate_times_the_queue_delay() -> None:
    admission = Admission(queue_delay=0.5, min_backlog=10)
    now = steady_replies(admission, rate=400, start=100.0, seconds=2.0)
    # About one second of replies is counted: 400/s (the current bucket is partial).
    assert 360 <= admission.reply_rate(now) <= 400
    limit = admission.backlog_limit(now)
    assert 180 <= limit <= 200
    assert admission.admits(limit - 1, now)
    assert not admission.admits(limit, now)


def test_a_store_that_stops_answering_shrinks_the_limit_to_the_minimum() -> None:
    admission = Admission(queue_delay=0.5, min_backlog=10)
    now = steady_replies(admission, rate=400, start=0.0, seconds=2.0)
    assert admission.backlog_limit(now) > 100
    # No reply for more than the window: nothing is known to drain the backlog.
    assert admission.backlog_limit(now + 1.1) == 10
    assert not admission.admits(10, now + 1.1)


def test_replies_out_of_the_window_are_forgotten_gradually() -> None:
    admission = Admission(queue_delay=1.0, min_backlog=1)
    steady_replies(admission, rate=100, start=0.0, seconds=1.0)  # replies at 0.00..0.99
    assert 95 <= admission.reply_rate(0.99) <= 105
    # Half a second later the first half of them is out of the window.
    assert 40 <= admission.reply_rate(1.5) <= 60


def test_one_slow_request_costs_one_place_in_the_backlog() -> None:
    """A request the store holds for long (a record retried before being given up)
    does not stop admission while the others are answered at the usual rate."""
    admission = Admission(queue_delay=0.25, min_backlog=20)
    now = steady_replies(admission, rate=200, start=0.0, seconds=5.0)
    # The stuck one plus a normal backlog of a few requests.
    assert admission.admits(1 + 5, now)
