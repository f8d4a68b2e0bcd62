"""Logging of every service: JSON lines (or text on a terminal) with a correlation id.

One id follows a SIP transaction through the system: the edge takes the request's
id (`request_id`, one per server transaction) as the correlation id, every Kafka
record produced while handling it carries the id in its `correlation-id` header
(presence.runtime.kafka), and each consumer handles a record with the id of its header.
So the edge's line for a PUBLISH, the store's line for applying it, the
notifier's line for the change and the edge's lines for every NOTIFY it caused
share one id: `grep <id> *.log` follows it. Work that no SIP request started
(the cleaner, XCAP, the admin API) gets an id of its own ("expiry-…", "xcap-…",
"admin-…").

A JSON line: {"ts": "2025-01-31T12:00:00.123Z", "level": "INFO", "service":
"sip-edge", "logger": "sip_edge.core", "msg": "...", "correlation_id": "..."}
(plus "exc" with the traceback of an exception). Nothing at INFO carries a
presence document or a credential.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO

CORRELATION_HEADER = "correlation-id"
SERVICES = ("sip-edge", "presence-store", "notifier")

correlation: ContextVar[str] = ContextVar("correlation_id", default="")


@contextmanager
def correlated(correlation_id: str | None) -> Iterator[str]:
    """Log (and produce Kafka records) with this id until the block ends; None or ""
    keeps the current one."""
    if not correlation_id:
        yield correlation.get()
        return
    token = correlation.set(correlation_id)
    try:
        yield correlation_id
    finally:
        correlation.reset(token)


def new_correlation_id(kind: str) -> str:
    """An id for work no SIP transaction started: "<kind>-<12 hex digits>"."""
    return f"{kind}-{secrets.token_hex(6)}"


def kafka_headers() -> list[tuple[str, bytes]]:
    """The record headers that carry the current correlation id (none without one)."""
    current = correlation.get()
    return [(CORRELATION_HEADER, current.encode())] if current else []


def from_kafka_headers(headers: Iterable[tuple[str, bytes]] | None) -> str:
    for name, value in headers or ():
        if name == CORRELATION_HEADER and value:
            return value.decode("ascii", errors="replace")
    return ""


class _Correlation(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation.get()
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, str] = {
            "ts": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        correlation_id = getattr(record, "correlation_id", "")
        if correlation_id:
            line["correlation_id"] = correlation_id
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """For people at a terminal: time, service, level, logger [id]: message."""

    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s {service} %(levelname)s %(name)s%(cid)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        correlation_id = getattr(record, "correlation_id", "")
        record.cid = f" [{correlation_id}]" if correlation_id else ""
        return super().format(record)


def parse_levels(text: str) -> dict[str, str]:
    """ "sip-edge=DEBUG,aiokafka=INFO" -> {"sip-edge": "DEBUG", "aiokafka": "INFO"}.
    Raises ValueError naming the bad entry."""
    levels: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        name, sep, level = entry.partition("=")
        level = level.strip().upper()
        if not sep or not name.strip():
            raise ValueError(f"entries must be name=LEVEL, got {entry!r}")
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"level of {name.strip()!r} must be DEBUG, INFO, WARNING or ERROR")
        levels[name.strip()] = level
    return levels


def configure(
    service: str, level: str, *, fmt: str = "auto", levels: str = "", stream: IO[str] | None = None
) -> None:
    """Set up the root logger of a service process.

    `level` is the service's level unless `levels` names the service
    ("notifier=DEBUG", so one env file can serve every service); other names in
    `levels` are Python loggers ("aiokafka=INFO"). `fmt`: json, text, or auto
    (text when the stream, stderr by default, is a terminal; JSON lines otherwise)."""
    overrides = parse_levels(levels)
    level = overrides.pop(service, level)
    for other in SERVICES:
        overrides.pop(other, None)
    stream = stream or sys.stderr
    use_text = fmt == "text" or (fmt == "auto" and stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter(service) if use_text else JsonFormatter(service))
    handler.addFilter(_Correlation())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # aiokafka is chatty at INFO (every coordinator change); its warnings matter.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    for name, logger_level in overrides.items():
        logging.getLogger(name).setLevel(logger_level)
