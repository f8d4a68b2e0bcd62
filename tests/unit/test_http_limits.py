"""What HTTP requests may carry (presence.http_limits), pure: the 413 answer closes
its connection and is counted by area; user and domain parts the tables can hold."""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive, Scope, Send

from presence import metrics
from presence.http_limits import RefusedBodies, area_of, storable_address


def test_areas_are_the_known_first_path_segments() -> None:
    assert area_of("/xcap-root/pres-rules/users/sip%3Aa%40b/index") == "xcap"
    assert area_of("/admin/users") == "admin"
    assert area_of("/admin") == "admin"
    assert area_of("/administrator") == "other"
    assert area_of("/metrics") == "other"
    assert area_of("") == "other"


def answer_of(status: int, headers: list[tuple[bytes, bytes]], path: str) -> list[Message]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"x"})

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "path": path, "headers": []}
    asyncio.run(RefusedBodies(app)(scope, receive, send))
    return sent


def count(area: str) -> float:
    return metrics.HTTP_BODY_TOO_LARGE.labels(area)._value.get()


def test_a_413_closes_the_connection_and_is_counted() -> None:
    before = count("xcap")
    start, body = answer_of(413, [(b"connection", b"keep-alive")], "/xcap-root/x")
    assert start["status"] == 413
    assert [v for n, v in start["headers"] if n == b"connection"] == [b"close"]
    assert body == {"type": "http.response.body", "body": b"x"}
    assert count("xcap") == before + 1


def test_other_answers_pass_unchanged() -> None:
    before = count("admin")
    headers = [(b"content-type", b"application/json")]
    start, _ = answer_of(200, headers, "/admin/users")
    assert start["headers"] == headers
    assert count("admin") == before


def test_storable_addresses() -> None:
    assert storable_address("alice", "example.com") is None
    assert storable_address("u" * 64, "d" * 128) is None
    assert storable_address("u" * 65, "example.com") == "the user part is longer than 64 characters"
    assert storable_address("a", "d" * 129) == "the domain part is longer than 128 characters"
    assert storable_address("a\x00b", "example.com") == "the user part holds a control character"
    assert storable_address("a", "ex\x7fample") == "the domain part holds a control character"
    assert storable_address("ålice", "example.com") is None  # UTF-8 is text PostgreSQL holds
