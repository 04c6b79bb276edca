"""Steps that block the event loop for longer than a heartbeat interval.

An `async def` step calling `time.sleep` stops the loop: no heartbeat, no commit, no other
step. The engine's watchdog warns while it happens, naming the step, the instance and the
blocking line, and emits `loop.blocked` when the loop is back. A block shorter than what is
left of the lease (at least two thirds of it) loses nothing: the claim is extended as soon
as the loop runs again. A plain `def` step runs in a thread and blocks nothing.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from fault_support import Engines, Rows

import gendurable as gd
from gendurable.testing import TelemetryRecorder
from recordings import recorded

LEASE = timedelta(seconds=4.5)  # heartbeat (and watchdog threshold) every 1.5 s
BLOCK = 2.2  # longer than a heartbeat interval, shorter than two thirds of the lease
SHORT_LEASE = timedelta(seconds=1.5)
RUNS: list[str] = recorded([])


@gd.workflow(name="loopblock.sleepy")
class Sleepy:
    @gd.step(start=True)
    async def nap(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        RUNS.append("nap")
        time.sleep(BLOCK)  # noqa: ASYNC251 -- the fault under test: a blocking async step
        return gd.done("rested")


@gd.workflow(name="loopblock.threaded")
class Threaded:
    @gd.step(start=True)
    def nap(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        RUNS.append("threaded")
        time.sleep(SHORT_LEASE.total_seconds() * 1.5)  # past the lease, in a worker thread
        return gd.done("rested")


@pytest.fixture
def watchdog_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="gendurable.watchdog")
    return caplog


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gendurable.watchdog"]


async def test_fault_loop_blocked_by_a_step_warns_naming_it_and_keeps_the_claim(
    engines: Engines,
    gendurable_schema: str,
    db: asyncpg.Connection,
    watchdog_log: pytest.LogCaptureFixture,
) -> None:
    worker = await engines(
        workflows=[Sleepy],
        queues={"default": 2},
        lease=LEASE,
        reap_interval=timedelta(seconds=0.2),
        start=False,
    )
    events = TelemetryRecorder().attach(worker)
    await worker.start()
    handle = await Sleepy.start(key="k", engine=worker)

    [blocked] = await events.wait(("loop", "blocked"), timeout=15)
    assert await Sleepy.result("k", timeout=15, engine=worker) == "rested"

    assert (blocked["workflow"], blocked["step"], blocked["id"], blocked["key"]) == (
        "loopblock.sleepy",
        "nap",
        handle.id,
        "k",
    )
    assert blocked["duration"] > LEASE.total_seconds() / 3
    [warning] = warnings(watchdog_log)
    assert f"step 'nap' of workflow 'loopblock.sleepy' (instance {handle.id}, key 'k')" in warning
    assert "has blocked the event loop" in warning
    assert "test_fault_loop_block.py" in warning  # the blocking line
    assert "plain `def`" in warning
    # The claim survived the block: one run, no rescue, no stale commit.
    assert RUNS == ["nap"]
    [row] = await Rows(db, gendurable_schema).all()
    assert (row["status"], row["attempt"], row["rescued"]) == ("done", 0, 0)
    assert events.of(("reaper", "rescued")) == []
    assert events.of(("outcome", "stale")) == []


async def test_fault_loop_blocked_outside_any_step_names_the_blocking_line(
    engines: Engines, watchdog_log: pytest.LogCaptureFixture
) -> None:
    worker = await engines(workflows=[Sleepy], queues={"default": 1}, lease=LEASE, start=False)
    events = TelemetryRecorder().attach(worker)
    await worker.start()

    time.sleep(BLOCK)  # noqa: ASYNC251 -- this test's own code blocks the engine's loop

    [blocked] = await events.wait(("loop", "blocked"), timeout=15)
    assert (blocked["workflow"], blocked["step"]) == (None, None)
    [warning] = warnings(watchdog_log)
    assert "code outside any step has blocked the event loop" in warning
    assert "test_fault_loop_block.py" in warning


async def test_fault_plain_def_step_past_its_lease_blocks_nothing_and_keeps_its_claim(
    engines: Engines,
    gendurable_schema: str,
    db: asyncpg.Connection,
    watchdog_log: pytest.LogCaptureFixture,
) -> None:
    worker = await engines(
        workflows=[Threaded],
        queues={"default": 2},
        lease=SHORT_LEASE,
        reap_interval=timedelta(seconds=0.2),
        start=False,
    )
    events = TelemetryRecorder().attach(worker)
    await worker.start()
    await Threaded.start(key="t", engine=worker)

    assert await Threaded.result("t", timeout=20, engine=worker) == "rested"

    assert RUNS == ["threaded"]
    [row] = await Rows(db, gendurable_schema).all()
    assert (row["attempt"], row["rescued"]) == (0, 0)
    assert events.of(("loop", "blocked")) == []
    assert warnings(watchdog_log) == []
