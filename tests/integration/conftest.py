"""The integration tests' system: real PostgreSQL, Redis and Kafka (started by
`make test`), and the three services started here as real processes, on free
ports, with their own database and Kafka namespace."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from presence import settings as settings_module
from presence.bus import events
from presence.bus.topics import Topics
from presence_store.migrate import DEFAULT_SCHEMA_DIR, migrate
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
LOGS = REPO / "var" / "log" / "tests"
DEFAULT_DB_URL = "postgresql://presence:presence@127.0.0.1:15432/presence"
# Its own name per concurrent test run (PRESENCE_TEST_DATABASE), since each run drops it first.
TEST_DATABASE = os.environ.get("PRESENCE_TEST_DATABASE", "presence_test")

# The test stacks' XCAP secret (users' XCAP passwords derive from it); kept in the
# environment so that every import of this module agrees on it.
XCAP_SECRET = os.environ.setdefault("TEST_XCAP_SECRET", secrets.token_urlsafe(16))

SERVICE_MODULES = {
    "presence-store": "presence_store",
    "notifier": "notifier",
    "sip-edge": "sip_edge",
}


def wait_until(condition, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def eventually(
    fetch: Callable[[], Awaitable[object]],
    condition: Callable[[object], bool],
    what: str,
    timeout: float = 20,
) -> object:
    """The first value of `fetch()` that meets `condition`, polled under a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if condition(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {value!r}")
        await asyncio.sleep(0.1)


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


@dataclass
class ServiceProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    http_port: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Stack:
    env: dict[str, str]
    sip: tuple[str, int]
    db_url: str
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def http(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{self.processes[service].http_port}{path}"

    def start(self, name: str, replica: str = "", **overrides: str) -> ServiceProcess:
        """Start a service; a second replica of it needs a `replica` name of its own
        (and, for sip-edge, its own PRESENCE_SIP_PORT and PRESENCE_EDGE_ID)."""
        LOGS.mkdir(parents=True, exist_ok=True)
        key = f"{name}{replica}"
        log_path = LOGS / f"{key}-{self.env['PRESENCE_KAFKA_NAMESPACE']}.log"
        port_variable = f"PRESENCE_{name.split('-')[-1].upper()}_HTTP_PORT"
        env = dict(self.env)
        if replica:
            env[port_variable] = str(free_port())
            if name == "sip-edge":  # its own connection listeners too
                for transport in ("TLS", "WS", "WSS"):
                    env[f"PRESENCE_SIP_{transport}_PORT"] = str(free_port())
            elif name == "presence-store":
                env["PRESENCE_STORE_HTTPS_PORT"] = str(free_port())
        env.update(overrides)
        port = int(env[port_variable])
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", SERVICE_MODULES[name]],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        service = ServiceProcess(key, process, log_path, port)
        self.processes[key] = service
        url = self.http(key, "/health/ready")

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{service.log()}")
            return http_status(url) == 200 and process.poll() is None

        wait_until(ready, 60, f"{name} to be ready")
        return service

    def start_all(self) -> None:
        """The three services, each ready before the next starts (the edge last, so
        that no request arrives before the store can answer it)."""
        for name in ("presence-store", "notifier", "sip-edge"):
            self.start(name)

    def close(self) -> None:
        """Stop every service and delete this stack's Kafka topics."""
        for name in list(self.processes):
            self.stop(name)
        asyncio.run(
            delete_namespace_topics(
                self.env["PRESENCE_KAFKA_BOOTSTRAP"], self.env["PRESENCE_KAFKA_NAMESPACE"]
            )
        )

    def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        service = self.processes.pop(name)
        if service.process.poll() is None:
            service.process.send_signal(sig)
            try:
                service.process.wait(20)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait(5)
        return service.process.returncode


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRESENCE_")}
    admin_url = os.environ.get("PRESENCE_DB_URL", DEFAULT_DB_URL)
    env.update(
        PRESENCE_DB_URL=admin_url.rsplit("/", 1)[0] + "/" + TEST_DATABASE,
        PRESENCE_REDIS_URL=os.environ.get("PRESENCE_REDIS_URL", "redis://127.0.0.1:16379/0"),
        PRESENCE_KAFKA_BOOTSTRAP=os.environ.get("PRESENCE_KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
        PRESENCE_KAFKA_PARTITIONS="4",
        PRESENCE_LOG_LEVEL="INFO",
        PRESENCE_XCAP_SECRET=XCAP_SECRET,
        # SIP authentication is tested by its own stacks (test_authentication.py).
        PRESENCE_AUTH="none",
        # Admission at the edge depends on how fast the store answers on this machine
        # at this moment: tests of other features (1,000 PUBLISHes at 200/s among
        # them) must not turn into overload tests on a busy machine. Admission has its
        # own tests (test_overload.py), which set it.
        PRESENCE_EDGE_MIN_BACKLOG="100000",
    )
    return env


@pytest.fixture(scope="session")
def test_database() -> str:
    """A database of its own, migrated from scratch once per test session."""
    admin_url = os.environ.get("PRESENCE_DB_URL", DEFAULT_DB_URL)

    async def recreate() -> None:
        connection = await asyncpg.connect(admin_url)
        try:
            await connection.execute(f"DROP DATABASE IF EXISTS {TEST_DATABASE} WITH (FORCE)")
            await connection.execute(f"CREATE DATABASE {TEST_DATABASE}")
        finally:
            await connection.close()
        settings = settings_module.load(base_env())
        await migrate(settings, DEFAULT_SCHEMA_DIR)

    asyncio.run(recreate())
    return base_env()["PRESENCE_DB_URL"]


def make_stack(test_database: str, **overrides: str) -> Stack:
    env = base_env()
    env.update(
        PRESENCE_KAFKA_NAMESPACE="test-" + secrets.token_hex(4),
        PRESENCE_SIP_PORT=str(free_port()),
        PRESENCE_EDGE_HTTP_PORT=str(free_port()),
        PRESENCE_STORE_HTTP_PORT=str(free_port()),
        PRESENCE_NOTIFIER_HTTP_PORT=str(free_port()),
        # Listeners that run without a certificate (WS) or with one a test gives.
        PRESENCE_SIP_WS_PORT=str(free_port()),
        PRESENCE_SIP_TLS_PORT=str(free_port()),
        PRESENCE_SIP_WSS_PORT=str(free_port()),
        PRESENCE_STORE_HTTPS_PORT=str(free_port()),
        PRESENCE_EDGE_ID="edge-" + secrets.token_hex(3),
    )
    env.update(overrides)
    return Stack(env=env, sip=("127.0.0.1", int(env["PRESENCE_SIP_PORT"])), db_url=test_database)


async def delete_namespace_topics(bootstrap: str, namespace: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(namespace + ".")]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


@contextmanager
def paused(stack: Stack, name: str) -> Iterator[None]:
    """The service stopped with SIGSTOP (its connections open, nothing read) until the
    block ends; continued even when the block fails."""
    process = stack.processes[name].process
    process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.send_signal(signal.SIGCONT)


@contextmanager
def running_stack(test_database: str, **overrides: str) -> Iterator[Stack]:
    """A stack of its own with all three services running, closed afterwards."""
    stack = make_stack(test_database, **overrides)
    try:
        stack.start_all()
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="module")
def stack(test_database: str) -> Iterator[Stack]:
    """All three services, configured with force_active=1 (no privacy rules)."""
    with running_stack(test_database, PRESENCE_FORCE_ACTIVE="1") as running:
        yield running


@pytest.fixture
def three_notifiers(test_database: str) -> Iterator[Stack]:
    """A stack with three notifier replicas sharing the change events (force_active=1)."""
    stack = make_stack(test_database, PRESENCE_FORCE_ACTIVE="1")
    try:
        stack.start("presence-store")
        for replica in ("", "-b", "-c"):
            stack.start("notifier", replica=replica)
        stack.start("sip-edge")
        yield stack
    finally:
        stack.close()


@pytest.fixture
async def db(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(stack.db_url)
    try:
        yield connection
    finally:
        await connection.close()


def metric_samples(stack: Stack, service: str, name: str) -> dict[str, float]:
    """The samples of one metric family from a service's /metrics, by their labels
    ("" for a metric without labels)."""
    with urllib.request.urlopen(stack.http(service, "/metrics"), timeout=10) as answer:
        text = answer.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line[len(name) + 1 :].partition("} ")
            samples[labels] = float(value)
        elif line.startswith(name + " "):
            samples[""] = float(line.split()[1])
    return samples


async def bus_records(
    stack: Stack,
    topic: str,
    keep: Callable[[events.Event], bool],
    count: int,
    timeout: float,
) -> list[events.Event]:
    """The first `count` records of `topic` that `keep` accepts, from its beginning
    (fewer when the deadline passes first)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=stack.env["PRESENCE_KAFKA_BOOTSTRAP"], auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[events.Event] = []
    try:
        async with asyncio.timeout(timeout):
            async for record in consumer:
                event = events.decode(record.value or b"")
                if keep(event):
                    found.append(event)
                    if len(found) == count:
                        break
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return found


async def changes_on_bus(
    stack: Stack, kind: type[events.Event], user: str, count: int, timeout: float
) -> list[int]:
    """The versions of the first `count` change events of type `kind` about `user` on
    the stack's presence.changes topic (fewer when the deadline passes first)."""
    found = await bus_records(
        stack,
        Topics(stack.env["PRESENCE_KAFKA_NAMESPACE"]).changes,
        lambda e: isinstance(e, kind) and getattr(e, "username", None) == user,
        count,
        timeout,
    )
    return [getattr(change, "version", 0) for change in found]


@pytest.fixture
async def scratch_database(test_database: str):
    """An empty database of its own (migration tests, bulk loads that empty tables)."""
    name = "migrate_" + secrets.token_hex(4)
    admin = await asyncpg.connect(test_database)
    await admin.execute(f"CREATE DATABASE {name}")
    connection = await asyncpg.connect(test_database.rsplit("/", 1)[0] + "/" + name)
    try:
        yield connection
    finally:
        await connection.close()
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()
