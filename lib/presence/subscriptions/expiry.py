"""Absolute expiry times as the tables keep them (Unix seconds), pure.

A request is handled at some fraction of a second, and expiry is checked as
`expires > int(time.time())`: storing `int(now) + granted` would end a grant up to
a second early, and a phone that refreshes just in time (linphone refreshes at 90%
of a 10 s grant) would find its publication gone (412) or its dialog gone (481).
So a grant is stored rounded up to the next whole second, and the time left that
is told to clients is counted from the same rounding.
"""

from __future__ import annotations


def expires_at(now: int, seconds: int) -> int:
    """The stored expiry of a grant of `seconds` made during second `now`
    (int(time.time())): the end of that second plus the grant; 0 ends it now."""
    return now + seconds + 1 if seconds > 0 else now


def seconds_left(expires: int, now: int) -> int:
    """What a client is told remains of a grant stored as `expires`, during second
    `now`: never more than was granted."""
    return max(expires - now - 1, 0)
