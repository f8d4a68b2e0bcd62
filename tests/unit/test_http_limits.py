"""What HTTP requests may carry (presence.runtime.http_limits), pure: the 413 answer closes
its connection and is counted by area; user and domain parts the tables can hold."""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive, Scope, Send

from presence.runtime import metrics
from presence.runtime.http_limits import (
    CredentialsOverHttps,
    RefusedBodies,
    area_of,
    storable_address,
)


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


def test_credentials_take_https_once_it_is_served() -> None:
    passed: list[str] = []

    async def app(scope: dict, receive: object, send: object) -> None:
        passed.append(scope["path"])

    guarded = CredentialsOverHttps(app, 8443)  # type: ignore[arg-type]

    def request(path: str, client: str, scheme: str = "http") -> list[dict]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "path": path, "client": (client, 40000), "scheme": scheme}
        asyncio.run(guarded(scope, None, send))  # type: ignore[arg-type]
        return sent

    before = metrics.HTTP_PLAIN_REFUSED.labels("xcap")._value.get()
    refused = request("/xcap-root/pres-rules/users/sip:a@b/index", "192.0.2.5")
    assert refused[0]["status"] == 403 and b"8443" in refused[1]["body"]
    assert metrics.HTTP_PLAIN_REFUSED.labels("xcap")._value.get() == before + 1
    assert request("/admin/users", "10.0.0.1")[0]["status"] == 403
    for path, client in (("/xcap-root/x", "127.0.0.1"), ("/admin/users", "::1"),
                         ("/health/ready", "192.0.2.5"), ("/metrics", "192.0.2.5")):  # fmt: skip
        assert request(path, client) == []
    assert request("/admin/users", "192.0.2.5", scheme="https") == []
    assert passed == ["/xcap-root/x", "/admin/users", "/health/ready", "/metrics", "/admin/users"]
