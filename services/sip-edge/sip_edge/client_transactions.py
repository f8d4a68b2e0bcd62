"""Non-INVITE client transactions for the NOTIFYs the edge sends (RFC 3261 §17.1.2),
without I/O: time is an argument, so Timers E and F are tested without sleeping.

Over UDP the request is retransmitted at T1, 2*T1, 4*T1 ... capped at T2 (Timer
E; at T2 once a provisional response arrived) until a final response or Timer F
(64*T1) ends it. Over TCP nothing is retransmitted; Timer F still bounds the wait.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Generic, TypeVar

from sip_edge.policy import EdgeTimers

# What the table's user keeps with each transaction (the edge: the NOTIFY, its hop).
Context = TypeVar("Context")


@dataclass
class ClientTransaction(Generic[Context]):
    branch: str
    notify_id: str
    data: bytes
    reliable: bool
    started_at: float
    timeout_at: float  # Timer F
    interval: float  # the current Timer E interval
    retransmit_at: float | None  # None over reliable transports
    context: Context
    retransmissions: int = 0


class ClientTransactions(Generic[Context]):
    """T1 and T2 come from `timers` (PRESENCE_SIP_T1_MS; T2 is 4 s)."""

    def __init__(self, timers: EdgeTimers) -> None:
        self.timers = timers
        self._by_branch: dict[str, ClientTransaction[Context]] = {}
        # (when, sequence, branch): timers in a heap; stale entries are skipped.
        self._timers: list[tuple[float, int, str]] = []
        self._sequence = itertools.count()

    def __len__(self) -> int:
        return len(self._by_branch)

    def get(self, branch: str) -> ClientTransaction[Context] | None:
        return self._by_branch.get(branch)

    def start(
        self,
        branch: str,
        notify_id: str,
        data: bytes,
        *,
        reliable: bool,
        now: float,
        context: Context,
    ) -> ClientTransaction[Context]:
        t1 = self.timers.t1
        transaction = ClientTransaction(
            branch=branch,
            notify_id=notify_id,
            data=data,
            reliable=reliable,
            started_at=now,
            timeout_at=now + self.timers.timer_f,
            interval=t1,
            retransmit_at=None if reliable else now + t1,
            context=context,
        )
        self._by_branch[branch] = transaction
        self._schedule(transaction.timeout_at, branch)
        if transaction.retransmit_at is not None:
            self._schedule(transaction.retransmit_at, branch)
        return transaction

    def response(self, branch: str, status: int, now: float) -> ClientTransaction[Context] | None:
        """The transaction a response belongs to, ended when the response is final."""
        transaction = self._by_branch.get(branch)
        if transaction is None:
            return None
        if status >= 200:
            del self._by_branch[branch]
        elif transaction.retransmit_at is not None:
            # §17.1.2.2 Proceeding: retransmissions continue, every T2.
            transaction.interval = self.timers.t2
            transaction.retransmit_at = now + self.timers.t2
            self._schedule(transaction.retransmit_at, branch)
        return transaction

    def next_timer(self) -> float | None:
        while self._timers and self._timers[0][2] not in self._by_branch:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def due(
        self, now: float
    ) -> tuple[list[ClientTransaction[Context]], list[ClientTransaction[Context]]]:
        """(to retransmit now, timed out and removed)."""
        retransmit: list[ClientTransaction[Context]] = []
        timed_out: list[ClientTransaction[Context]] = []
        while self._timers and self._timers[0][0] <= now:
            when, _, branch = heapq.heappop(self._timers)
            transaction = self._by_branch.get(branch)
            if transaction is None:
                continue
            if transaction.timeout_at <= now:
                del self._by_branch[branch]
                timed_out.append(transaction)
            elif transaction.retransmit_at is not None and when == transaction.retransmit_at:
                transaction.retransmissions += 1
                transaction.interval = min(transaction.interval * 2, self.timers.t2)
                transaction.retransmit_at = now + transaction.interval
                self._schedule(transaction.retransmit_at, branch)
                retransmit.append(transaction)
        return retransmit, timed_out

    def _schedule(self, when: float, branch: str) -> None:
        heapq.heappush(self._timers, (when, next(self._sequence), branch))
