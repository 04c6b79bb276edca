"""Every run of a background task reports itself: `maintenance.run` with the rows it touched,
or `maintenance.exception` with the error, and its loop goes on after a failure."""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from gendurable import events
from gendurable.engine.poller import Poller
from gendurable.maintenance.loop import every
from gendurable.testing import MakeEngine, RecorderFactory, TelemetryRecorder
from recordings import recorded

GATE: dict[str, asyncio.Event] = recorded({})


@gd.workflow(name="runs.approval")
class Approval:
    @gd.step(start=True)
    @gd.await_signals("approved", timeout=timedelta(minutes=1))
    async def decide(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


@gd.job(name="runs.mail")
async def mail(args: Any, ctx: gd.Context) -> None:
    if "hold" in GATE:
        await GATE["hold"].wait()


def runs(rec: TelemetryRecorder, task: str, since: int = 0) -> list[dict[str, Any]]:
    """The `maintenance.run` events of `task` recorded after the first `since` events."""
    return [
        {**meta, **measures}
        for event, measures, meta in rec.events[since:]
        if event == events.MAINTENANCE_RUN and meta["task"] == task
    ]


async def test_maintenance_reaper_run_reports_the_awaits_it_woke(
    make_engine: MakeEngine, recorder: RecorderFactory, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=[Approval])
    rec = recorder(engine)
    await Approval.start("a-1")
    await Approval.start("a-2")
    await engine.drain()  # both wait for a signal, a minute at most
    manual_clock.advance(timedelta(minutes=2))
    assert engine.reaper is not None
    since = len(rec.events)

    report = await engine.reaper.run_once()

    assert report.timed_out == 2
    [run] = runs(rec, "reaper", since)
    assert run["rows"] == 2
    assert isinstance(run["duration"], float)
    assert run["duration"] >= 0
    [(_, measures, meta)] = [e for e in rec.events[since:] if e[0] == events.MAINTENANCE_RUN]
    assert (set(measures), meta) == ({"duration", "rows"}, {"task": "reaper"})


async def test_maintenance_collector_runs_of_drain_report_the_rows_deleted(
    make_engine: MakeEngine, recorder: RecorderFactory, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=[mail], gc_retention=timedelta(hours=1))
    rec = recorder(engine)
    for _ in range(3):
        await mail.enqueue()
    await engine.drain()  # runs them; nothing has ended an hour ago yet
    manual_clock.advance(timedelta(hours=2))

    await engine.drain()

    assert [r["rows"] for r in runs(rec, "collector")] == [0, 3]


async def test_maintenance_node_run_counts_the_rows_it_pruned_or_wrote_again(
    make_engine: MakeEngine,
    recorder: RecorderFactory,
    manual_clock: gd.ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    quiet = await make_engine(workflows=[mail], queues=None, name="a-quiet")
    alive = await make_engine(workflows=[mail], queues=None, name="b-alive")
    assert alive.nodes is not None
    rec = recorder(alive)
    await alive.nodes.run_once()
    manual_clock.advance(timedelta(seconds=31))  # both past their 30 s expiry

    report = await alive.nodes.run_once()

    assert quiet.nodes is not None
    assert report.pruned == (quiet.nodes.id,)
    await db.execute(f'DELETE FROM "{gendurable_schema}".nodes')  # a long outage: pruned
    await alive.nodes.run_once()  # records itself again
    assert [r["rows"] for r in runs(rec, "nodes")] == [0, 1, 1]


async def test_maintenance_heartbeat_and_poller_runs_report_per_queue(
    make_engine: MakeEngine, recorder: RecorderFactory, manual_clock: gd.ManualClock
) -> None:
    # The engine's own poller and heartbeat run once at start, then not for a long while: this
    # test runs them.
    engine = await make_engine(
        workflows=[mail], poll_interval=timedelta(hours=1), lease=timedelta(hours=1), start=False
    )
    rec = recorder(engine)
    await engine.start()
    # Their first runs come from tasks the start created: wait for them, so that only the
    # runs this test makes come after `since`.
    await rec.wait(events.MAINTENANCE_RUN, task="poller")
    await rec.wait(events.MAINTENANCE_RUN, task="heartbeat")
    GATE["hold"] = asyncio.Event()
    await mail.enqueue()
    await mail.enqueue(delay=timedelta(seconds=10))
    await engine.schedulers["default"].run_once()
    await rec.wait(events.STEP_START)
    manual_clock.advance(timedelta(seconds=15))  # the delayed one is due, unannounced
    poller = Poller(engine.store, manual_clock, engine.schedulers, engine.telemetry)
    since = len(rec.events)

    assert await engine.schedulers["default"].heartbeat() == 1
    assert await poller.run_once() == ["default"]

    [beat] = runs(rec, "heartbeat", since)
    assert (beat["queue"], beat["rows"]) == ("default", 1)
    [poll] = runs(rec, "poller", since)
    assert poll["rows"] == 1
    GATE["hold"].set()
    await engine.drain()


async def test_maintenance_startup_reclaim_reports_the_claims_it_released(
    make_engine: MakeEngine,
    recorder: RecorderFactory,
    db: asyncpg.Connection,
    gendurable_schema: str,
    manual_clock: gd.ManualClock,
) -> None:
    client = await make_engine(workflows=[mail], queues=None)
    handle = await mail.enqueue(engine=client)
    # What a worker named "w" on this host left behind when it was killed mid-step.
    await db.execute(
        f"UPDATE \"{gendurable_schema}\".instances SET status = 'executing', "
        "locked_by = $2, locked_until = $3 WHERE id = $1",
        handle.id,
        f"w:default@{socket.gethostname()}-1-deadbeef#1",
        manual_clock.now() - timedelta(seconds=1),
    )
    worker = await make_engine(workflows=[mail], name="w", start=False)
    rec = recorder(worker)

    await worker.start()

    [run] = runs(rec, "reclaim")
    assert (run["queue"], run["rows"]) == ("default", 1)
    assert [r["count"] for r in rec.of(events.SCHEDULER_RECLAIMED)] == [1]


async def test_maintenance_a_failed_run_is_reported_and_its_loop_goes_on(
    make_engine: MakeEngine,
    recorder: RecorderFactory,
    db: asyncpg.Connection,
    gendurable_schema: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = await make_engine(workflows=[Approval])
    rec = recorder(engine)
    engine.telemetry.attach("log", gd.logging_handler())
    assert engine.reaper is not None
    instances = f'"{gendurable_schema}".instances'
    await db.execute(f"ALTER TABLE {instances} RENAME TO instances_away")
    with pytest.raises(asyncpg.UndefinedTableError):  # reported, and raised all the same
        await engine.reaper.run_once()
    loop = asyncio.create_task(every(timedelta(milliseconds=10), engine.reaper.run_once, "reaper"))
    try:
        with caplog.at_level(logging.WARNING, logger="gendurable"):
            failed = await rec.wait(events.MAINTENANCE_EXCEPTION, count=3, task="reaper")
        await db.execute(f'ALTER TABLE "{gendurable_schema}".instances_away RENAME TO instances')
        await rec.wait(events.MAINTENANCE_RUN, task="reaper")  # the same loop, working again
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)

    assert isinstance(failed[0]["error"], asyncpg.UndefinedTableError)
    assert failed[0]["duration"] >= 0
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "gendurable" and "task=reaper" in r.getMessage()
    ]
    assert {r.levelno for r in caplog.records if r.name == "gendurable"} == {logging.WARNING}
    assert warnings[0].startswith(
        "maintenance.exception task=reaper error=UndefinedTableError: relation "
    )
    assert "\n" not in warnings[0]
