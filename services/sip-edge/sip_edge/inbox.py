"""How far the edge's inbox may be committed, without I/O.

The inbox carries the store's replies and the notifier's NOTIFYs. A NOTIFY read
from it is not done when it is read: the pacer may hold it behind the dialog's
NOTIFY in flight, and a NOTIFY in flight may still need retransmitting. If the
edge committed past such a record and then died (SIGKILL, a crash), the newest
state of that dialog would never reach the watcher. So the committed position
stops at the oldest NOTIFY not yet finished: a restarted edge reads it (and what
follows) again, and sends it again -- a duplicate with the same state at worst.
"""

from __future__ import annotations


class InboxProgress:
    def __init__(self) -> None:
        self._open: dict[str, int] = {}  # notify_id -> its inbox offset
        self._next: int | None = None  # the offset after the last record read

    def consumed(self, offset: int) -> None:
        """A record was read and handled (its NOTIFY, if any, is `opened` already)."""
        if self._next is None or offset + 1 > self._next:
            self._next = offset + 1

    def opened(self, notify_id: str, offset: int) -> None:
        """A NOTIFY read at `offset` is queued or in flight."""
        self._open[notify_id] = offset

    def closed(self, notify_id: str) -> None:
        """A NOTIFY got its final response, timed out, or was superseded or dropped."""
        self._open.pop(notify_id, None)

    def unfinished(self) -> int:
        return len(self._open)

    def committable(self) -> int | None:
        """The offset to commit: every record before it is done with."""
        if self._open:
            return min(self._open.values())
        return self._next
