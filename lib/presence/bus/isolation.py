"""Record isolation in the consumer loops (pure): how often a record is tried, and
the dead-letter record that keeps one that failed for good. Which failures of a
record's handler are a dependency's outage and which are the record's own is
`presence.runtime.failures.classify` (it knows the drivers' exceptions).

An outage (PostgreSQL, Redis or Kafka unreachable, overloaded, failing over) goes
away by itself: its batch is handled again with backoff, forever, and nothing is
lost. Any other exception belongs to the record: it is tried `RECORD_ATTEMPTS`
times, a short pause apart, then dead-lettered so that the records after it (of
its key, of its partition, of its batch) go on. `presence.runtime.kafka.consume_in_batches`
does the I/O.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from presence.bus import events

# How often a record is handled before it is dead-lettered (the default of
# PRESENCE_RECORD_ATTEMPTS), and the pauses before the second and later attempts
# (the last repeats).
RECORD_ATTEMPTS = 3
RECORD_RETRY_PAUSES = (0.1, 0.3)
# A dead-letter record keeps at most this much of the record's value (the rest stays
# readable at its topic/partition/offset while the topic retains it): with its base64
# form and the rest of the record it stays under Kafka's 1 MB message limit.
MAX_DEAD_VALUE_BYTES = 512 * 1024
MAX_ERROR_CHARS = 2000


@dataclass
class Attempts:
    """The retry bookkeeping of one record: after each failure, whether to try it
    again (and after which pause), or to give it up."""

    limit: int = RECORD_ATTEMPTS
    pauses: tuple[float, ...] = RECORD_RETRY_PAUSES
    made: int = 0
    errors: list[str] = field(default_factory=list)

    def failed(self, error: BaseException) -> float | None:
        """Count a failed attempt; the pause before the next one, or None: give up."""
        self.made += 1
        self.errors.append(describe(error))
        if self.made >= self.limit:
            return None
        return self.pauses[min(self.made - 1, len(self.pauses) - 1)]


def describe(error: BaseException) -> str:
    """`Type: message`, bounded (an error may quote a whole document)."""
    text = f"{type(error).__name__}: {error}"
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + f"... ({len(text)} characters)"
    return text


def dead_letter(
    *,
    service: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    error: str,
    attempts: int,
    failed_at: float,
    correlation_id: str = "",
) -> events.DeadLetter:
    """The dead-letter record of a record that failed for good: enough to find it,
    understand it and put it back by hand."""
    value = value or b""
    kept = value[:MAX_DEAD_VALUE_BYTES]
    text, encoding = _as_text(kept, cut=len(kept) < len(value)), "utf-8"
    if text is None:
        text, encoding = base64.b64encode(kept).decode(), "base64"
    return events.DeadLetter(
        service=service,
        topic=topic,
        partition=partition,
        offset=offset,
        key=key.decode(errors="replace") if key is not None else None,
        value=text,
        value_encoding=encoding,
        value_bytes=len(value),
        value_truncated=len(kept) < len(value),
        error=error[:MAX_ERROR_CHARS],
        attempts=attempts,
        failed_at=failed_at,
        correlation_id=correlation_id,
    )


def _as_text(data: bytes, *, cut: bool) -> str | None:
    """UTF-8 text, or None; a value cut short may end inside a character."""
    for end in range(len(data), max(len(data) - (4 if cut else 1), -1), -1):
        try:
            return data[:end].decode()
        except UnicodeDecodeError:
            continue
    return None
