"""Message summaries (RFC 3842, event package message-summary), pure.

A voicemail server publishes a body such as

    Messages-Waiting: yes
    Message-Account: sip:alice@vm.example.com
    Voice-Message: 2/8 (0/2)

and every watcher of the mailbox gets that body as it is (the newest publication
wins: a summary describes the whole mailbox, so two of them never merge). The
parser checks the grammar of RFC 3842 §5.2 so that a phone is never handed a body
it cannot read: the status line first, then at most one account, then summary
lines of the message-context classes of RFC 3458 with their counts, then,
after an empty line, optional message headers (kept, not judged).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CONTENT_TYPE = "application/simple-message-summary"
# The largest published summary; real ones are a few hundred bytes.
MAX_SUMMARY_BYTES = 16 * 1024
# RFC 3458 §6.2 message-context-class values.
CONTEXT_CLASSES = frozenset(
    {"voice-message", "fax-message", "pager-message", "multimedia-message", "text-message",
     "none"}
)  # fmt: skip
# What a watcher gets while nobody has published: RFC 3842 allows an empty body,
# but some phones reject one; "no messages" is what they show anyway.
NO_MESSAGES = b"Messages-Waiting: no\r\n"

_HEADER = re.compile(r"^([A-Za-z0-9!%*_+`'~.-]+)[ \t]*:[ \t]*(.*?)[ \t]*$")
_COUNTS = re.compile(
    r"^(\d{1,9})[ \t]*/[ \t]*(\d{1,9})(?:[ \t]*\([ \t]*(\d{1,9})[ \t]*/[ \t]*(\d{1,9})[ \t]*\))?$"
)


class SummaryError(ValueError):
    """Why a body is not a message summary, short enough for a SIP reason phrase."""


@dataclass(frozen=True)
class Counts:
    new: int
    old: int
    new_urgent: int | None = None
    old_urgent: int | None = None


@dataclass(frozen=True)
class MessageSummary:
    waiting: bool
    account: str | None = None
    # message-context class (lower case) -> its counts, in body order
    messages: dict[str, Counts] = field(default_factory=dict)
    # the optional message headers after the empty line (name, value), in order
    headers: tuple[tuple[str, str], ...] = ()


def parse_message_summary(body: bytes) -> MessageSummary:
    """The summary in `body`; raises SummaryError saying what is wrong."""
    if len(body) > MAX_SUMMARY_BYTES:
        raise SummaryError(f"Message summary larger than {MAX_SUMMARY_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SummaryError("Message summary is not UTF-8") from None
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise SummaryError("Empty message summary")
    status = _header(lines[0])
    if status is None or status[0].lower() != "messages-waiting":
        raise SummaryError("Message summary must start with Messages-Waiting")
    waiting = status[1].lower()
    if waiting not in ("yes", "no"):
        raise SummaryError("Messages-Waiting must be yes or no")
    account: str | None = None
    messages: dict[str, Counts] = {}
    index = 1
    while index < len(lines) and lines[index].strip():
        header = _header(lines[index])
        if header is None:
            raise SummaryError(f"Bad message summary line {index + 1}")
        name, value = header[0].lower(), header[1]
        if name == "message-account":
            if account is not None or messages:
                raise SummaryError("Message-Account must come once, before the counts")
            if ":" not in value or not value.split(":", 1)[0].isalpha():
                raise SummaryError("Message-Account is not a URI")
            account = value
        elif name in CONTEXT_CLASSES:
            if name in messages:
                raise SummaryError(f"{header[0]} given twice")
            messages[name] = _counts(header[0], value)
        else:
            raise SummaryError(f"Unknown message context class {header[0][:40]}")
        index += 1
    extra: list[tuple[str, str]] = []
    for number, line in enumerate(lines[index + 1 :], index + 2):
        if not line.strip():
            continue
        header = _header(line)
        if header is None:
            raise SummaryError(f"Bad message header line {number}")
        extra.append(header)
    return MessageSummary(waiting == "yes", account, messages, tuple(extra))


def _header(line: str) -> tuple[str, str] | None:
    match = _HEADER.match(line)
    return None if match is None else (match.group(1), match.group(2))


def _counts(name: str, value: str) -> Counts:
    match = _COUNTS.match(value)
    if match is None:
        raise SummaryError(f"{name[:40]} counts must be new/old")
    new, old, new_urgent, old_urgent = match.groups()
    return Counts(
        int(new),
        int(old),
        None if new_urgent is None else int(new_urgent),
        None if old_urgent is None else int(old_urgent),
    )
