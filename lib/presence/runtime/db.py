"""PostgreSQL connections (asyncpg), with one clear error when the server cannot be reached."""

from __future__ import annotations

import asyncpg


class DatabaseUnavailable(RuntimeError):
    pass


def _describe(url: str, error: BaseException) -> str:
    # Never print the password that the URL may carry.
    safe_url = url.split("@", 1)[-1] if "@" in url else url
    return (
        f"cannot connect to PostgreSQL at {safe_url}: {error} "
        "(is it running? `make run` starts one)"
    )


async def connect(url: str, timeout: float = 10.0) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=timeout)
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        raise DatabaseUnavailable(_describe(url, error)) from None


async def _keep_session(connection: asyncpg.Connection) -> None:
    """The pool's reset on release, without asyncpg's default reset query.

    That query (advisory unlock all, CLOSE ALL, UNLISTEN *, RESET ALL) is one more
    round trip per release, and the services leave none of that state behind: their
    advisory locks are transaction-scoped, they declare no cursors, listen to no
    channel and set no session variable. A transaction still open at release is
    rolled back by asyncpg before this is called, as before."""


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    try:
        return await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, timeout=10.0, reset=_keep_session
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        raise DatabaseUnavailable(_describe(url, error)) from None


async def database_ready(pool: asyncpg.Pool) -> bool:
    return await pool.fetchval("SELECT 1") == 1
