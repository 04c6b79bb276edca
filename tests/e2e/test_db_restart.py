"""PostgreSQL restarted while steps run: the engine reconnects by itself and loses nothing.

A dedicated embedded server (not the session one) is stopped with `pg_ctl stop -m fast`
while many instances are in flight; the test waits until steps have finished their work with
the server down (their commits must now wait), then starts the server again on the same data
directory. Every instance must end `done` with each step's effect applied exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import msgspec
import pytest
from e2e_support import Unretrieved, eventually

import gendurable as gd
from gendurable.embedded import EmbeddedPostgres
from gendurable.testing import TelemetryRecorder
from polling import unique_name
from recordings import Gate, recorded

pytestmark = [pytest.mark.crash, pytest.mark.database]

COUNT = 120
SCHEMA = "restart"
BODIES: list[str] = recorded([])
"""One entry per step body that ran to its end (in memory: it works with the server down)."""
HELD: list[str] = recorded([])
"""One entry per step body that found the gate closed and waited at it."""
GATE = Gate(open=True)
"""Open: step bodies run through. Closed by the test to hold bodies while the server stops."""


@gd.workflow(name="e2e.restart.counter")
class Counter:
    """Three steps, each doing a little async work and counting itself in the state."""

    class State(msgspec.Struct):
        n: int = 0
        trail: list[str] = msgspec.field(default_factory=list)

    async def work(self, state: State, step: str) -> None:
        await asyncio.sleep(0.01)  # stands for a call to some service
        if not GATE.is_set():
            HELD.append(step)
            await GATE.wait()
        state.n += 1
        state.trail.append(step)
        BODIES.append(step)

    @gd.step(start=True)
    async def one(self, state: State, ctx: gd.Context) -> gd.Outcome:
        await self.work(state, "one")
        return gd.goto(self.two)

    @gd.step
    async def two(self, state: State, ctx: gd.Context) -> gd.Outcome:
        await self.work(state, "two")
        return gd.goto(self.three)

    @gd.step
    async def three(self, state: State, ctx: gd.Context) -> gd.Outcome:
        await self.work(state, "three")
        return gd.done({"n": state.n, "trail": state.trail})


@dataclass
class Server:
    """A dedicated embedded PostgreSQL that the test may stop and start with `pg_ctl`."""

    embedded: EmbeddedPostgres
    dsn: str
    data: Path
    pg_ctl: Path
    socket_dir: str
    restarted: bool = False

    def _pg_ctl(self, *args: str) -> None:
        # pg_ctl refuses to run as root: run it as the cluster's owner.
        owner = self.data.stat().st_uid
        user = owner if os.geteuid() == 0 and owner != 0 else None
        subprocess.run(
            [str(self.pg_ctl), *args, "-D", str(self.data), "-w", "-t", "30"],
            user=user,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=True,
            timeout=60,
        )

    async def stop(self) -> None:
        """Fast shutdown: open transactions are rolled back, connections are cut."""
        self.restarted = True
        await asyncio.to_thread(self._pg_ctl, "stop", "-m", "fast")

    async def start(self) -> None:
        """Start on the same data directory and socket, as the embedded server did."""
        options = f'-h "" -k {self.socket_dir}'
        await asyncio.to_thread(self._pg_ctl, "start", "-l", self.log, "-o", options)

    async def crash_restart(self) -> None:
        """Immediate stop (like a crash: recovery at start), then start with the same options."""
        self.restarted = True
        await asyncio.to_thread(self._pg_ctl, "restart", "-m", "immediate", "-l", self.log)

    @property
    def log(self) -> str:
        return str(self.data / "restart.log")


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    embedded = EmbeddedPostgres()
    dsn = await embedded.astart()
    assert embedded.data_dir is not None
    assert embedded.pid is not None
    pg_ctl = Path(os.readlink(f"/proc/{embedded.pid}/exe")).parent / "pg_ctl"
    socket_dir = parse_qs(urlsplit(dsn).query)["host"][0]
    srv = Server(embedded, dsn, embedded.data_dir, pg_ctl, socket_dir)
    try:
        yield srv
    finally:
        if srv.restarted:
            # The package tracks the first postmaster only; stop the restarted one ourselves
            # (it may already be down if the test failed half-way).
            with contextlib.suppress(subprocess.CalledProcessError):
                await asyncio.to_thread(srv._pg_ctl, "stop", "-m", "immediate")
        await embedded.astop()


async def done_count(dsn: str) -> int:
    """Instances done so far; 0 while the server cannot be reached."""
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return 0
    try:
        return int(
            await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.instances WHERE status = 'done'")
        )
    finally:
        await conn.close()


def counter_engine(server: Server, **options: Any) -> gd.Engine:
    options = {
        "queues": {"default": 8},
        "lease": timedelta(seconds=3),
        "reap_interval": timedelta(seconds=0.5),
        "poll_interval": timedelta(seconds=0.5),
        "statement_timeout": timedelta(seconds=5),
        **options,
    }
    return gd.Engine(
        server.dsn, workflows=[Counter], name=unique_name("restart"), schema=SCHEMA, **options
    )


async def underway() -> bool:
    return len(BODIES) >= COUNT // 2


async def run_through(server: Server, disrupt: Callable[[], Awaitable[None]]) -> TelemetryRecorder:
    """Run COUNT instances on a fresh engine, `disrupt()` the server midway, await all done."""
    engine = counter_engine(server)
    events = TelemetryRecorder().attach(engine)
    await engine.start()
    try:
        await Counter.start_many([Counter.new(key=f"c{i}") for i in range(COUNT)])
        await eventually(underway, timeout=30, what="half the steps run")
        await disrupt()
        assert len(BODIES) < 3 * COUNT, "all work ended before the disruption: nothing tested"

        async def all_done() -> bool:
            return await done_count(server.dsn) == COUNT

        await eventually(all_done, timeout=60, interval=0.1, what="every instance done")
    finally:
        async with asyncio.timeout(30):
            await engine.stop(timeout=5)
    return events


async def assert_all_done_once(server: Server, events: TelemetryRecorder) -> None:
    conn = await asyncpg.connect(server.dsn)
    try:
        rows = await conn.fetch(
            f"SELECT key, status::text, result::text, attempt, rescued, locked_by "
            f"FROM {SCHEMA}.instances ORDER BY id"
        )
    finally:
        await conn.close()
    assert len(rows) == COUNT
    assert {r["status"] for r in rows} == {"done"}
    assert {r["locked_by"] for r in rows} == {None}
    for r in rows:
        # Each step's committed effect exactly once: a lost or doubled outcome shows here.
        assert msgspec.json.decode(r["result"]) == {"n": 3, "trail": ["one", "two", "three"]}, r
    # Re-runs are allowed (at least once), but only of steps the disruption interrupted: at
    # most the 8 in flight, each rescued at most once.
    assert 0 <= len(BODIES) - 3 * COUNT <= 8
    assert sum(r["rescued"] for r in rows) == len(events.of(("reaper", "rescued")))
    assert max(r["attempt"] for r in rows) <= 1


@pytest.mark.timeout(90)
async def test_db_restart_engine_reconnects_and_finishes_all_work_once(server: Server) -> None:
    async def stop_while_steps_run_then_start() -> None:
        # Hold the running steps mid-work, stop the server, then let them finish their work:
        # their commits (and the next claims, heartbeats, reaper runs) meet a dead server.
        GATE.clear()

        async def slots_held() -> bool:
            return len(HELD) >= 6

        await eventually(slots_held, timeout=10, what="running steps held at the gate")
        await server.stop()
        at_stop = len(BODIES)
        GATE.set()

        async def finished_while_down() -> bool:
            return len(BODIES) >= at_stop + len(HELD)

        await eventually(finished_while_down, timeout=10, what="held steps ending while down")
        await server.start()

    events = await run_through(server, stop_while_steps_run_then_start)

    await assert_all_done_once(server, events)


@pytest.mark.timeout(90)
async def test_db_restart_crash_restart_mid_statement_loses_nothing(server: Server) -> None:
    # No gate: claims, commits and heartbeats are cut wherever they happen to be.
    events = await run_through(server, server.crash_restart)

    await assert_all_done_once(server, events)


class StoreRetries(logging.Handler):
    """Counts the store's "database unavailable; retrying" records logged by some tasks (at
    DEBUG but for the few that report the outage: add it to a logger set to DEBUG)."""

    def __init__(self, *task_names: str) -> None:
        super().__init__(logging.DEBUG)
        self.task_names = task_names
        self.seen = 0

    def emit(self, record: logging.LogRecord) -> None:
        task = asyncio.current_task()
        self.seen += task is not None and task.get_name() in self.task_names


async def stop_within(server: Server, engine: gd.Engine, timeout: float, bound: float) -> None:
    """`engine.stop(timeout)` must return within `bound` seconds with the server down.

    When it does not, the server is started again so that the engine can finish stopping
    (the test then fails with the time it had taken).
    """
    started = time.monotonic()
    stopping = asyncio.create_task(engine.stop(timeout=timeout))
    done, _ = await asyncio.wait({stopping}, timeout=bound)
    took = time.monotonic() - started
    if not done:
        await server.start()
        async with asyncio.timeout(70):
            await stopping
    assert done, f"engine.stop(timeout={timeout}) had not returned after {took:.1f}s"
    stopping.result()


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_db_restart_stop_with_steps_running_while_database_is_down_keeps_its_timeout(
    server: Server,
) -> None:
    engine = counter_engine(server)
    await engine.start()
    GATE.clear()  # every slot holds a running step: nothing is claimed meanwhile
    await Counter.start_many([Counter.new(key=f"c{i}") for i in range(COUNT)])

    async def slots_held() -> bool:
        return len(HELD) >= 8

    await eventually(slots_held, timeout=10, what="running steps held at the gate")
    await server.stop()

    # The held steps are cancelled at the timeout; their claims cannot be released (the
    # server is down), so stop gives up on them and their leases expire as after a crash.
    await stop_within(server, engine, timeout=1, bound=10)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_db_restart_stop_with_commits_retrying_while_database_is_down_keeps_its_timeout(
    server: Server, unretrieved_errors: Unretrieved
) -> None:
    engine = counter_engine(server)
    await engine.start()
    GATE.clear()
    await Counter.start_many([Counter.new(key=f"c{i}") for i in range(COUNT)])

    async def slots_held() -> bool:
        return len(HELD) >= 8

    await eventually(slots_held, timeout=10, what="running steps held at the gate")
    await server.stop()
    GATE.set()

    async def work_done_while_down() -> bool:
        return len(BODIES) >= 8

    # The steps end their work; their outcomes now wait in the store's retry loop.
    await eventually(work_done_while_down, timeout=10, what="steps ending while down")

    await stop_within(server, engine, timeout=1, bound=10)

    # The abandoned commits fail once the pool is gone; nobody may leave that failure
    # unretrieved (asyncio would report it whenever the garbage collector runs).
    assert unretrieved_errors.take() == []


@pytest.mark.timeout(90)
async def test_db_restart_stop_while_a_statement_retries_against_a_dead_database_keeps_its_timeout(
    server: Server,
) -> None:
    # Nothing runs; the engine's poller (task "gendurable:poller") asks every 0.1 s which
    # queues hold due rows, and wakes the scheduler loop (task "gendurable:default").
    engine = counter_engine(server, poll_interval=timedelta(seconds=0.1))
    await engine.start()
    retries = StoreRetries("gendurable:default", "gendurable:poller")
    store_log = logging.getLogger("gendurable.store")
    level = store_log.level
    store_log.setLevel(logging.DEBUG)
    store_log.addHandler(retries)
    try:
        await server.stop()

        async def claim_retrying() -> bool:
            return retries.seen > 0

        await eventually(claim_retrying, timeout=10, what="a statement retrying")
    finally:
        store_log.removeHandler(retries)
        store_log.setLevel(level)

    await stop_within(server, engine, timeout=1, bound=10)
