"""Name resolution for NOTIFY next hops, off the event loop and bounded.

getaddrinfo blocks; asyncio runs it in its default executor, shared with
everything else and without a time limit. Here it runs in a pool of its own
(`workers` threads), each lookup is bounded by `timeout` (the caller gets
ResolveTimeout; the thread finishes its lookup in the background, and the pool's
size bounds how many such threads there can be), and identical lookups under
way are made once: every caller awaits the same answer.
"""

from __future__ import annotations

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sip_edge.notify_targets import choose_address, ip_literal

Address = tuple[str, int]


class ResolveTimeout(TimeoutError):
    """The name did not resolve in time."""


class Resolver:
    def __init__(self, workers: int, timeout: float) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="resolver")
        self._timeout = timeout
        self._pending: dict[Address, asyncio.Future[list[Any]]] = {}

    def __len__(self) -> int:
        """Lookups under way."""
        return len(self._pending)

    async def resolve(self, host: str, port: int) -> Address:
        """An IP address and port for host (A/AAAA records only: no SRV or NAPTR).
        Raises ResolveTimeout, or OSError when the name does not resolve."""
        if ip_literal(host) is not None:
            return host.strip("[]"), port
        key = (host.lower(), port)
        lookup = self._pending.get(key)
        if lookup is None:
            loop = asyncio.get_running_loop()
            lookup = loop.run_in_executor(
                self._pool, socket.getaddrinfo, host, port, 0, socket.SOCK_DGRAM
            )
            self._pending[key] = lookup
            lookup.add_done_callback(lambda done: self._finished(key, done))
        try:
            infos = await asyncio.wait_for(asyncio.shield(lookup), self._timeout)
        except TimeoutError:
            raise ResolveTimeout(f"resolving {host} took over {self._timeout:g} s") from None
        except socket.gaierror as error:
            raise OSError(f"cannot resolve {host}: {error.strerror}") from None
        return choose_address(infos)

    def _finished(self, key: Address, lookup: asyncio.Future[list[Any]]) -> None:
        self._pending.pop(key, None)
        if not lookup.cancelled():
            lookup.exception()  # retrieved: every caller may have given up on it

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
