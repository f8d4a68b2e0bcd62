"""The clean_period timer on the real stack (PRESENCE_CLEAN_PERIOD=1): expired
publications and subscriptions are removed and their watchers told; one leader."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import Iterator

import asyncpg
import pytest

from presence.packages.dialoginfo import dialog_states
from presence.packages.watcherinfo import parse_watcherinfo

from .conftest import Stack, make_stack, running_stack, wait_until
from .sip_client import SipClient
from .test_dialog import Publisher, dialog_info
from .test_subscribe import WatcherDialog, publish_device, tuples

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fast_clean(test_database: str) -> Iterator[Stack]:
    with running_stack(
        test_database, PRESENCE_FORCE_ACTIVE="1", PRESENCE_CLEAN_PERIOD="1"
    ) as stack:
        yield stack


def device(entity: str, tuple_id: str) -> bytes:
    return (
        f'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{entity}">'
        f'<tuple id="{tuple_id}"><status><basic>open</basic></status></tuple></presence>'
    ).encode()


def test_expired_publication_shows_closed_then_goes(fast_clean: Stack) -> None:
    client = SipClient(fast_clean.sip, "udp")
    presentity = f"sip:exp-{secrets.token_hex(3)}@example.com"
    watcher = WatcherDialog(client, presentity, secrets.token_hex(6), secrets.token_hex(3))
    try:
        assert watcher.subscribe().status == 200
        watcher.next_notify()
        assert publish_device(fast_clean, presentity, device(presentity, "desk"), Expires="2")
        assert tuples(watcher.next_notify()) == {"desk": "open"}
        # No refresh: after 2 s the publication expires and the cleaner tells the watcher.
        expired = watcher.next_notify()
        assert tuples(expired) == {"desk": "closed"}
    finally:
        client.close()


def test_an_expired_dialog_publication_shows_its_dialogs_terminated_once(
    fast_clean: Stack,
) -> None:
    client = SipClient(fast_clean.sip, "udp")
    pbx = Publisher(fast_clean, "pbx")
    line = f"sip:exp-line-{secrets.token_hex(3)}@example.com"
    lamp = WatcherDialog(client, line, secrets.token_hex(6), secrets.token_hex(3))
    try:
        assert lamp.subscribe(Event="dialog").status == 200
        lamp.next_notify()
        body = dialog_info(line, ("call-1", "confirmed"))
        assert pbx.publish(line, body, expires=2).status == 200
        assert dialog_states(lamp.next_notify().body) == {"call-1": "confirmed"}
        # No refresh: the PBX is gone; the lamp must not stay lit.
        assert dialog_states(lamp.next_notify().body) == {"call-1": "terminated"}
        # Shown once: the next change no longer carries it.
        assert pbx.publish(line, dialog_info(line, ("call-2", "early"))).status == 200
        assert dialog_states(lamp.next_notify().body) == {"call-2": "early"}
    finally:
        pbx.close()
        client.close()


def test_expired_subscription_gets_a_final_notify_and_is_removed(fast_clean: Stack) -> None:
    client = SipClient(fast_clean.sip, "udp")
    presentity = f"sip:exp-{secrets.token_hex(3)}@example.com"
    watcher = WatcherDialog(client, presentity, secrets.token_hex(6), secrets.token_hex(3))
    try:
        assert watcher.subscribe(expires=2).status == 200
        watcher.next_notify()
        final = watcher.next_notify()  # no refresh
    finally:
        client.close()
    assert final.headers.get("Subscription-State") == "terminated;reason=timeout"

    async def remaining() -> int:
        connection = await asyncpg.connect(fast_clean.db_url)
        try:
            return await connection.fetchval(
                "SELECT count(*) FROM active_watchers WHERE to_tag = $1", watcher.to_tag
            )
        finally:
            await connection.close()

    wait_until(lambda: asyncio.run(remaining()) == 0, 10, "the terminated dialog to go")


def test_a_backlog_is_worked_off_while_requests_are_answered(fast_clean: Stack) -> None:
    user = "backlog-" + secrets.token_hex(3)

    async def seed_and_count(seed: bool) -> int:
        connection = await asyncpg.connect(fast_clean.db_url)
        try:
            if seed:
                await connection.execute(
                    """INSERT INTO presentity
                           (username, domain, event, etag, expires, received_time, body)
                       SELECT $1, 'example.com', 'presence', 'e' || n, 1, 0, '<presence/>'
                       FROM generate_series(1, 5000) AS n""",
                    user,
                )
            return await connection.fetchval(
                "SELECT count(*) FROM presentity WHERE username = $1", user
            )
        finally:
            await connection.close()

    assert asyncio.run(seed_and_count(True)) == 5000
    client = SipClient(fast_clean.sip, "udp")
    try:
        started = time.monotonic()
        presentity = f"sip:busy-{secrets.token_hex(3)}@example.com"
        response = publish_device(fast_clean, presentity, device(presentity, "x"))
        assert response.status == 200
        assert time.monotonic() - started < 5  # answered while the cleaner works
    finally:
        client.close()
    wait_until(lambda: asyncio.run(seed_and_count(False)) == 0, 30, "the backlog to be cleaned")


def test_one_leader_and_a_takeover_when_it_dies(test_database: str) -> None:
    stack = make_stack(test_database, PRESENCE_CLEAN_PERIOD="1")
    try:
        stack.start("presence-store")
        stack.start("presence-store", replica="-b")

        def leaders() -> list[str]:
            return [
                name
                for name, process in stack.processes.items()
                if process.log().rfind("cleaner: leading") > process.log().rfind("another replica")
            ]

        wait_until(lambda: len(leaders()) == 1, 10, "one cleaner leader")
        (leader,) = leaders()
        stack.stop(leader, signal.SIGKILL)  # no chance to resign: the lease must lapse
        wait_until(lambda: len(leaders()) == 1, 15, "the other replica to take over")
        assert leaders() != [leader]
    finally:
        stack.close()


def test_an_expired_subscription_shows_in_the_owners_watcher_info(fast_clean: Stack) -> None:
    presentity = f"sip:winfo-exp-{secrets.token_hex(3)}@example.com"
    owner_client = SipClient(fast_clean.sip, "udp")
    watcher_client = SipClient(fast_clean.sip, "udp")
    try:
        owner = WatcherDialog(
            owner_client, presentity, secrets.token_hex(6), "o", from_uri=presentity
        )
        assert owner.subscribe(Event="presence.winfo").status == 200
        assert parse_watcherinfo(owner.next_notify().body).watchers == []
        watcher = WatcherDialog(watcher_client, presentity, secrets.token_hex(6), "w")
        assert watcher.subscribe(expires=2).status == 200
        watcher.next_notify()
        joined = parse_watcherinfo(owner.next_notify().body)
        assert [(w.status, w.event) for w in joined.watchers] == [("active", "subscribe")]
        assert watcher.next_notify().headers.get("Subscription-State") == (
            "terminated;reason=timeout"
        )
        left = parse_watcherinfo(owner.next_notify().body)
    finally:
        owner_client.close()
        watcher_client.close()
    assert (left.state, left.version) == ("partial", 2)
    assert [(w.id, w.status, w.event) for w in left.watchers] == [
        (watcher.to_tag, "terminated", "timeout")
    ]


def test_pending_decisions_are_forgotten_after_pending_watcher_days(fast_clean: Stack) -> None:
    user = "forgetful-" + secrets.token_hex(3)
    long_ago = int(time.time()) - 31 * 86400  # PRESENCE_PENDING_WATCHER_DAYS is 30

    async def decisions(seed: bool) -> dict[str, str]:
        connection = await asyncpg.connect(fast_clean.db_url)
        try:
            if seed:
                await connection.executemany(
                    """INSERT INTO watchers
                           (p_user, p_domain, w_user, w_domain, subs_status, inserted_time)
                       VALUES ($1, 'example.com', $2, 'example.com', $3, $4)""",
                    [
                        (user, "old-pending", "pending", long_ago),
                        (user, "old-active", "active", long_ago),
                        (user, "new-pending", "pending", int(time.time())),
                    ],
                )
            rows = await connection.fetch(
                "SELECT w_user, subs_status FROM watchers WHERE p_user = $1", user
            )
            return {row["w_user"]: row["subs_status"] for row in rows}
        finally:
            await connection.close()

    assert len(asyncio.run(decisions(True))) == 3
    wait_until(
        lambda: "old-pending" not in asyncio.run(decisions(False)), 10, "the old pending decision"
    )
    assert asyncio.run(decisions(False)) == {"old-active": "active", "new-pending": "pending"}
