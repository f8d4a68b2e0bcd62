"""Process scaffolding shared by the three services: settings, logging, signals, HTTP.

A service supplies `async def body(settings, stopping)`: it starts its I/O, serves
until `stopping` is set (SIGTERM or SIGINT), then shuts down in order. Problems a
user can fix (bad setting, unreachable dependency, port taken) end the process
with one line on stderr and a non-zero exit, not a traceback.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable

import uvicorn
import uvloop
from starlette.types import ASGIApp

from presence import settings as settings_module
from presence.runtime import logs
from presence.runtime.cache import CacheUnavailable
from presence.runtime.db import DatabaseUnavailable
from presence.runtime.http_limits import RefusedBodies
from presence.runtime.kafka import BusUnavailable
from presence.settings import Settings

ServiceBody = Callable[[Settings, asyncio.Event], Awaitable[None]]


class StartupError(RuntimeError):
    """A problem that stops the service at start, said in one line."""


_FIXABLE = (StartupError, BusUnavailable, DatabaseUnavailable, CacheUnavailable)


def bind_socket(host: str, port: int, kind: int, variable: str) -> socket.socket:
    """A bound socket, or a StartupError that names the setting to change."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
        raise StartupError(
            f"cannot listen on {host}:{port}/{proto}: {error.strerror}; "
            f"set {variable} to a free port"
        ) from None
    return sock


async def serve_http(
    app: ASGIApp, host: str, port: int, variable: str, tls: ssl.SSLContext | None = None
) -> uvicorn.Server:
    """Start uvicorn on an already-bound socket (so a taken port is a clear error);
    HTTPS with `tls` (presence.runtime.tls.server_context)."""
    sock = bind_socket(host, port, socket.SOCK_STREAM, variable)
    # log_config=None: uvicorn's few lines go through ours (JSON, correlation ids).
    config = uvicorn.Config(
        RefusedBodies(app),
        log_level="warning",
        access_log=False,
        lifespan="off",
        log_config=None,
        ssl_context_factory=(lambda _config, _default: tls) if tls is not None else None,
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # ours handle them
    asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    return server


def configure_logging(service: str, settings: Settings) -> None:
    """JSON lines with correlation ids, or text on a terminal (presence.runtime.logs)."""
    logs.configure(service, settings.log_level, fmt=settings.log_format, levels=settings.log_levels)


def run(service: str, body: ServiceBody) -> None:
    try:
        settings = settings_module.load()
    except settings_module.SettingsError as error:
        sys.exit(f"{service}: configuration error: {error}")
    configure_logging(service, settings)
    loop_factory = uvloop.new_event_loop if settings.event_loop == "uvloop" else None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_run_until_signal(settings, body))
    except _FIXABLE as error:
        sys.exit(f"{service}: {error}")
    except KeyboardInterrupt:
        pass


async def _run_until_signal(settings: Settings, body: ServiceBody) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    # `kill -USR1 <pid>`: where every task waits, for a service that seems stuck.
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
    await body(settings, stopping)


def _dump_tasks() -> None:
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)
