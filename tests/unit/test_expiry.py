"""Stored expiry times and the time left told to clients (presence.subscriptions.expiry)."""

from __future__ import annotations

from presence.subscriptions.expiry import expires_at, seconds_left


def test_a_grant_is_never_cut_short_by_the_fraction_of_a_second() -> None:
    # Granted 3 s during second 100 (at 100.77, say): the real end is 103.77; the
    # store checks `expires > int(now)`, so the grant must still hold during second 103.
    stored = expires_at(100, 3)
    assert stored > 103
    assert not stored > 104  # and it is over during second 104


def test_zero_ends_now() -> None:
    assert expires_at(100, 0) == 100
    assert not expires_at(100, 0) > 100


def test_time_left_is_never_more_than_granted() -> None:
    stored = expires_at(100, 60)
    assert seconds_left(stored, 100) == 60
    assert seconds_left(stored, 130) == 30
    assert seconds_left(stored, 500) == 0
