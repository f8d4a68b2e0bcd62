"""What an HTTP request to a service (XCAP, the admin API) may carry: a body no larger
than its area's limit, and user and domain parts that the tables can hold.

The body limits are FastAPI's own (`max_body_size` of the app and of a router, which
is Starlette's RequestBodyLimitMiddleware): a Content-Length over the limit is
answered 413 before a byte of the body is read, and a body without one (chunked) is
counted as it arrives and refused with 413 as soon as it passes the limit, so no
more than the limit is ever held. `RefusedBodies` adds what they lack: the 413
closes the connection (so the rest of an endless body is not read and thrown away
for ever), and each one is counted by area.
"""

from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from presence import column_limits
from presence.runtime import metrics

# Every HTTP route's body (the admin API's JSON); XCAP documents have their own.
DEFAULT_MAX_BODY = 64 * 1024
# The metric's area label of a path: its first segment when known.
_AREAS = {"xcap-root": "xcap", "admin": "admin"}


def area_of(path: str) -> str:
    """The metric label of a request path: "xcap", "admin" or "other"."""
    return _AREAS.get(path.lstrip("/").partition("/")[0], "other")


class RefusedBodies:
    """ASGI middleware around an application with body limits: a 413 answer gets
    `Connection: close` and is counted (presence_http_body_too_large_total)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 413:
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"connection"
                ]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
                metrics.HTTP_BODY_TOO_LARGE.labels(area_of(scope["path"])).inc()
            await send(message)

        await self.app(scope, receive, closing)


class CredentialsOverHttps:
    """ASGI middleware of the plain-HTTP port once HTTPS serves the same endpoints:
    XCAP and the admin API (which carry passwords and tokens) answer 403 pointing
    at HTTPS unless the client is on this machine (loopback: development, the
    command line, health checks stay on plain HTTP). Counted in
    presence_http_plain_refused_total{area}."""

    def __init__(self, app: ASGIApp, https_port: int) -> None:
        self.app = app
        self.https_port = https_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        area = area_of(scope.get("path", "")) if scope["type"] == "http" else "other"
        client = scope.get("client") or ("", 0)
        if area == "other" or scope.get("scheme") == "https" or _loopback(client[0]):
            await self.app(scope, receive, send)
            return
        metrics.HTTP_PLAIN_REFUSED.labels(area).inc()
        body = (f'{{"error": "credentials only over HTTPS: port {self.https_port}"}}').encode()
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def storable_address(user: str, domain: str) -> str | None:
    """Why the tables could not hold this user and domain, or None when they can
    (PostgreSQL refuses longer values than the columns', and NUL in any text)."""
    limits = (("user", user, column_limits.USER), ("domain", domain, column_limits.DOMAIN))
    for part, text, limit in limits:
        longest = limit.length
        if len(text) > longest:
            return f"the {part} part is longer than {longest} characters"
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            return f"the {part} part holds a control character"
    return None
