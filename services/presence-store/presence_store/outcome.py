"""What applying one request produces: the SIP reply, and the events for the notifier."""

from __future__ import annotations

from dataclasses import dataclass, field

from presence import events


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    reply: Reply
    # Emitted to presence.changes after the database commit (and again if the
    # request is redelivered, so that a crash in between cannot lose them).
    notices: list[events.Event] = field(default_factory=list)
    # The To-tag of a dialog the request created (SUBSCRIBE).
    to_tag: str | None = None
