"""Server transactions of non-INVITE requests (RFC 3261 §17.2.2), without I/O.

The table answers one question for every incoming request: is it new (process
it), or a retransmission (send the last response again, or nothing yet)? Time
is an argument, so Timer J is tested without sleeping.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from typing import Generic, TypeVar

from sip_edge.policy import EdgeTimers

MAGIC_COOKIE = "z9hG4bK"


def transaction_key(
    branch: str | None, sent_by: str, method: str, *, call_id: str, cseq: str, from_tag: str | None
) -> tuple[str, ...]:
    """§17.2.3: branch + sent-by + method; pre-RFC 3261 peers (no magic cookie) fall
    back to the dialog-ish identifiers of RFC 2543."""
    # ACK is matched to the INVITE's transaction; CANCEL has its own. Neither is
    # served here, so the method is used as is.
    if branch and branch.startswith(MAGIC_COOKIE):
        return ("3261", branch, sent_by.lower(), method)
    return ("2543", call_id, cseq, from_tag or "", sent_by.lower(), method)


# What the table's user keeps with each transaction (the edge: its request and source).
Context = TypeVar("Context")


@dataclass
class ServerTransaction(Generic[Context]):
    key: tuple[str, ...]
    request_id: str
    started_at: float
    context: Context
    last_response: bytes | None = None
    final: bool = False
    # None while the transaction waits for its final response.
    ends_at: float | None = None


class TransactionTable(Generic[Context]):
    """The edge's server transactions, indexed so that no periodic pass scans them all.

    At a steady rate r, Timer J keeps about 32 s * r completed transactions (8,000 at
    250/s); the sweep a few times a second looks only at what is due: the completed
    ones whose Timer J ran out (a heap by end time) and the oldest of those still
    waiting for their final response (kept in start order); `next_deadline` says
    when the next of these is due. `now` must not go back between calls (a
    monotonic clock). Timer J is 64*T1 of `timers` over UDP.
    """

    def __init__(self, timers: EdgeTimers) -> None:
        self.timers = timers
        self._by_key: dict[tuple[str, ...], ServerTransaction[Context]] = {}
        self._by_request_id: dict[str, ServerTransaction[Context]] = {}
        # Without a final response yet, in start order (dicts keep insertion order).
        self._pending: dict[tuple[str, ...], ServerTransaction[Context]] = {}
        # Over UDP without any response yet (not even a 100), in start order.
        self._silent: dict[tuple[str, ...], ServerTransaction[Context]] = {}
        # (ends_at, sequence, transaction): Timer J; outdated entries are skipped.
        self._ending: list[tuple[float, int, ServerTransaction[Context]]] = []
        self._sequence = itertools.count()

    def __len__(self) -> int:
        return len(self._by_key)

    def find(self, key: tuple[str, ...]) -> ServerTransaction[Context] | None:
        return self._by_key.get(key)

    def by_request_id(self, request_id: str) -> ServerTransaction[Context] | None:
        return self._by_request_id.get(request_id)

    def start(
        self,
        key: tuple[str, ...],
        request_id: str,
        now: float,
        *,
        context: Context,
        reliable: bool = False,
    ) -> ServerTransaction[Context]:
        transaction = ServerTransaction(key, request_id, now, context)
        self._by_key[key] = transaction
        self._by_request_id[request_id] = transaction
        # pop first: a key started again goes to the end of the start order.
        self._pending.pop(key, None)
        self._pending[key] = transaction
        self._silent.pop(key, None)
        if not reliable:  # only a UDP client's retransmissions are quenched by a 100
            self._silent[key] = transaction
        return transaction

    def respond(
        self,
        transaction: ServerTransaction[Context],
        data: bytes,
        *,
        final: bool,
        reliable: bool,
        now: float,
    ) -> None:
        """Record a response that was sent; a final one starts Timer J."""
        transaction.last_response = data
        self._forget(self._silent, transaction)
        if final:
            transaction.final = True
            self._forget(self._pending, transaction)
            if reliable:  # no retransmissions to absorb: Timer J is 0
                transaction.ends_at = now
                self._end(transaction)
                return
            transaction.ends_at = now + self.timers.timer_j_udp
            heapq.heappush(self._ending, (transaction.ends_at, next(self._sequence), transaction))

    def unanswered(self) -> int:
        """Transactions still waiting for their final response."""
        return len(self._pending)

    def unanswered_since(self, cutoff: float) -> list[ServerTransaction[Context]]:
        """UDP transactions started before `cutoff` that have sent no response at all."""
        found = []
        for transaction in self._silent.values():
            if transaction.started_at > cutoff:
                break
            found.append(transaction)
        return found

    def next_deadline(self, *, give_up_after: float, silent_after: float) -> float | None:
        """When `expire` (with `give_up_after`) or `unanswered_since(now - silent_after)`
        next has something to do: a Timer J end, the oldest unanswered transaction's
        give-up time, the oldest silent one's. None: nothing is due, ever."""
        while self._ending and self._ending[0][2].ends_at != self._ending[0][0]:
            heapq.heappop(self._ending)  # a later final response restarted Timer J
        deadlines = []
        if self._ending:
            deadlines.append(self._ending[0][0])
        for index, after in ((self._pending, give_up_after), (self._silent, silent_after)):
            oldest = next(iter(index.values()), None)
            if oldest is not None:
                deadlines.append(oldest.started_at + after)
        return min(deadlines, default=None)

    def expire(self, now: float, *, give_up_after: float) -> list[ServerTransaction[Context]]:
        """Drop completed transactions past Timer J; return those still without a final
        response after give_up_after seconds, so the caller can answer them itself."""
        while self._ending and self._ending[0][0] <= now:
            ends_at, _, transaction = heapq.heappop(self._ending)
            if transaction.ends_at == ends_at:  # else a later final response restarted it
                self._end(transaction)
        overdue = []
        for transaction in self._pending.values():
            if now - transaction.started_at < give_up_after:
                break
            overdue.append(transaction)
        return overdue

    def _end(self, transaction: ServerTransaction[Context]) -> None:
        if self._by_key.get(transaction.key) is transaction:
            del self._by_key[transaction.key]
        if self._by_request_id.get(transaction.request_id) is transaction:
            del self._by_request_id[transaction.request_id]

    @staticmethod
    def _forget(
        index: dict[tuple[str, ...], ServerTransaction[Context]],
        transaction: ServerTransaction[Context],
    ) -> None:
        if index.get(transaction.key) is transaction:
            del index[transaction.key]
