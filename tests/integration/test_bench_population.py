"""The population `make bench` loads for its scale part (bench/scale_bench.py load) is
what the store itself writes: a loaded publication, subscription and watcher decision
have the same columns, formats and states as the rows of a real PUBLISH and SUBSCRIBE
applied by the store's own code, so the services treat them as live."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import asyncpg
import pytest

from presence import settings as settings_module
from presence.bus import events
from presence_store.migrate import DEFAULT_SCHEMA_DIR, apply_migrations, load_migrations
from presence_store.publish_store import apply_publish
from presence_store.subscribe_store import apply_subscribe

from .conftest import base_env

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from publish_bench import pidf
from scale_bench import load

pytestmark = pytest.mark.integration

SIZE = 40


def shape(row: asyncpg.Record, *left_out: str) -> dict[str, object]:
    """What must match between a loaded and a real row: which columns are NULL, and
    the kind of each value (lists element by element)."""

    def kind(value: object) -> object:
        if isinstance(value, list):
            return [kind(v) for v in value]
        return None if value is None else type(value).__name__

    return {k: kind(v) for k, v in row.items() if k not in ("id", *left_out)}


@pytest.fixture
async def loaded(test_database: str, scratch_database: asyncpg.Connection) -> asyncpg.Connection:
    settings = settings_module.load({**base_env(), "PRESENCE_FORCE_ACTIVE": "1"})
    await apply_migrations(scratch_database, load_migrations(DEFAULT_SCHEMA_DIR, settings))
    name = await scratch_database.fetchval("SELECT current_database()")
    await load(test_database.rsplit("/", 1)[0] + "/" + name, SIZE, "bench-edge", 9)
    now = int(time.time())
    user = "real"
    body = pidf(f"{user}@example.com").decode()
    async with scratch_database.transaction():
        await apply_publish(
            scratch_database,
            events.PublishRequest(
                request_id="req-publish", edge_id="bench-edge", received_at=now,
                username=user, domain="example.com", event="presence", expires=3600,
                if_match=None, content_type="application/pidf+xml", body=body,
                flow="udp:198.51.100.7:5062",
            ),
            settings, now,
        )  # fmt: skip
        await apply_subscribe(
            scratch_database,
            events.SubscribeRequest(
                request_id="req-subscribe", edge_id="bench-edge", received_at=now,
                username=user, domain="example.com", event="presence", event_id=None,
                expires=3600, accept=[], call_id="c0ffee@127.0.0.1",
                from_uri="sip:watcher@example.com", from_tag="a1b2c3d4",
                to_uri=f"sip:{user}@example.com", to_tag=None, cseq=1,
                contact="sip:watcher@127.0.0.1:9", record_route=[], flow="udp:127.0.0.1:9",
            ),
            settings, now,
        )  # fmt: skip
    return scratch_database


async def test_loaded_publications_are_what_an_initial_publish_stores(
    loaded: asyncpg.Connection,
) -> None:
    real = await loaded.fetchrow("SELECT * FROM presentity WHERE username = 'real'")
    assert await loaded.fetchval("SELECT count(*) FROM presentity") == SIZE + 1
    for row in await loaded.fetch("SELECT * FROM presentity WHERE username <> 'real'"):
        user = row["username"]
        assert shape(row) == shape(real)
        assert (row["prev_etag_expires"], row["event"]) == (real["prev_etag_expires"], "presence")
        assert row["body"] == real["body"].replace("real@", f"{user}@")
        assert row["device_marks"] == [m.replace("real@", f"{user}@") for m in real["device_marks"]]
        assert len(row["etag"]) == len(real["etag"])
        assert row["device"].startswith("flow:udp:") and real["device"].startswith("flow:udp:")
        assert row["expires"] > int(time.time()) + 500


async def test_loaded_subscriptions_are_what_an_accepted_subscribe_and_its_notify_leave(
    loaded: asyncpg.Connection,
) -> None:
    real = await loaded.fetchrow("SELECT * FROM active_watchers WHERE to_user = 'real'")
    rows = await loaded.fetch("SELECT * FROM active_watchers WHERE to_user <> 'real'")
    assert len(rows) == SIZE
    for row in rows:
        assert shape(row) == shape(real)
        assert row["remote_cseq"] == real["remote_cseq"]
        # After the first NOTIFY (its CSeq allocated in the SUBSCRIBE's transaction).
        assert (
            (row["local_cseq"], row["version"]) == (real["local_cseq"], real["version"]) == (1, 1)
        )
        for same in ("event", "status", "watcher_event", "edge_id", "to_domain"):
            assert row[same] == real[same], same
        assert len(row["to_tag"]) == len(real["to_tag"])
        assert row["to_tag"][:2] == real["to_tag"][:2]  # to_tag_pref
        assert row["local_uri"] == f"sip:{row['to_user']}@example.com"
        assert row["remote_uri"] == f"sip:{row['from_user']}@example.com"
        assert row["contact"].endswith("@127.0.0.1:9") and row["flow"] == "udp:127.0.0.1:9"
        assert row["expires"] > int(time.time()) + 1700
    decisions = await loaded.fetch("SELECT * FROM watchers")
    real_decision = next(d for d in decisions if d["p_user"] == "real")
    assert len(decisions) == SIZE + 1
    for decision in decisions:
        assert shape(decision) == shape(real_decision)
        assert decision["subs_status"] == real_decision["subs_status"] == "active"
    pairs = {(r["to_user"], r["from_user"]) for r in rows}
    assert pairs == {(d["p_user"], d["w_user"]) for d in decisions if d["p_user"] != "real"}
