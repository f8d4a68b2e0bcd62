"""What applying one request produces: the SIP answer, and the events it causes."""

from __future__ import annotations

from dataclasses import dataclass, field

from presence.bus import events
from presence.sip.answers import Answer


@dataclass(frozen=True)
class Outcome:
    reply: Answer
    # Emitted to presence.changes after the database commit (and again if the
    # request is redelivered, so that a crash in between cannot lose them).
    notices: list[events.Event] = field(default_factory=list)
    # The To-tag of a dialog the request created (SUBSCRIBE).
    to_tag: str | None = None
