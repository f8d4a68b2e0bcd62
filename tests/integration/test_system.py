"""End to end through real sockets: SIP over UDP/TCP -> sip-edge -> Kafka ->
presence-store -> PostgreSQL, and the operational surface of each service."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import asyncpg
import pytest

from presence.sip.message import SipResponse

from .conftest import Stack, free_port, http_status, make_stack, wait_until
from .sip_client import SipClient

pytestmark = pytest.mark.integration

PIDF = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com">\n'
    b'  <tuple id="t1"><status><basic>open</basic></status></tuple>\n'
    b"</presence>\n"
)
# What OPTIONS and every 489 list with the default PRESENCE_EVENT_PACKAGES.
ALLOW_EVENTS = "presence, presence.winfo, dialog, message-summary"
PUBLISH_TYPES = (
    "application/dialog-info+xml, application/pidf+xml, application/simple-message-summary"
)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_options_is_answered_by_the_edge(stack: Stack, transport: str) -> None:
    client = SipClient(stack.sip, transport)
    try:
        response = client.transact(
            client.request("OPTIONS", f"sip:{stack.sip[0]}:{stack.sip[1]}", [])
        )
    finally:
        client.close()
    assert isinstance(response, SipResponse)
    assert response.status == 200
    assert "PUBLISH" in response.headers.get("Allow")
    assert "SUBSCRIBE" in response.headers.get("Allow")
    assert response.headers.get("Accept") == PUBLISH_TYPES
    assert response.headers.get("Allow-Events") == ALLOW_EVENTS
    # RFC 3581: the edge filled rport and received in the Via it echoed.
    via = response.headers.get("Via")
    assert f"rport={client.local_port};received=127.0.0.1" in via


async def test_publish_reaches_postgresql_through_kafka(
    stack: Stack, db: asyncpg.Connection
) -> None:
    client = SipClient(stack.sip, "udp")
    try:
        response = client.transact(
            client.request(
                "PUBLISH",
                "sip:alice@example.com",
                [
                    ("Event", "presence"),
                    ("Expires", "600"),
                    ("Content-Type", "application/pidf+xml"),
                ],
                PIDF,
            )
        )
    finally:
        client.close()
    assert response.status == 200, response
    entity_tag = response.headers.get("SIP-ETag")
    assert entity_tag
    assert response.headers.get("Expires") == "600"
    row = await db.fetchrow(
        "SELECT username, domain, event, body, expires - received_time AS lifetime "
        "FROM presentity WHERE etag = $1",
        entity_tag,
    )
    assert row is not None
    assert (row["username"], row["domain"], row["event"]) == ("alice", "example.com", "presence")
    assert row["body"].encode() == PIDF
    assert row["lifetime"] == 601  # 600 s rounded up (presence.subscriptions.expiry)


def test_publish_over_tcp_with_unknown_entity_tag_is_412(stack: Stack) -> None:
    client = SipClient(stack.sip, "tcp")
    try:
        response = client.transact(
            client.request(
                "PUBLISH",
                "sip:bob@example.com",
                [("Event", "presence"), ("SIP-If-Match", "no-such-tag"), ("Expires", "60")],
            )
        )
    finally:
        client.close()
    assert response.status == 412


def test_malformed_request_gets_400_naming_the_defect(stack: Stack) -> None:
    client = SipClient(stack.sip, "udp")
    try:
        request = client.request("OPTIONS", "sip:example.com", [])
        client.send(request.replace(b"CSeq: 1 OPTIONS", b"CSeq: x OPTIONS"))
        # The answer echoes the bad CSeq, so it is read as bytes, not parsed.
        answer = client.receive_raw()
    finally:
        client.close()
    assert answer.startswith(b"SIP/2.0 400 Bad CSeq\r\n")
    assert b"\r\nCSeq: x OPTIONS\r\n" in answer


def test_health_endpoints_report_every_dependency(stack: Stack) -> None:
    expected_checks = {
        "sip-edge": {"kafka"},
        "presence-store": {"kafka", "postgresql", "redis"},
        "notifier": {"kafka", "postgresql"},
    }
    for service, checks in expected_checks.items():
        with urllib.request.urlopen(stack.http(service, "/health/live"), timeout=5) as live:
            assert live.status == 200
        with urllib.request.urlopen(stack.http(service, "/health/ready"), timeout=5) as ready:
            report = json.load(ready)
        assert report["ready"] is True
        assert report["checks"] == dict.fromkeys(checks, "ok")


def run_service_expecting_failure(
    module: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=60
    )


def test_bad_setting_stops_the_service_with_one_line(test_database: str) -> None:
    stack = make_stack(test_database, PRESENCE_MAX_EXPIRES="soon")
    result = run_service_expecting_failure("sip_edge", stack.env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "sip-edge: configuration error: PRESENCE_MAX_EXPIRES: must be an integer, got 'soon'"
    ]


def test_taken_sip_port_is_a_one_line_error(test_database: str) -> None:
    stack = make_stack(test_database)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(stack.sip)
        result = run_service_expecting_failure("sip_edge", stack.env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{stack.sip[0]}:{stack.sip[1]}/udp" in lines[0]
    assert "PRESENCE_SIP_PORT" in lines[0]


def test_unreachable_database_is_a_one_line_error(test_database: str) -> None:
    unused = free_port()
    stack = make_stack(
        test_database, PRESENCE_DB_URL=f"postgresql://presence:presence@127.0.0.1:{unused}/x"
    )
    result = run_service_expecting_failure("presence_store", stack.env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(
        f"presence-store: cannot connect to PostgreSQL at 127.0.0.1:{unused}/x"
    )
    assert "`make run` starts one" in last_line


def test_readiness_follows_a_dependency_that_goes_away_and_comes_back(
    test_database: str, tmp_path
) -> None:
    """A private redis-server, so that stopping it disturbs nothing else."""
    port = free_port()
    redis_command = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    redis_command += ["--dir", str(tmp_path)]
    redis = subprocess.Popen(redis_command, stdout=subprocess.DEVNULL)
    stack = make_stack(test_database, PRESENCE_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    try:
        wait_until(lambda: redis_answers(port), 10, "the private redis-server")
        stack.start("presence-store")
        ready_url = stack.http("presence-store", "/health/ready")
        assert http_status(ready_url) == 200
        redis.terminate()
        redis.wait(10)
        wait_until(lambda: http_status(ready_url) == 503, 20, "readiness to turn false")
        with urllib.request.urlopen(
            stack.http("presence-store", "/health/live"), timeout=5
        ) as live:
            assert live.status == 200  # alive, only not ready
        redis = subprocess.Popen(redis_command, stdout=subprocess.DEVNULL)
        wait_until(lambda: http_status(ready_url) == 200, 20, "readiness to come back")
    finally:
        stack.close()
        redis.terminate()
        redis.wait(10)


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def test_registrar_binds_refreshes_and_removes(stack: Stack) -> None:
    client = SipClient(stack.sip, "udp")
    contact = f"<sip:linphone@127.0.0.1:{client.local_port}>"
    try:

        def register(contact_value: str, expires: str) -> SipResponse:
            request = client.request(
                "REGISTER",
                "sip:example.com",
                [("Contact", contact_value), ("Expires", expires)],
            ).replace(b"To: <sip:example.com>", b"To: <sip:linphone@example.com>")
            return client.transact(request)

        bound = register(contact, "300")
        second = register("<sip:linphone@192.0.2.9:5060>", "120")
        removed = register("*", "0")
    finally:
        client.close()
    assert bound.status == 200
    assert bound.headers.get_all("Contact") == [f"{contact};expires=300"]
    assert second.status == 200
    remaining = dict(value.split(";expires=") for value in second.headers.get_all("Contact"))
    assert remaining.keys() == {contact, "<sip:linphone@192.0.2.9:5060>"}
    assert 290 <= int(remaining[contact]) <= 300  # a second may have passed
    assert remaining["<sip:linphone@192.0.2.9:5060>"] == "120"
    assert removed.status == 200
    assert removed.headers.get_all("Contact") == []


def test_sigterm_stops_every_service_cleanly_and_soon(test_database: str) -> None:
    stack = make_stack(test_database)
    try:
        stack.start_all()
        client = SipClient(stack.sip, "udp")
        try:  # some work in flight before the stop
            client.send(client.request("OPTIONS", "sip:example.com", []))
        finally:
            client.close()
        for name in ("sip-edge", "notifier", "presence-store"):
            started = time.monotonic()
            assert stack.stop(name) == 0, stack_log_tail(stack, name)
            assert time.monotonic() - started < 15
    finally:
        stack.close()


def stack_log_tail(stack: Stack, name: str) -> str:
    from .conftest import LOGS

    logs = sorted(LOGS.glob(f"{name}-{stack.env['PRESENCE_KAFKA_NAMESPACE']}.log"))
    return logs[-1].read_text()[-2000:] if logs else ""


def test_store_rides_out_a_redis_outage(test_database: str, tmp_path) -> None:
    """Redis (the locks) goes away and comes back: requests meanwhile get 503 with
    Retry-After, the store stays up and answers 200 again once Redis is back."""
    port = free_port()
    redis_command = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    redis_command += ["--dir", str(tmp_path)]
    redis = subprocess.Popen(redis_command, stdout=subprocess.DEVNULL)
    stack = make_stack(
        test_database, PRESENCE_FORCE_ACTIVE="1", PRESENCE_REDIS_URL=f"redis://127.0.0.1:{port}/0"
    )
    client = SipClient(stack.sip, "udp", timeout=15)

    def publish() -> SipResponse:
        headers = [("Event", "presence"), ("Content-Type", "application/pidf+xml")]
        return client.transact(client.request("PUBLISH", "sip:alice@example.com", headers, PIDF))

    try:
        wait_until(lambda: redis_answers(port), 10, "the private redis-server")
        stack.start_all()
        assert publish().status == 200
        redis.terminate()
        redis.wait(10)
        during = publish()
        assert during.status == 503 and during.headers.get("Retry-After")
        redis = subprocess.Popen(redis_command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while (status := publish().status) != 200:
            assert status == 503, status
            assert time.monotonic() < deadline, "no 200 after Redis came back"
        assert stack.processes["presence-store"].process.poll() is None  # never exited
    finally:
        client.close()
        stack.close()
        redis.terminate()
        redis.wait(10)


def test_each_edge_replica_gets_the_replies_to_its_own_requests(test_database: str) -> None:
    stack = make_stack(test_database, PRESENCE_FORCE_ACTIVE="1")
    second_port = free_port()
    try:
        stack.start("presence-store")
        stack.start("sip-edge")
        stack.start(
            "sip-edge", replica="-b", PRESENCE_SIP_PORT=str(second_port), PRESENCE_EDGE_ID="edge-b"
        )
        statuses = []
        for server in (stack.sip, ("127.0.0.1", second_port)) * 3:
            client = SipClient(server, "udp")
            try:
                headers = [("Event", "presence"), ("Content-Type", "application/pidf+xml")]
                uri = f"sip:two-edges-{len(statuses)}@example.com"
                statuses.append(
                    client.transact(client.request("PUBLISH", uri, headers, PIDF)).status
                )
            finally:
                client.close()
    finally:
        stack.close()
    assert statuses == [200] * 6
