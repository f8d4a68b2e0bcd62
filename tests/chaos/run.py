"""`make chaos`: the fault suite. Run: python -m tests.chaos.run (scripts/chaos.sh).

It starts PostgreSQL, Redis and Kafka of its own (data under var/chaos, on free
ports: nothing of `make run` or `make test` is touched) and the three services,
drives PUBLISH and SUBSCRIBE from real UDP sockets (tests/chaos/load.py), and
while that load runs kills (SIGKILL) and restarts, in turn, sip-edge,
presence-store, notifier, Kafka, Redis and PostgreSQL. After each fault it stops
the load and checks the database and the NOTIFYs every watcher received against
the state each device last got 200 for. It prints one row per fault and exits 1
if anything was lost.

Lost, precisely:
- a request (a SIP client transaction) with no final response by Timer F (32 s,
  the request retransmitted meanwhile as RFC 3261 says); a 503/500 with
  Retry-After is an answer (the load retries after it, as a new request);
- a device whose last accepted state (the last PUBLISH answered 200) is not
  the state of its presentity in the database, or not the state shown by the
  newest NOTIFY of each of its watchers' dialogs once the system is quiet (a
  duplicate NOTIFY with the same state is fine; intermediate states superseded
  by newer ones need not be seen), or whose watcher's subscription is gone from
  the database.

What makes a loss visible: at each fault half the devices publish nothing more,
and their watchers refresh nothing more, so the state they had when the fault
struck must still reach every watcher (later traffic cannot paper over a lost
NOTIFY); and the first watcher of each presentity answers NOTIFYs only after a
second, so the edge always holds NOTIFYs queued behind one in flight.

For each dependency the suite also checks that the readiness of every service
that needs it turns false while it is down ("not ready after": seconds from the
kill), that requests meanwhile get 503 with Retry-After, and, for Kafka, that
the edge answers them within a second; only then is it restarted ("down": from
the kill to the restart; a service is restarted at once). "recovery" is the time
from the restart (the start command) until every service is ready again and a
PUBLISH sent after the restart got 200: start-up included.

Every wait is on a condition with a deadline; nothing is synchronized by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import asyncpg

from presence.settings import Settings
from tests.chaos.load import DOMAIN, Device, Recorder, Stats, Watcher, seqs
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
VAR = Path(os.environ.get("CHAOS_VAR", REPO / "var" / "chaos"))
LOG = VAR / "log"
SCRIPTS = REPO / "scripts"
PRESENTITIES = int(os.environ.get("CHAOS_PRESENTITIES", "10"))
WATCHERS_EACH = int(os.environ.get("CHAOS_WATCHERS", "3"))
# PUBLISHes answered 200 before a fault is injected, and again after recovery.
BEFORE = int(os.environ.get("CHAOS_BEFORE", "40"))
AFTER = int(os.environ.get("CHAOS_AFTER", "40"))
THINK = 0.4  # seconds a device waits between two states (pacing, not synchronization)
REFRESH_EVERY = 3.0  # seconds between a watcher's subscription refreshes
FAST_503 = 1.0  # seconds: the longest a request may wait for its 503 while Kafka is known down
SLOW_ANSWER = 1.0  # seconds the slow watcher of each presentity takes to answer a NOTIFY
SERVICES = {"presence-store": "presence_store", "notifier": "notifier", "sip-edge": "sip_edge"}
FAULTS = os.environ.get(
    "CHAOS_FAULTS", "sip-edge,presence-store,notifier,kafka,redis,postgres"
).split(",")
DEPENDENCIES = ("postgres", "redis", "kafka")
# Services whose readiness must turn false while a dependency is down.
DEPENDENTS = {
    "kafka": ("sip-edge", "presence-store", "notifier"),
    "redis": ("presence-store",),
    "postgres": ("presence-store", "notifier"),
}


def say(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


async def until(
    condition: Callable[[], Awaitable[bool] | bool], timeout: float, what: str
) -> float:
    """Poll a condition until it holds; its time in seconds, or TimeoutError naming it."""
    started = time.monotonic()
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().split(") ")[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@dataclass
class System:
    ports: dict[str, int]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    # --- dependencies, through the same scripts as `make run` ---------------------

    def script_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRESENCE_")}
        env.update(
            PRESENCE_VAR=str(VAR),
            PRESENCE_KAFKA_DIST=os.environ.get(
                "PRESENCE_KAFKA_DIST", str(REPO / "var" / "kafka-dist")
            ),
            PRESENCE_PG_PORT=str(self.ports["postgres"]),
            PRESENCE_REDIS_PORT=str(self.ports["redis"]),
            PRESENCE_KAFKA_PORT=str(self.ports["kafka"]),
            PRESENCE_KAFKA_CONTROLLER_PORT=str(self.ports["kafka-controller"]),
            PRESENCE_KAFKA_HEAP_OPTS="-Xms128m -Xmx512m",
        )
        return env

    async def script(self, name: str, action: str) -> None:
        with (LOG / "scripts.log").open("ab") as log:
            result = await asyncio.to_thread(
                subprocess.run,
                [str(SCRIPTS / f"{name}.sh"), action],
                env=self.script_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=180,
            )
        if result.returncode != 0:
            raise RuntimeError(f"scripts/{name}.sh {action} failed (see {LOG}/scripts.log)")

    def dependency_pid(self, name: str) -> int | None:
        try:
            return int((VAR / "run" / f"{name}.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    async def kill_dependency(self, name: str) -> None:
        pid = self.dependency_pid(name)
        assert pid is not None and pid_alive(pid), f"{name} is not running"
        # PostgreSQL's backends would keep its shared memory (and a restart) hostage.
        doomed = [pid, *children_of(pid)]
        for victim in doomed:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Gone from the process table, not just dead: a zombie still "runs" for the
        # start scripts' `kill -0`, and PostgreSQL refuses to start over its lock file.
        await until(
            lambda: not any(Path(f"/proc/{p}").exists() for p in doomed), 60, f"{name} to be reaped"
        )

    # --- services -------------------------------------------------------------------

    def service_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRESENCE_")}
        env.update(
            PRESENCE_DB_URL=f"postgresql://presence:presence@127.0.0.1:{self.ports['postgres']}/presence",
            PRESENCE_REDIS_URL=f"redis://127.0.0.1:{self.ports['redis']}/0",
            PRESENCE_KAFKA_BOOTSTRAP=f"127.0.0.1:{self.ports['kafka']}",
            PRESENCE_KAFKA_PARTITIONS="4",
            PRESENCE_KAFKA_NAMESPACE="chaos",
            PRESENCE_FORCE_ACTIVE="1",
            PRESENCE_SIP_PORT=str(self.ports["sip"]),
            PRESENCE_EDGE_HTTP_PORT=str(self.ports["sip-edge"]),
            PRESENCE_STORE_HTTP_PORT=str(self.ports["presence-store"]),
            PRESENCE_NOTIFIER_HTTP_PORT=str(self.ports["notifier"]),
            PRESENCE_EDGE_ID="chaos-edge",
            PRESENCE_LOG_LEVEL="INFO",
        )
        known = {f.name for f in fields(Settings)}
        for listener in ("sip_tls_port", "sip_ws_port", "sip_wss_port", "store_https_port"):
            if listener in known:  # not needed here, and their default ports may be taken
                env[f"PRESENCE_{listener.upper()}"] = "0"
        if "auth" in known:
            # The load's phones do not authenticate: what is tested here is faults.
            env["PRESENCE_AUTH"] = "none"
        return env

    def ready_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}/health/ready"

    async def ready(self, service: str) -> bool:
        return await asyncio.to_thread(http_status, self.ready_url(service)) == 200

    async def all_ready(self) -> bool:
        return all([await self.ready(name) for name in SERVICES])

    def _spawn(self, name: str) -> subprocess.Popen[bytes]:
        with (LOG / f"{name}.log").open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", SERVICES[name]],
                env=self.service_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def start_service(self, name: str) -> None:
        process = self.processes[name] = self._spawn(name)

        def up() -> Awaitable[bool] | bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode} (see {LOG}/{name}.log)"
                )
            return self.ready(name)

        await until(up, 90, f"{name} to be ready")

    async def kill_service(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(process.wait, 30)

    def exited(self) -> list[str]:
        return [
            f"{name} (exit {p.returncode})"
            for name, p in self.processes.items()
            if p.poll() is not None
        ]

    async def stop_services(self) -> dict[str, int | None]:
        codes: dict[str, int | None] = {}
        for name in ("sip-edge", "notifier", "presence-store"):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                codes[name] = None if process is None else process.returncode
                continue
            process.send_signal(signal.SIGTERM)
            try:
                codes[name] = await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = await asyncio.to_thread(process.wait, 10)
        return codes

    async def stop_dependencies(self) -> None:
        for name in ("kafka", "redis", "postgres"):
            try:
                await self.script(name, "stop")
            except Exception as error:  # best effort at the end
                say(f"stopping {name}: {error}")


@dataclass
class Row:
    fault: str
    stats: Stats
    lost_requests: int = 0
    lost_states: int = 0
    not_ready_s: float | None = None  # how soon readiness turned false (dependencies)
    down_s: float | None = None  # from the kill to the restart
    recovery_s: float | None = None  # from the restart to service again
    slowest_503_s: float | None = None  # slowest 503 once a Kafka outage is known
    problems: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.lost_requests + self.lost_states


class Load:
    """The devices and watchers, and the loops that drive them while `running`."""

    def __init__(self, server: tuple[str, int], recorder: Recorder) -> None:
        self.recorder = recorder
        self.devices = [Device(f"chaos-p{i}", server, recorder) for i in range(PRESENTITIES)]
        # The first watcher of each presentity is a slow one.
        self.watchers = [
            Watcher(
                f"chaos-w{i}-{j}",
                device.user,
                server,
                recorder,
                answer_delay=SLOW_ANSWER if j == 0 else 0.0,
            )
            for i, device in enumerate(self.devices)
            for j in range(WATCHERS_EACH)
        ]
        self.running = False
        # Devices that stop publishing at the fault: their last state must reach
        # every watcher although the fault may hit while it is on its way.
        self.quiet: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        for agent in [*self.devices, *self.watchers]:
            await agent.open()

    def close(self) -> None:
        for agent in [*self.devices, *self.watchers]:
            agent.close()

    async def subscribe_all(self) -> None:
        await asyncio.gather(*(watcher.subscribe() for watcher in self.watchers))

    def start(self) -> None:
        self.running = True
        self.quiet = set()
        rng = random.Random(7)
        self._tasks = [
            asyncio.create_task(self._publishing(d, rng.random() * THINK)) for d in self.devices
        ] + [
            asyncio.create_task(self._refreshing(w, rng.random() * REFRESH_EVERY))
            for w in self.watchers
        ]

    async def stop(self, timeout: float) -> None:
        """Let every agent finish what it is doing (each request until answered)."""
        self.running = False
        done, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        for task in done:
            task.result()
        if pending:
            raise TimeoutError(
                f"{len(pending)} agents still busy {timeout:.0f} s after the load stopped"
            )

    async def _publishing(self, device: Device, offset: float) -> None:
        await asyncio.sleep(offset)
        while self.running and device.user not in self.quiet:
            await device.publish_next()
            await asyncio.sleep(THINK)

    async def _refreshing(self, watcher: Watcher, offset: float) -> None:
        await asyncio.sleep(offset)
        while self.running and watcher.presentity not in self.quiet:
            await watcher.subscribe()
            await asyncio.sleep(REFRESH_EVERY)

    def go_quiet(self) -> None:
        """Half the devices publish nothing more in this phase, and their watchers
        refresh nothing (a refresh would bring a NOTIFY with the state anew)."""
        self.quiet = {device.user for device in self.devices[::2]}

    def published_ok_since(self, moment: float) -> int:
        return sum(
            1
            for started, _, status in self.recorder.phase.publishes
            if started >= moment and status == 200
        )


async def mismatches(load: Load, db_url: str) -> list[str]:
    """How the system's state differs from what the devices were last told (empty: none)."""
    found = []
    connection = await asyncpg.connect(db_url, timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT username, body FROM presentity WHERE domain = $1 AND expires > $2",
            DOMAIN,
            int(time.time()),
        )
        dialogs = {
            (r["callid"], r["to_tag"]): r["status"]
            for r in await connection.fetch(
                "SELECT callid, to_tag, status FROM active_watchers WHERE to_domain = $1", DOMAIN
            )
        }
    finally:
        await connection.close()
    stored: dict[str, set[int]] = {}
    for row in rows:
        stored.setdefault(row["username"], set()).update(seqs(row["body"]))
    by_user = {device.user: device for device in load.devices}
    for device in load.devices:
        if stored.get(device.user, set()) != {device.accepted}:
            found.append(
                f"{device.user}: database shows {sorted(stored.get(device.user, set()))}, "
                f"expected [{device.accepted}]"
            )
    for watcher in load.watchers:
        device = by_user[watcher.presentity]
        seen = watcher.last_seen()
        if seen != {device.accepted}:
            found.append(
                f"{watcher.user}: last NOTIFY shows {sorted(seen) if seen is not None else None}, "
                f"expected [{device.accepted}]"
            )
        dialog = watcher.dialog
        if dialog is None or dialogs.get((dialog.call_id, dialog.remote_tag)) != "active":
            found.append(f"{watcher.user}: no active subscription in the database")
    return found


