"""SIP digest users (presence.tables.credentials): a password becomes the HA1 values
stored, never itself; `python -m presence_store.credentials` manages them."""

from __future__ import annotations

import time

import asyncpg

from presence.sip.digest import ha1
from presence.tables import credentials


async def set_password(
    connection: asyncpg.Connection | asyncpg.Pool, username: str, domain: str, password: str
) -> bool:
    """Add the user or change their password (its HA1s are stored, never the password);
    True when the user is new. The realm is the user's domain."""
    realm = domain.lower()
    return await credentials.store_ha1(
        connection,
        username,
        realm,
        ha1("MD5", username, realm, password),
        ha1("SHA-256", username, realm, password),
        int(time.time()),
    )


async def remove_user(
    connection: asyncpg.Connection | asyncpg.Pool, username: str, domain: str
) -> bool:
    return await credentials.remove(connection, username, domain.lower())


async def list_users(
    connection: asyncpg.Connection | asyncpg.Pool, domain: str | None, limit: int, offset: int
) -> list[tuple[str, str, int]]:
    """(username, domain, updated_at) in name order, a page at a time."""
    return await credentials.page(
        connection, None if domain is None else domain.lower(), limit, offset
    )


def main() -> None:
    """`python -m presence_store.credentials add|remove|list ...`: manage SIP digest users
    directly in the database (the admin API does the same over HTTP)."""
    import argparse
    import asyncio
    import getpass
    import sys

    from presence.settings import SettingsError, load

    parser = argparse.ArgumentParser(prog="python -m presence_store.credentials")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add a user or set a password (asked, or from stdin)")
    add.add_argument("aor", help="user@domain")
    add.add_argument("--password-stdin", action="store_true")
    remove = commands.add_parser("remove", help="remove a user")
    remove.add_argument("aor", help="user@domain")
    listing = commands.add_parser("list", help="list users")
    listing.add_argument("--domain")
    arguments = parser.parse_args()
    try:
        settings = load()
    except SettingsError as error:
        sys.exit(f"configuration error: {error}")

    async def run() -> str:
        connection = await asyncpg.connect(settings.db_url)
        try:
            if arguments.command == "list":
                users = await list_users(connection, arguments.domain, 10_000, 0)
                return "\n".join(f"{user}@{domain}" for user, domain, _ in users)
            user, at, domain = arguments.aor.removeprefix("sip:").rpartition("@")
            if not at or not user or not domain:
                sys.exit(f"{arguments.aor}: expected user@domain")
            if arguments.command == "remove":
                found = await remove_user(connection, user, domain)
                return "removed" if found else "no such user"
            if arguments.password_stdin:
                password = sys.stdin.readline().rstrip("\n")
            else:
                password = getpass.getpass(f"password for {user}@{domain}: ")
            if not password:
                sys.exit("empty password refused")
            created = await set_password(connection, user, domain, password)
            return "added" if created else "password changed"
        finally:
            await connection.close()

    print(asyncio.run(run()))


if __name__ == "__main__":
    main()
