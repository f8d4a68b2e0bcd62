"""Per-dialog order and pace of NOTIFYs (RFC 6665 §4.2.2, RFC 3856 §6.10), pure.

All NOTIFYs of one subscription leave through the edge that holds its dialog, so
the edge is where their order is kept:
- at most one NOTIFY of a dialog is in flight; the next waits for its outcome;
- a NOTIFY whose CSeq is not above the last one sent or queued carries an older
  state (two notifier replicas around a rebalance) and is dropped: the notifier
  allocates CSeqs in the order it reads the state, so a higher CSeq is newer;
- while one waits, a newer NOTIFY replaces it (only the latest state matters),
  except that a final NOTIFY (Subscription-State: terminated) is never replaced;
- with a minimum interval (RFC 3856 §6.10 suggests 5 s; default 0) a NOTIFY that
  comes too soon after the last one waits until the interval has passed.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from presence.bus.events import NotifyRequest


def notify_cseq(notify: NotifyRequest) -> int:
    for name, value in notify.headers:
        if name.lower() == "cseq":
            return int(value.split()[0])
    raise ValueError("NOTIFY without CSeq")


def is_final(notify: NotifyRequest) -> bool:
    return any(
        name.lower() == "subscription-state" and value.lower().startswith("terminated")
        for name, value in notify.headers
    )


@dataclass
class _Dialog:
    last_cseq: int = 0  # highest CSeq sent or queued
    in_flight: bool = False
    queued: NotifyRequest | None = None
    last_sent_at: float = float("-inf")
    idle_since: float = 0.0


@dataclass
class NotifyPacer:
    min_interval: float = 0.0
    # How long an idle dialog's last CSeq is remembered (to drop stragglers).
    memory: float = 64.0
    _dialogs: dict[str, _Dialog] = field(default_factory=dict)
    # (when, subscription): a queued NOTIFY that waits for its interval only, not for
    # an answer; what `due` and `next_due` look at. Outdated entries are skipped.
    _intervals: list[tuple[float, str]] = field(default_factory=list)
    # Dialogs with nothing in flight or queued, in the order they became idle (`now`
    # does not go back): what `forget_idle` and `next_forget` look at.
    _idle: dict[str, None] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._dialogs)

    def offer(self, notify: NotifyRequest, now: float) -> NotifyRequest | None:
        """A NOTIFY from the notifier: returns it, counted as in flight, when it may be
        sent now; else keeps it queued or drops it.

        Every NOTIFY this pacer returns is in flight from that moment, before the
        caller gets to send it, so that no other one of the dialog can overtake it."""
        dialog = self._dialogs.setdefault(notify.subscription, _Dialog())
        cseq = notify_cseq(notify)
        if cseq <= dialog.last_cseq:
            return None  # an older state than one already sent or queued
        dialog.last_cseq = cseq
        if dialog.queued is not None and is_final(dialog.queued):
            return None  # nothing follows a final NOTIFY
        self._idle.pop(notify.subscription, None)
        if dialog.in_flight or now < dialog.last_sent_at + self.min_interval:
            dialog.queued = notify
            if not dialog.in_flight:
                self._wait_interval(notify.subscription, dialog)
            return None
        return self._in_flight(dialog, notify, now)

    def queued(self, subscription: str) -> NotifyRequest | None:
        """The NOTIFY of a dialog that waits to be sent, if any."""
        dialog = self._dialogs.get(subscription)
        return dialog.queued if dialog is not None else None

    def finished(self, subscription: str, now: float) -> NotifyRequest | None:
        """The in-flight NOTIFY of a dialog ended: the queued one, if it may go now."""
        dialog = self._dialogs.get(subscription)
        if dialog is None:
            return None
        dialog.in_flight = False
        dialog.idle_since = now
        following = self._release(dialog, now)
        if dialog.queued is None and following is None:
            self._idle.pop(subscription, None)  # to the end of the idle order
            self._idle[subscription] = None
        return following

    def due(self, now: float) -> list[NotifyRequest]:
        """Queued NOTIFYs whose interval has passed (the caller sends them)."""
        ready = []
        while self._intervals and self._intervals[0][0] <= now:
            _, subscription = heapq.heappop(self._intervals)
            dialog = self._dialogs.get(subscription)
            notify = self._release(dialog, now) if dialog is not None else None
            if notify is not None:
                ready.append(notify)
        return ready

    def next_due(self) -> float | None:
        """When `due` next has a NOTIFY to release, if one waits for its interval."""
        while self._intervals and not self._waits_interval(*self._intervals[0]):
            heapq.heappop(self._intervals)
        return self._intervals[0][0] if self._intervals else None

    def forget_idle(self, now: float) -> None:
        """Drop dialogs idle for `memory` seconds or longer."""
        while self._idle:
            subscription = next(iter(self._idle))
            if now - self._dialogs[subscription].idle_since < self.memory:
                break
            del self._idle[subscription]
            del self._dialogs[subscription]

    def next_forget(self) -> float | None:
        """When `forget_idle` next has a dialog to drop."""
        oldest = next(iter(self._idle), None)
        return self._dialogs[oldest].idle_since + self.memory if oldest is not None else None

    def _release(self, dialog: _Dialog, now: float) -> NotifyRequest | None:
        if dialog.in_flight or dialog.queued is None:
            return None
        if now < dialog.last_sent_at + self.min_interval:
            self._wait_interval(dialog.queued.subscription, dialog)
            return None
        notify, dialog.queued = dialog.queued, None
        return self._in_flight(dialog, notify, now)

    def _wait_interval(self, subscription: str, dialog: _Dialog) -> None:
        heapq.heappush(self._intervals, (dialog.last_sent_at + self.min_interval, subscription))

    def _waits_interval(self, when: float, subscription: str) -> bool:
        dialog = self._dialogs.get(subscription)
        return (
            dialog is not None
            and dialog.queued is not None
            and not dialog.in_flight
            and when == dialog.last_sent_at + self.min_interval
        )

    @staticmethod
    def _in_flight(dialog: _Dialog, notify: NotifyRequest, now: float) -> NotifyRequest:
        dialog.in_flight = True
        dialog.last_sent_at = now
        return notify
