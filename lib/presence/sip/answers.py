"""A SIP final answer as the services decide it (pure): what the edge answers by
itself and what presence-store answers a request on the bus are the same thing.
The bus carries one as `presence.bus.events.SipReply`, with its request's id."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Answer:
    status: int
    # None: the status code's usual reason phrase (presence.sip.message).
    reason: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    # The To-tag of the dialog a SUBSCRIBE created; None lets the edge pick one.
    to_tag: str | None = None