async def converge(load: Load, db_url: str, timeout: float) -> list[str]:
    """Wait for the expected state; what still differs at the deadline."""
    remaining: list[str] = []

    async def settled() -> bool:
        nonlocal remaining
        remaining = await mismatches(load, db_url)
        return not remaining

    try:
        await until(settled, timeout, "the final state to show everywhere")
    except TimeoutError:
        pass
    return remaining


async def fault_phase(
    fault: str, system: System, load: Load, recorder: Recorder, db_url: str
) -> Row:
    stats = recorder.switch()
    row = Row(fault, stats)
    phase_start = time.monotonic()
    load.start()
    try:
        await until(
            lambda: load.published_ok_since(phase_start) >= BEFORE, 120, "load before the fault"
        )
        load.go_quiet()
        killed_at = time.monotonic()
        say(f"{fault}: SIGKILL")
        if fault in SERVICES:
            await system.kill_service(fault)
            restarted_at = time.monotonic()
            await system.start_service(fault)
        else:
            await system.kill_dependency(fault)

            # Down means down: readiness of what depends on it turns false, and requests
            # meanwhile are answered 503 (not left hanging).
            async def not_ready() -> bool:
                return not any([await system.ready(name) for name in DEPENDENTS[fault]])

            await until(not_ready, 30, f"readiness to turn false without {fault}")
            row.not_ready_s = time.monotonic() - killed_at
            await until(
                lambda: any(
                    status in (500, 503) and start >= killed_at
                    for start, _, status in stats.publishes
                ),
                30,
                f"a 503 to a request sent while {fault} is down",
            )
            if fault == "kafka":
                # The edge knows the bus is down: 503 at once, not after REPLY_DEADLINE.
                def bus_503s() -> list[float]:
                    return [
                        end - start
                        for start, end, status in stats.publishes
                        if status == 503 and start > killed_at + row.not_ready_s + 1
                    ]

                await until(lambda: len(bus_503s()) >= 5, 30, "503s while Kafka is down")
                row.slowest_503_s = max(bus_503s())
                if row.slowest_503_s > FAST_503:
                    row.problems.append(
                        f"a request sent while Kafka was down waited {row.slowest_503_s:.1f} s "
                        "for its 503"
                    )
            say(f"{fault}: restarting")
            restarted_at = time.monotonic()
            await system.script(fault, "start")
        row.down_s = restarted_at - killed_at

        async def recovered() -> bool:
            return load.published_ok_since(restarted_at) > 0 and await system.all_ready()

        await until(recovered, 120, f"recovery after {fault}")
        row.recovery_s = time.monotonic() - restarted_at
        say(f"{fault}: recovered {row.recovery_s:.1f} s after the restart")
        recovered_at = time.monotonic()
        await until(
            lambda: load.published_ok_since(recovered_at) >= AFTER, 120, "load after recovery"
        )
    except TimeoutError as error:
        row.problems.append(str(error))
    finally:
        try:
            await load.stop(timeout=90)
        except TimeoutError as error:
            row.problems.append(str(error))
    row.lost_requests = stats.timed_out
    remaining = await converge(load, db_url, 60)
    row.lost_states = len(remaining)
    row.problems += remaining
    row.problems += [f"{name} exited by itself" for name in system.exited()]
    for agent in [*load.devices, *load.watchers]:
        row.problems += agent.unexpected
        agent.unexpected.clear()
    return row


