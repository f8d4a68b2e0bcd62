"""Counting slots, in total and per key (pure): how many TCP connections are open,
to or from each address, and how many NOTIFY connects are under way.

A slot is taken with `acquire` (refused, not queued, when a limit is reached) and
given back with `release`. The caller decides what a refusal means: a connection
closed at accept, a NOTIFY that fails at once.
"""

from __future__ import annotations

from collections.abc import Hashable


class SlotLimiter:
    def __init__(self, total: int, per_key: int) -> None:
        if total < 1 or per_key < 1:
            raise ValueError("limits must be at least 1")
        self.total = total
        self.per_key = per_key
        self._used: dict[Hashable, int] = {}
        self._count = 0

    def __len__(self) -> int:
        """Slots in use, over all keys."""
        return self._count

    def used(self, key: Hashable) -> int:
        return self._used.get(key, 0)

    def refusal(self, key: Hashable) -> str | None:
        """Why `acquire(key)` would be refused ("total" or "per_key"), or None."""
        if self._count >= self.total:
            return "total"
        if self._used.get(key, 0) >= self.per_key:
            return "per_key"
        return None

    def acquire(self, key: Hashable) -> bool:
        """Take a slot for `key`; False (and nothing taken) when a limit is reached."""
        if self.refusal(key) is not None:
            return False
        self._used[key] = self._used.get(key, 0) + 1
        self._count += 1
        return True

    def release(self, key: Hashable) -> None:
        """Give back a slot taken for `key` (a release without a slot is an error)."""
        used = self._used.get(key, 0)
        if used <= 0:
            raise KeyError(key)
        if used == 1:
            del self._used[key]
        else:
            self._used[key] = used - 1
        self._count -= 1
