"""What an XCAP or admin client can send the store, over real HTTP on real sockets:
a body over its limit is refused while it arrives (413, connection closed, the rest
never read), credentials that cannot be read are a 401 (never a 500), and XCAP writes
are limited per user (429 with Retry-After) without touching anyone else."""

from __future__ import annotations

import base64
import contextlib
import secrets
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from presence.xcap.credentials import password_for

from .conftest import XCAP_SECRET, Stack, base_env, running_stack

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "admin-" + secrets.token_hex(12)
WRITES_PER_MINUTE = 5
XCAP_LIMIT = 256 * 1024
ADMIN_LIMIT = 64 * 1024
RULES = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<cr:ruleset xmlns:cr="urn:ietf:params:xml:ns:common-policy"/>'
)


@pytest.fixture(scope="module")
def limits_stack(test_database: str) -> Iterator[Stack]:
    with running_stack(
        test_database,
        PRESENCE_XCAP_WRITES_PER_MINUTE=str(WRITES_PER_MINUTE),
        PRESENCE_ADMIN_TOKEN=ADMIN_TOKEN,
    ) as stack:
        yield stack


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def connect(stack: Stack) -> socket.socket:
    port = stack.processes["presence-store"].http_port
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def head(method: str, path: str, headers: list[tuple[str, bytes]]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    lines += [name.encode() + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def read_answer(sock: socket.socket, timeout: float = 10) -> Answer:
    """One response: status line, headers, and a body of its Content-Length."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response; got {data!r}"
        data += chunk
    header_block, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = header_block.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of the response body"
        body += chunk
    return Answer(int(status_line.split()[1]), headers, body[:length])


def request(
    stack: Stack, method: str, path: str, headers: list[tuple[str, bytes]], body: bytes = b""
) -> Answer:
    with connect(stack) as sock:
        if body:
            headers = [*headers, ("Content-Length", str(len(body)).encode())]
        sock.sendall(head(method, path, headers) + body)
        return read_answer(sock)


def xcap_path(presentity: str) -> str:
    return f"/xcap-root/pres-rules/users/{urllib.parse.quote(presentity, safe='')}/index"


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def owner(presentity: str) -> list[tuple[str, bytes]]:
    return [("Authorization", basic(presentity, password_for(XCAP_SECRET, presentity)))]


def rules_put(stack: Stack, presentity: str) -> Answer:
    headers = [*owner(presentity), ("Content-Type", b"application/auth-policy+xml")]
    return request(stack, "PUT", xcap_path(presentity), headers, RULES)


def closed_before(sock: socket.socket, most: int) -> bool:
    """Whether the peer stops taking data (reset or closed) before `most` bytes more."""
    chunk = b"x" * 65536
    sent = 0
    try:
        while sent < most:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:  # BrokenPipe or ConnectionReset: the server closed its end
        return True
    return False


def metric(stack: Stack, sample: str) -> float:
    """A sample's value on the store's /metrics (0 when it has none yet)."""
    for line in request(stack, "GET", "/metrics", []).body.decode().splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


def new_user() -> str:
    return f"sip:limits-{secrets.token_hex(4)}@example.com"


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(
    limits_stack: Stack,
) -> None:
    alice = new_user()
    headers = [
        *owner(alice),
        ("Content-Type", b"application/auth-policy+xml"),
        ("Content-Length", str(4 << 30).encode()),  # 4 GiB, of which nothing follows
    ]
    with connect(limits_stack) as sock:
        sock.sendall(head("PUT", xcap_path(alice), headers))
        answer = read_answer(sock)
        assert answer.status == 413
        assert answer.headers.get("connection") == "close"
        assert closed_before(sock, 64 << 20)
    assert metric(limits_stack, 'presence_http_body_too_large_total{area="xcap"}') >= 1
    # The admin API's limit is smaller: 100 KiB of JSON is refused the same way.
    admin = [("Authorization", b"Bearer " + ADMIN_TOKEN.encode())]
    admin.append(("Content-Type", b"application/json"))
    body = b'{"password": "' + b"p" * (100 * 1024) + b'"}'
    answer = request(limits_stack, "PUT", "/admin/users/sip%3Abig%40example.com", admin, body)
    assert answer.status == 413
    assert metric(limits_stack, 'presence_http_body_too_large_total{area="admin"}') >= 1


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(limits_stack: Stack) -> None:
    alice = new_user()
    headers = [
        *owner(alice),
        ("Content-Type", b"application/auth-policy+xml"),
        ("Transfer-Encoding", b"chunked"),
    ]
    piece = 32 * 1024
    chunk = f"{piece:x}\r\n".encode() + b"<" * piece + b"\r\n"
    with connect(limits_stack) as sock:
        sock.sendall(head("PUT", xcap_path(alice), headers))
        sent = 0
        while sent < 300 * 1024:  # past the 256 KiB limit, no end of body
            sock.sendall(chunk)
            sent += piece
        # The answer comes now, while the body has not ended...
        answer = read_answer(sock)
        assert answer.status == 413
        assert answer.headers.get("connection") == "close"
        # ...and the server reads no more of it: sending 64 MiB more fails.
        assert closed_before(sock, 64 << 20)
    # The store is fine and the document was never stored.
    assert rules_put(limits_stack, alice).status == 201


def test_the_same_chunked_body_within_the_limit_is_read(limits_stack: Stack) -> None:
    alice = new_user()
    headers = [
        *owner(alice),
        ("Content-Type", b"application/auth-policy+xml"),
        ("Transfer-Encoding", b"chunked"),
    ]
    chunks = [RULES[:40], RULES[40:]]
    body = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks) + b"0\r\n\r\n"
    with connect(limits_stack) as sock:
        sock.sendall(head("PUT", xcap_path(alice), headers) + body)
        assert read_answer(sock).status == 201


@pytest.mark.parametrize(
    "authorization",
    [
        b"Basic \xc3\xa9\xc3\xa9",  # UTF-8 bytes in the header
        b"Basic \xe9t\xe9",  # Latin-1 letters where base64 belongs
        b"Basic !!!not-base64!!!",
        b"Basic " + base64.b64encode(b"no-colon-here"),
        b"Basic " + base64.b64encode(b"\xff\xfe:\xff"),  # not UTF-8 once decoded
        b"Basic " + base64.b64encode(b"ali\x00ce@example.com:pw"),  # NUL once decoded
        b"Basic",
        b"Bearer \xc3\xa9\xc3\xa9",  # non-ASCII token
        b'Digest username="alice", response="\xe9"',
        b"Basic " + b"A" * 4096,
    ],
)
def test_unreadable_credentials_are_a_401(limits_stack: Stack, authorization: bytes) -> None:
    alice = new_user()
    answer = request(limits_stack, "GET", xcap_path(alice), [("Authorization", authorization)])
    assert answer.status == 401
    assert answer.headers["www-authenticate"].startswith("Basic ")
    # The admin API's bearer check neither.
    answer = request(limits_stack, "GET", "/admin/users", [("Authorization", authorization)])
    assert answer.status == 401


def test_an_xui_the_tables_cannot_hold_is_not_found(limits_stack: Stack) -> None:
    # %00 unescapes to NUL in the user part, which PostgreSQL cannot store.
    for presentity in ("sip:nul%00user@example.com", f"sip:{'u' * 65}@example.com"):
        answer = request(limits_stack, "GET", xcap_path(presentity), owner(presentity))
        assert answer.status == 404, presentity
        assert rules_put(limits_stack, presentity).status == 404
    # A raw NUL cannot even be in credentials: 401.
    presentity = "sip:nul\x00user@example.com"
    assert request(limits_stack, "GET", xcap_path(presentity), owner(presentity)).status == 401


def test_writes_beyond_the_rate_get_429_and_others_are_not_affected(
    limits_stack: Stack,
) -> None:
    alice, bob = new_user(), new_user()
    statuses = [rules_put(limits_stack, alice).status for _ in range(WRITES_PER_MINUTE)]
    assert statuses == [201] + [200] * (WRITES_PER_MINUTE - 1)
    refused = rules_put(limits_stack, alice)
    assert refused.status == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    deleted = request(limits_stack, "DELETE", xcap_path(alice), owner(alice))
    assert deleted.status == 429
    # Reading is not limited, and the last accepted document is still there.
    read = request(limits_stack, "GET", xcap_path(alice), owner(alice))
    assert read.status == 200 and read.body == RULES
    # Bob writes as if nothing happened.
    assert rules_put(limits_stack, bob).status == 201
    assert metric(limits_stack, 'presence_xcap_rate_limited_total{method="PUT"}') >= 1
    assert metric(limits_stack, 'presence_xcap_rate_limited_total{method="DELETE"}') >= 1


class TcpRelay:
    """A TCP relay to Redis that the test can cut: its listening socket and every
    relayed connection close at once, as when Redis goes away."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.listener.close()
        for end in self.sockets:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


def test_without_redis_writes_get_503_and_reads_still_work(test_database: str) -> None:
    redis = urllib.parse.urlsplit(base_env()["PRESENCE_REDIS_URL"])
    relay = TcpRelay((redis.hostname or "127.0.0.1", redis.port or 6379))
    url = f"redis://127.0.0.1:{relay.port}{redis.path}"
    with running_stack(test_database, PRESENCE_REDIS_URL=url) as stack:
        alice = new_user()
        assert rules_put(stack, alice).status == 201
        relay.cut()
        refused = rules_put(stack, alice)
        assert refused.status == 503
        assert refused.headers["retry-after"] == "5"
        assert b"Redis" in refused.body
        read = request(stack, "GET", xcap_path(alice), owner(alice))
        assert read.status == 200 and read.body == RULES


BUDDIES = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">'
    b'<list name="f"/></resource-lists>'
)


def lists_path(presentity: str) -> str:
    return xcap_path(presentity).replace("/pres-rules/", "/resource-lists/")


def lists_put(stack: Stack, presentity: str, body: bytes = BUDDIES) -> Answer:
    headers = [*owner(presentity), ("Content-Type", b"application/resource-lists+xml")]
    return request(stack, "PUT", lists_path(presentity), headers, body)


def test_resource_lists_have_the_same_body_limit(limits_stack: Stack) -> None:
    """The 256 KiB limit holds for buddy lists too, read as the body arrives."""
    alice = new_user()
    entries = b"".join(b'<entry uri="sip:u%d@example.com"/>' % n for n in range(9000))
    big = BUDDIES.replace(b'<list name="f"/>', b'<list name="f">' + entries + b"</list>")
    assert len(big) > XCAP_LIMIT
    answer = lists_put(limits_stack, alice, big)
    assert answer.status == 413 and answer.headers.get("connection") == "close"
    assert lists_put(limits_stack, alice).status == 201


def test_resource_lists_writes_count_with_the_users_other_writes(limits_stack: Stack) -> None:
    """One budget of writes a minute per user, whichever of their documents changes."""
    alice = new_user()
    statuses = [rules_put(limits_stack, alice).status for _ in range(WRITES_PER_MINUTE - 1)]
    assert statuses == [201] + [200] * (WRITES_PER_MINUTE - 2)
    assert lists_put(limits_stack, alice).status == 201
    refused = lists_put(limits_stack, alice)
    assert refused.status == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
    read = request(limits_stack, "GET", lists_path(alice), owner(alice))
    assert read.status == 200 and read.body == BUDDIES
