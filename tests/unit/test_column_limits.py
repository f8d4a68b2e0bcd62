"""The column-limit table (presence.column_limits) agrees with the schema."""

from __future__ import annotations

import re
from pathlib import Path

from presence import column_limits

SCHEMA = Path(__file__).resolve().parents[2] / "schema"
_TABLE = re.compile(r"(?:CREATE|ALTER)\s+TABLE\s+(\S+)\s*(\(?)", re.IGNORECASE)
_COLUMN = re.compile(r"^\s*(?:ADD\s+COLUMN\s+)?([a-z_]+)\s+(varchar|char|text)\b(?:\((\d+)\))?",
                     re.IGNORECASE)  # fmt: skip


def schema_columns() -> dict[str, int | None]:
    """ "table.column" -> its varchar/char length (None for text), from every migration."""
    columns: dict[str, int | None] = {}
    for path in sorted(SCHEMA.glob("*.sql")):
        table = None
        for line in path.read_text().splitlines():
            line = line.split("--")[0]
            header = _TABLE.search(line)
            if header:
                table = header.group(1)
                continue
            column = _COLUMN.match(line)
            if table and column and column.group(1).upper() not in ("CONSTRAINT", "PRIMARY"):
                length = column.group(3)
                columns[f"{table}.{column.group(1)}"] = int(length) if length else None
            if line.rstrip().endswith(";"):
                table = None
    return columns


def test_the_schema_parser_finds_the_columns() -> None:
    columns = schema_columns()
    assert columns["{presentity_table}.username"] == 64
    assert columns["{active_watchers_table}.contact"] is None
    assert columns["{active_watchers_table}.flow"] == 255


def test_every_limit_is_the_length_of_its_columns() -> None:
    columns = schema_columns()
    for name, limit in column_limits.ALL.items():
        for column in limit.columns:
            assert column in columns, f"{name}: {column} is not in the schema"
            assert columns[column] == limit.length, (
                f"{name} is {limit.length} but {column} is varchar({columns[column]})"
            )


def test_every_bounded_column_the_edge_fills_has_a_limit() -> None:
    """The varchar columns filled from what a client sends are all in the table (the
    rest are filled by the services themselves: flows, edge ids, statuses)."""
    filled_by_services = {
        "{active_watchers_table}.status",
        "{active_watchers_table}.flow",
        "{active_watchers_table}.edge_id",
        "{active_watchers_table}.reason",
        "{active_watchers_table}.watcher_event",
        "{watchers_table}.subs_status",
        "{watchers_table}.reason",
        "{xcap_table}.username",  # XCAP's own checks (66 > USER)
        "location.received",
        "processed_requests.request_id",
        "lock_fences.lock",
        "credentials.ha1_md5",
        "credentials.ha1_sha256",
    }
    limited = {column for limit in column_limits.ALL.values() for column in limit.columns}
    bounded = {column for column, length in schema_columns().items() if length is not None}
    assert bounded - limited - filled_by_services == set()
