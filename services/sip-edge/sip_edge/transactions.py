"""Server transactions of non-INVITE requests (RFC 3261 §17.2.2), without I/O.

The table answers one question for every incoming request: is it new (process
it), or a retransmission (send the last response again, or nothing yet)? Time
is an argument, so Timer J is tested without sleeping.
"""

from __future__ import annotations

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
    def __init__(self) -> None:
        self._by_key: dict[tuple[str, ...], ServerTransaction] = {}
        self._by_request_id: dict[str, ServerTransaction] = {}

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
        if final:
            transaction.final = True
            transaction.ends_at = now + (0.0 if reliable else TIMER_J_UDP)

    def unanswered(self) -> int:
        """Transactions still waiting for their final response."""
        return sum(1 for t in self._by_key.values() if not t.final)

    def unanswered_since(self, cutoff: float) -> list[ServerTransaction]:
        """Transactions started before `cutoff` that have sent no response at all."""
        return [
            t for t in self._by_key.values() if t.last_response is None and t.started_at <= cutoff
        ]

    def expire(self, now: float, *, give_up_after: float) -> list[ServerTransaction]:
        """Drop completed transactions past Timer J; return those still without a final
        response after give_up_after seconds, so the caller can answer them itself."""
        overdue = []
        for key, transaction in list(self._by_key.items()):
            if transaction.ends_at is not None and transaction.ends_at <= now:
                del self._by_key[key]
                self._by_request_id.pop(transaction.request_id, None)
            elif not transaction.final and now - transaction.started_at >= give_up_after:
                overdue.append(transaction)
        return overdue
