"""The adapters against the real PostgreSQL and Redis that `make test` starts."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from presence.runtime.locks import LockTimeout, ShardedLocks, lock_slot
from presence.settings import load
from presence.tables.watchers import PENDING_DUE
from presence_store.fencing import FencedOut, enter_fence
from presence_store.migrate import DEFAULT_SCHEMA_DIR, apply_migrations, load_migrations

from .conftest import base_env

pytestmark = pytest.mark.integration


@pytest.fixture
async def redis() -> Redis:
    client = Redis.from_url(os.environ.get("PRESENCE_REDIS_URL", "redis://127.0.0.1:16379/0"))
    yield client
    await client.aclose()


async def test_lock_serializes_holders_of_one_presentity(redis: Redis) -> None:
    prefix = f"test:{secrets.token_hex(4)}:"
    # Three "replicas" (each its own ShardedLocks) and several holders in each.
    replicas = [ShardedLocks(redis, 8, prefix=prefix) for _ in range(3)]
    inside: list[str] = []
    overlaps = 0

    async def critical(name: str) -> None:
        nonlocal overlaps
        async with replicas[int(name) % 3].hold("alice@example.com"):
            if inside:
                overlaps += 1
            inside.append(name)
            await asyncio.sleep(0.01)  # hold the lock while the others try
            inside.remove(name)

    await asyncio.gather(*(critical(str(i)) for i in range(10)))
    assert overlaps == 0


async def test_lock_lease_frees_a_dead_holders_lock(redis: Redis) -> None:
    prefix = f"test:{secrets.token_hex(4)}:"
    locks = ShardedLocks(redis, 8, lease_ms=200, prefix=prefix)
    # A holder that died: its key is there, nobody will release it.
    await redis.set(locks.key("bob@example.com"), "dead-holder", px=200)
    async with locks.hold("bob@example.com", timeout=5):
        assert await redis.get(locks.key("bob@example.com")) != b"dead-holder"


async def test_lock_timeout_and_holder_only_release(redis: Redis) -> None:
    locks = ShardedLocks(redis, 8, prefix=f"test:{secrets.token_hex(4)}:")
    key = locks.key("carol@example.com")
    await redis.set(key, "someone-else", px=10_000)
    with pytest.raises(LockTimeout):
        async with locks.hold("carol@example.com", timeout=0.1):
            pass
    assert await redis.get(key) == b"someone-else"  # not released by the loser


def test_lock_slot_is_stable_and_spreads() -> None:
    assert lock_slot("alice@example.com", 8) == lock_slot("ALICE@example.com", 8)
    slots = {lock_slot(f"user{i}@example.com", 8) for i in range(200)}
    assert slots == set(range(8))


async def test_migrations_apply_once_and_record_themselves(scratch_database) -> None:
    migrations = load_migrations(DEFAULT_SCHEMA_DIR, load(base_env()))
    first = await apply_migrations(scratch_database, migrations)
    assert first == [m.version for m in migrations]
    assert await apply_migrations(scratch_database, migrations) == []
    tables = {
        r["tablename"]
        for r in await scratch_database.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname='public'"
        )
    }
    assert {"presentity", "active_watchers", "watchers", "xcap_xml", "schema_migrations"} <= tables
    indexes = {
        r["indexname"] for r in await scratch_database.fetch("SELECT indexname FROM pg_indexes")
    }
    assert {
        "presentity_udee",
        "presentity_expires",
        "active_watchers_tt",
        "active_watchers_due",
        "active_watchers_expires",
        "watchers_udud",
        "watchers_pending",
        "xcap_xml_udd",
    } <= indexes


async def test_cleaner_finds_pending_watchers_without_reading_the_table(scratch_database) -> None:
    """The clean_period sweep's cost must not grow with the number of decisions: among
    many active ones, the due pending ones are found through the partial index."""
    await apply_migrations(scratch_database, load_migrations(DEFAULT_SCHEMA_DIR, load(base_env())))
    await scratch_database.execute(
        """INSERT INTO watchers (p_user, p_domain, w_user, w_domain, subs_status, inserted_time)
           SELECT 'p' || i, 'example.com', 'w' || i, 'example.com',
                  CASE WHEN i % 1000 = 0 THEN 'pending' ELSE 'active' END, i
           FROM generate_series(1, 20000) AS i"""
    )
    await scratch_database.execute("ANALYZE watchers")
    plan = "\n".join(
        row[0]
        for row in await scratch_database.fetch(
            f"EXPLAIN SELECT ctid FROM watchers WHERE {PENDING_DUE} LIMIT 500", 10_000
        )
    )
    assert "watchers_pending" in plan, plan
    assert "Seq Scan" not in plan, plan


async def test_concurrent_migrators_apply_each_migration_once(
    test_database: str, scratch_database
) -> None:
    url = (
        test_database.rsplit("/", 1)[0]
        + "/"
        + await scratch_database.fetchval("SELECT current_database()")
    )
    migrations = load_migrations(DEFAULT_SCHEMA_DIR, load(base_env()))
    connections = [await asyncpg.connect(url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(apply_migrations(c, migrations) for c in connections))
    finally:
        for connection in connections:
            await connection.close()
    assert sorted(v for result in results for v in result) == [m.version for m in migrations]


async def test_configured_table_names_are_used(scratch_database) -> None:
    settings = load({**base_env(), "PRESENCE_PRESENTITY_TABLE": "pres_custom"})
    await apply_migrations(scratch_database, load_migrations(DEFAULT_SCHEMA_DIR, settings))
    assert await scratch_database.fetchval("SELECT to_regclass('pres_custom')") == "pres_custom"


async def test_edited_migration_is_refused(scratch_database, tmp_path: Path) -> None:
    for source in DEFAULT_SCHEMA_DIR.glob("*.sql"):
        (tmp_path / source.name).write_text(source.read_text())
    settings = load(base_env())
    await apply_migrations(scratch_database, load_migrations(tmp_path, settings))
    first = sorted(tmp_path.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(ValueError, match="differs from the applied one"):
        await apply_migrations(scratch_database, load_migrations(tmp_path, settings))


async def test_fencing_refuses_a_holder_whose_lease_ran_out(
    redis: Redis, test_database: str
) -> None:
    """Holder A's lease runs out during a pause; B takes the lock and writes; A's late
    write is refused by the database."""
    prefix = f"test:{secrets.token_hex(4)}:"
    # Two replicas: each process has its own ShardedLocks over the same Redis keys.
    replica_a = ShardedLocks(redis, 8, lease_ms=100, prefix=prefix)
    replica_b = ShardedLocks(redis, 8, lease_ms=100, prefix=prefix)
    connection = await asyncpg.connect(test_database)
    try:
        async with replica_a.hold("dave@example.com") as stale:
            await asyncio.sleep(0.2)  # the pause: A's lease expires
            async with replica_b.hold("dave@example.com", timeout=1) as fresh:
                assert fresh.fence > stale.fence
                async with connection.transaction():
                    await enter_fence(connection, fresh)
            with pytest.raises(FencedOut):
                async with connection.transaction():
                    await enter_fence(connection, stale)
    finally:
        await connection.close()


async def test_fences_keep_growing_after_redis_loses_its_counter(redis: Redis) -> None:
    locks = ShardedLocks(redis, 8, prefix=f"test:{secrets.token_hex(4)}:")
    async with locks.hold("erin@example.com") as first:
        pass
    await redis.delete(locks.key("erin@example.com") + ":fence")  # as after a restart
    async with locks.hold("erin@example.com") as second:
        assert second.fence > first.fence
