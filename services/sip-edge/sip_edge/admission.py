"""Admission control: refuse at once what the store cannot answer in time.

The edge knows its backlog: the requests it has put on the bus and not yet had a
reply for. By Little's law a backlog of `rate x delay` requests, drained at the
rate the store's replies arrive, waits `delay`. So the edge admits a new request
while its backlog is below what the store answered during the last `queue_delay`
seconds' worth of time (measured over a sliding window of about a second), and
never below `min_backlog`, so that a quiet edge takes a burst without a learning
phase. Beyond that, a request is answered 503 with Retry-After before any work is
done for it: nothing is produced, so it cannot have been applied.

The measure follows the store's real speed on this machine (no rate to
configure), and a single slow record costs one place in the backlog, not the
admission of everyone else. Time is an argument: tested without sleeping.
"""

from __future__ import annotations

from collections import deque

# The store's reply rate is counted in buckets of BUCKET_SECONDS over the last
# WINDOW_BUCKETS of them (one second).
BUCKET_SECONDS = 0.1
WINDOW_BUCKETS = 10


class Admission:
    def __init__(self, *, queue_delay: float, min_backlog: int) -> None:
        self.queue_delay = queue_delay
        self.min_backlog = min_backlog
        # (bucket number, replies in it), oldest first; buckets that left the
        # window are dropped as time goes on.
        self._buckets: deque[tuple[int, int]] = deque()
        self._replies_in_window = 0

    def replied(self, now: float) -> None:
        """The store answered one forwarded request."""
        bucket = int(now / BUCKET_SECONDS)
        if self._buckets and self._buckets[-1][0] == bucket:
            self._buckets[-1] = (bucket, self._buckets[-1][1] + 1)
        else:
            self._buckets.append((bucket, 1))
        self._replies_in_window += 1
        self._forget(now)

    def reply_rate(self, now: float) -> float:
        """Replies per second over the last window (its newest bucket counts for the
        part of it that has passed)."""
        self._forget(now)
        into_current = now - int(now / BUCKET_SECONDS) * BUCKET_SECONDS
        span = (WINDOW_BUCKETS - 1) * BUCKET_SECONDS + into_current
        return self._replies_in_window / span

    def backlog_limit(self, now: float) -> int:
        return max(self.min_backlog, int(self.reply_rate(now) * self.queue_delay))

    def admits(self, backlog: int, now: float) -> bool:
        """May a new request join `backlog` requests already waiting for the store?"""
        return backlog < self.backlog_limit(now)

    def _forget(self, now: float) -> None:
        oldest = int(now / BUCKET_SECONDS) - WINDOW_BUCKETS + 1
        while self._buckets and self._buckets[0][0] < oldest:
            _, count = self._buckets.popleft()
            self._replies_in_window -= count
