"""Apply the versioned schema migrations in schema/ to PostgreSQL, in order, once each.

    python -m presence_store.migrate [--schema-dir DIR]

Files are named NNNN_description.sql; names in braces ({presentity_table}, ...)
are replaced by the configured table names. Each file runs in one transaction
with its record in schema_migrations, under an advisory lock, so concurrent
runs (several store replicas starting at once) apply each migration once.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from presence import settings as settings_module
from presence.runtime.db import DatabaseUnavailable, connect
from presence.settings import Settings

DEFAULT_SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schema"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant fits; it only has to be the same for every migrator.
_ADVISORY_LOCK_KEY = 0x5052_4553  # "PRES"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(schema_dir: Path, settings: Settings) -> list[Migration]:
    tables = {
        "presentity_table": settings.presentity_table,
        "active_watchers_table": settings.active_watchers_table,
        "watchers_table": settings.watchers_table,
        "xcap_table": settings.xcap_table,
    }
    migrations = []
    for path in sorted(schema_dir.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise ValueError(f"{path}: migration files are named NNNN_description.sql")
        sql = path.read_text(encoding="utf-8").format(**tables)
        migrations.append(Migration(int(match[1]), match[2], sql))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"{schema_dir}: two migrations share a version number")
    return migrations


async def apply_migrations(
    connection: asyncpg.Connection, migrations: list[Migration]
) -> list[int]:
    """Apply what is not yet recorded; returns the versions applied by this call."""
    applied_now: list[int] = []
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _ADVISORY_LOCK_KEY)
        await connection.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        recorded = {
            row["version"]: row["checksum"]
            for row in await connection.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for migration in migrations:
            if migration.version in recorded:
                if recorded[migration.version] != migration.checksum:
                    # An applied migration was edited, or table names changed since: never
                    # silently diverge from what the database holds.
                    raise ValueError(
                        f"migration {migration.version:04d}_{migration.name} differs from the "
                        "applied one; add a new migration instead of editing an old one"
                    )
                continue
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied_now.append(migration.version)
    return applied_now


async def migrate(settings: Settings, schema_dir: Path) -> list[int]:
    migrations = load_migrations(schema_dir, settings)
    connection = await connect(settings.db_url)
    try:
        return await apply_migrations(connection, migrations)
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schema-dir", type=Path, default=DEFAULT_SCHEMA_DIR)
    args = parser.parse_args()
    try:
        settings = settings_module.load()
        applied = asyncio.run(migrate(settings, args.schema_dir))
    except (settings_module.SettingsError, DatabaseUnavailable, ValueError) as error:
        sys.exit(f"migrate: {error}")
    print(
        f"schema: applied {', '.join(f'{v:04d}' for v in applied)}"
        if applied
        else "schema: up to date"
    )


if __name__ == "__main__":
    main()
