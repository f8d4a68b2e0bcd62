"""Server transactions of non-INVITE requests (RFC 3261 §17.2.2), without I/O.

The table answers one question for every incoming request: is it new (process
it), or a retransmission (send the last response again, or nothing yet)? Time
is an argument, so Timer J is tested without sleeping.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

T1 = 0.5
# Timer J: how long a completed transaction absorbs retransmissions (64*T1 on
# UDP; 0 on reliable transports, where there are no retransmissions).
TIMER_J_UDP = 64 * T1
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


@dataclass
class ServerTransaction:
    key: tuple[str, ...]
    request_id: str
    started_at: float
    last_response: bytes | None = None
    final: bool = False
    # None while the transaction waits for its final response.
    ends_at: float | None = None
    context: dict[str, object] = field(default_factory=dict)


class TransactionTable:
    """The edge's server transactions, indexed so that no periodic pass scans them all.

    At a steady rate r, Timer J keeps about 32 s * r completed transactions (8,000 at
    250/s); the sweep a few times a second looks only at what is due: the completed
    ones whose Timer J ran out (a heap by end time) and the oldest of those still
    waiting for their final response (kept in start order). `now` must not go back
    between calls (a monotonic clock).
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, ...], ServerTransaction] = {}
        self._by_request_id: dict[str, ServerTransaction] = {}
        # Without a final response yet, in start order (dicts keep insertion order).
        self._pending: dict[tuple[str, ...], ServerTransaction] = {}
        # Without any response yet (not even a 100), in start order.
        self._silent: dict[tuple[str, ...], ServerTransaction] = {}
        # (ends_at, sequence, transaction): Timer J; outdated entries are skipped.
        self._ending: list[tuple[float, int, ServerTransaction]] = []
        self._sequence = itertools.count()

    def __len__(self) -> int:
        return len(self._by_key)

    def find(self, key: tuple[str, ...]) -> ServerTransaction | None:
        return self._by_key.get(key)

    def by_request_id(self, request_id: str) -> ServerTransaction | None:
        return self._by_request_id.get(request_id)

    def start(self, key: tuple[str, ...], request_id: str, now: float) -> ServerTransaction:
        transaction = ServerTransaction(key=key, request_id=request_id, started_at=now)
        self._by_key[key] = transaction
        self._by_request_id[request_id] = transaction
        # pop first: a key started again goes to the end of the start order.
        self._pending.pop(key, None)
        self._pending[key] = transaction
        self._silent.pop(key, None)
        self._silent[key] = transaction
        return transaction

    def respond(
        self,
        transaction: ServerTransaction,
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
            transaction.ends_at = now + (0.0 if reliable else TIMER_J_UDP)
            self._forget(self._pending, transaction)
            heapq.heappush(self._ending, (transaction.ends_at, next(self._sequence), transaction))

    def unanswered(self) -> int:
        """Transactions still waiting for their final response."""
        return len(self._pending)

    def unanswered_since(self, cutoff: float) -> list[ServerTransaction]:
        """Transactions started before `cutoff` that have sent no response at all."""
        found = []
        for transaction in self._silent.values():
            if transaction.started_at > cutoff:
                break
            found.append(transaction)
        return found

    def expire(self, now: float, *, give_up_after: float) -> list[ServerTransaction]:
        """Drop completed transactions past Timer J; return those still without a final
        response after give_up_after seconds, so the caller can answer them itself."""
        while self._ending and self._ending[0][0] <= now:
            ends_at, _, transaction = heapq.heappop(self._ending)
            if transaction.ends_at != ends_at:
                continue  # a later final response restarted Timer J
            if self._by_key.get(transaction.key) is transaction:
                del self._by_key[transaction.key]
            if self._by_request_id.get(transaction.request_id) is transaction:
                del self._by_request_id[transaction.request_id]
        overdue = []
        for transaction in self._pending.values():
            if now - transaction.started_at < give_up_after:
                break
            overdue.append(transaction)
        return overdue

    @staticmethod
    def _forget(
        index: dict[tuple[str, ...], ServerTransaction], transaction: ServerTransaction
    ) -> None:
        if index.get(transaction.key) is transaction:
            del index[transaction.key]