def table(rows: list[Row]) -> str:
    header = (
        "fault",
        "sent",
        "answered",
        "503/500",
        "lost",
        "not ready after",
        "down",
        "recovery",
    )
    lines = [header]
    for row in rows:
        lines.append(
            (
                f"SIGKILL {row.fault}",
                str(row.stats.sent),
                str(row.stats.answered),
                str(row.stats.unavailable),
                str(row.lost),
                "-" if row.not_ready_s is None else f"{row.not_ready_s:.1f} s",
                "-" if row.down_s is None else f"{row.down_s:.1f} s",
                "-" if row.recovery_s is None else f"{row.recovery_s:.1f} s",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        out.append("| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)) + " |")
        if index == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


async def clean_leftovers(system: System) -> None:
    """A previous run that was interrupted may have left its dependencies running."""
    for name in DEPENDENCIES:
        pid = system.dependency_pid(name)
        if pid is not None and pid_alive(pid):
            for victim in [pid, *children_of(pid)]:
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    for part in ("postgres", "redis", "kafka", "run"):
        shutil.rmtree(VAR / part, ignore_errors=True)
    LOG.mkdir(parents=True, exist_ok=True)
    for old in LOG.glob("*.log"):
        old.unlink()


async def main() -> int:
    began = time.monotonic()
    ports = {
        name: free_port()
        for name in ("postgres", "redis", "kafka", "kafka-controller", "sip", *SERVICES)
    }
    system = System(ports)
    await clean_leftovers(system)
    recorder = Recorder()
    load = Load(("127.0.0.1", ports["sip"]), recorder)
    rows: list[Row] = []
    db_url = system.service_env()["PRESENCE_DB_URL"]
    try:
        say(
            f"starting PostgreSQL :{ports['postgres']}, Redis :{ports['redis']}, "
            f"Kafka :{ports['kafka']} (data in {VAR})"
        )
        for name in DEPENDENCIES:
            await system.script(name, "start")
        migrate = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "presence_store.migrate"],
            env=system.service_env(),
            capture_output=True,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"migration failed: {migrate.stderr.decode()}")
        for name in SERVICES:
            await system.start_service(name)
        say(f"services ready; SIP on udp 127.0.0.1:{ports['sip']}; logs in {LOG}")
        await load.open()
        recorder.switch()
        await asyncio.wait_for(load.subscribe_all(), 60)
        say(f"{len(load.devices)} devices, {len(load.watchers)} watchers subscribed")
        for fault in FAULTS:
            row = await fault_phase(fault, system, load, recorder, db_url)
            rows.append(row)
            say(
                f"{fault}: sent {row.stats.sent}, answered {row.stats.answered}, lost {row.lost}"
                + (
                    f", slowest 503 while Kafka was down {row.slowest_503_s:.2f} s"
                    if row.slowest_503_s is not None
                    else ""
                )
                + (f"; problems: {row.problems}" if row.problems else "")
            )
        codes = await system.stop_services()
        bad_exits = {name: code for name, code in codes.items() if code != 0}
    finally:
        load.close()
        for process in system.processes.values():
            if process.poll() is None:
                process.kill()
        await system.stop_dependencies()
    duration = time.monotonic() - began
    print()
    print(table(rows))
    print()
    problems = [f"{row.fault}: {p}" for row in rows for p in row.problems]
    if bad_exits:
        problems.append(f"services did not exit 0 on SIGTERM: {bad_exits}")
    for problem in problems:
        print("PROBLEM", problem)
    totals = {
        "sent": sum(r.stats.sent for r in rows),
        "answered": sum(r.stats.answered for r in rows),
        "lost": sum(r.lost for r in rows),
    }
    print(f"make chaos: {len(rows)} faults, {json.dumps(totals)}, {duration:.0f} s")
    ok = not problems and totals["lost"] == 0 and len(rows) == len(FAULTS)
    print("PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
