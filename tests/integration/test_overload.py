"""Admission at the edge: when the backlog of requests waiting for the store is
full, a new request is answered 503 with Retry-After at once, before the bus, so it
is never applied; its retransmissions get the same answer; once the backlog drains,
requests are admitted again. The store is paused (SIGSTOP) to hold a backlog."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import pytest

from presence.sip.message import SipResponse

from .conftest import make_stack, metric_samples, paused
from .sip_client import SipClient
from .test_shutdown import publish_request

pytestmark = pytest.mark.integration


async def stored(db_url: str, user: str) -> bool:
    connection = await asyncpg.connect(db_url)
    try:
        return bool(
            await connection.fetchval("SELECT count(*) FROM presentity WHERE username = $1", user)
        )
    finally:
        await connection.close()


def test_a_full_backlog_refuses_new_requests_at_once_and_never_applies_them(
    test_database: str,
) -> None:
    stack = make_stack(test_database, PRESENCE_FORCE_ACTIVE="1", PRESENCE_EDGE_MIN_BACKLOG="2")
    run = secrets.token_hex(3)
    users = [f"admit-{run}-{n}" for n in range(4)]
    clients = [SipClient(stack.sip, "udp", timeout=15) for _ in users]
    try:
        stack.start_all()
        with paused(stack, "presence-store"):
            # Two requests fill the backlog of two; the third finds it full.
            for client, user in zip(clients[:2], users[:2], strict=True):
                client.send(publish_request(client, user))
            refused_request = publish_request(clients[2], users[2])
            clients[2].send(refused_request)
            refusal = clients[2].receive(3)
            assert isinstance(refusal, SipResponse)
            assert (refusal.status, refusal.reason) == (503, "Overloaded")
            assert 1 <= int(refusal.headers.get("Retry-After") or "0") <= 5
            # RFC 3261 §17.2.2: a retransmission gets the same final response again.
            clients[2].send(refused_request)
            again = clients[2].receive(3)
            assert isinstance(again, SipResponse)
            assert (again.status, again.headers.get("To")) == (503, refusal.headers.get("To"))
        for client in clients[:2]:
            answer = client.final_response(15)
            assert answer.status == 200, answer
        # The backlog drained: a new request is admitted and applied.
        admitted = clients[3].transact(publish_request(clients[3], users[3]))
        assert admitted.status == 200
        assert [asyncio.run(stored(stack.db_url, user)) for user in users] == [
            True, True, False, True,
        ]  # fmt: skip
        refusals = metric_samples(stack, "sip-edge", "presence_sip_overload_refusals_total")
        assert refusals == {'method="PUBLISH"': 1.0}
    finally:
        for client in clients:
            client.close()
        stack.close()


def test_retransmissions_while_waiting_are_absorbed_not_forwarded(
    test_database: str,
) -> None:
    """A client retransmitting a request the store has not answered yet adds nothing
    to the backlog: the edge holds one transaction for it, and the store sees it once."""
    stack = make_stack(test_database, PRESENCE_FORCE_ACTIVE="1", PRESENCE_EDGE_MIN_BACKLOG="1")
    client = SipClient(stack.sip, "udp", timeout=15)
    other = SipClient(stack.sip, "udp", timeout=15)
    try:
        stack.start_all()
        with paused(stack, "presence-store"):
            request = publish_request(client, f"absorb-{secrets.token_hex(3)}")
            for _ in range(5):
                client.send(request)
            # The backlog holds one request, not five: a second request is refused...
            refused = other.transact(publish_request(other, f"absorb-{secrets.token_hex(3)}"), 3)
            assert refused.status == 503
        assert client.final_response(15).status == 200
        # ...and the store answered the retransmitted one once (its reply is counted
        # before it is sent, so the count is complete once the 200 is here).
        counted = metric_samples(stack, "presence-store", "presence_store_requests_total")
        assert sum(counted.values()) == 1.0, counted
    finally:
        client.close()
        other.close()
        stack.close()
