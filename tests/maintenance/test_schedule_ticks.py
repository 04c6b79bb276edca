"""Schedules run by engines under the manual clock: which ticks start, once each."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

import gendurable as gd
from gendurable import events
from gendurable.maintenance.ticker import GRACE
from gendurable.sql import Statement, bind_names
from gendurable.testing import MakeEngine, ManualClock, RecorderFactory
from schedule_support import Nightly, Rows, day_of

DAY = timedelta(days=1)
KEY = "sched.nightly@2030-01-{:02d}T02:00:00Z"  # 03:00 in Paris, in winter


def nightly(**options: object) -> gd.Schedule:
    """A schedule of `Nightly` at 03:00 in Paris (02:00 UTC in January)."""
    return gd.Schedule(
        Nightly,
        cron="0 3 * * *",
        tz="Europe/Paris",
        state=day_of,
        **options,  # type: ignore[arg-type]
    )


async def test_schedules_three_days_advanced_start_three_nightly_runs(
    make_engine: MakeEngine, manual_clock: ManualClock, rows: Rows
) -> None:
    engine = await make_engine(workflows=[Nightly], schedules=[nightly()], gc_retention=None)

    for _ in range(3):
        manual_clock.advance(DAY)
        await engine.drain()

    found = await rows.instances()
    assert [(i["key"], i["status"], i["state"]) for i in found] == [
        (KEY.format(d), "done", f'{{"day": "2030-01-{d:02d}"}}') for d in (1, 2, 3)
    ]
    row = await rows.schedule("sched.nightly")
    assert row["last_at"] == datetime(2030, 1, 3, 2, tzinfo=UTC)
    assert row["last_instance_id"] == found[-1]["id"]
    assert row["next_at"] == datetime(2030, 1, 4, 2, tzinfo=UTC)


async def test_schedules_a_first_declaration_starts_from_now(
    make_engine: MakeEngine, manual_clock: ManualClock, rows: Rows
) -> None:
    manual_clock.set(datetime(2030, 1, 1, 5, tzinfo=UTC))  # today's 02:00 UTC has passed
    five = gd.Schedule(Nightly, every=timedelta(minutes=5), name="five")
    engine = await make_engine(workflows=[Nightly], schedules=[nightly(missed="all"), five])

    await engine.drain()  # 05:00 is a tick of `five`, but not after its declaration

    assert await rows.keys() == []
    assert (await rows.schedule("sched.nightly"))["next_at"] == datetime(2030, 1, 2, 2, tzinfo=UTC)
    assert (await rows.schedule("five"))["next_at"] == datetime(2030, 1, 1, 5, 5, tzinfo=UTC)
    manual_clock.advance(timedelta(minutes=5))
    await engine.drain()
    assert await rows.keys() == ["five@2030-01-01T05:05:00Z"]


@pytest.mark.parametrize(
    ("missed", "catch_up", "days", "skipped"),
    [
        ("skip", 100, [], 3),
        ("latest", 100, [3], 2),
        ("all", 100, [1, 2, 3], 0),
        ("all", 2, [2, 3], 1),
    ],
)
async def test_schedules_missed_ticks_follow_the_policy(
    make_engine: MakeEngine,
    manual_clock: ManualClock,
    rows: Rows,
    recorder: RecorderFactory,
    missed: str,
    catch_up: int,
    days: list[int],
    skipped: int,
) -> None:
    schedule = nightly(missed=missed, catch_up=catch_up)
    first = await make_engine(workflows=[Nightly], schedules=[schedule])
    await first.drain()
    await first.stop()  # every engine down for three nightly ticks
    manual_clock.set(datetime(2030, 1, 3, 12, tzinfo=UTC))
    second = await make_engine(workflows=[Nightly], schedules=[schedule], start=False)
    rec = recorder(second)
    await second.start()

    await second.drain()

    assert await rows.keys() == [KEY.format(d) for d in days]
    assert [e["count"] for e in rec.of(events.SCHEDULE_SKIPPED)] == ([skipped] if skipped else [])
    assert [e["key"] for e in rec.of(events.SCHEDULE_STARTED)] == [KEY.format(d) for d in days]
    assert (await rows.schedule("sched.nightly"))["next_at"] == datetime(2030, 1, 4, 2, tzinfo=UTC)


async def test_schedules_skip_still_starts_a_tick_that_is_barely_late(
    make_engine: MakeEngine, manual_clock: ManualClock, rows: Rows
) -> None:
    engine = await make_engine(workflows=[Nightly], schedules=[nightly(missed="skip")])
    manual_clock.set(datetime(2030, 1, 1, 2, 0, 30, tzinfo=UTC))  # 30 s after the tick

    await engine.drain()

    assert await rows.keys() == [KEY.format(1)]


@pytest.mark.slow
async def test_schedules_tick_on_both_dst_days_of_their_zone_once(
    make_engine: MakeEngine, manual_clock: ManualClock, rows: Rows
) -> None:
    """Paris: 2030-03-31 02:00 -> 03:00 (02:30 does not exist), 2030-10-27 03:00 -> 02:00
    (02:30 happens twice). A daily 02:30 runs once on each day, as cronsim defines."""
    for name, start in (
        ("spring", datetime(2030, 3, 30, 12, tzinfo=UTC)),
        ("fall", datetime(2030, 10, 26, 12, tzinfo=UTC)),
    ):
        schedule = gd.Schedule(Nightly, cron="30 2 * * *", tz="Europe/Paris", name=name)
        manual_clock.set(start)
        engine = await make_engine(workflows=[Nightly], schedules=[schedule], gc_retention=None)
        for _ in range(2 * 24 * 4):  # two days, a drain every quarter of an hour
            manual_clock.advance(timedelta(minutes=15))
            await engine.drain()
        await engine.stop()

    assert await rows.keys() == [
        "spring@2030-03-31T01:00:00Z",  # 03:00 CEST, the first minute after the gap
        "spring@2030-04-01T00:30:00Z",  # 02:30 CEST
        "fall@2030-10-27T00:30:00Z",  # 02:30 CEST, the first of the two 02:30s
        "fall@2030-10-28T01:30:00Z",  # 02:30 CET
    ]


async def test_schedules_every_ticks_on_multiples_since_the_epoch(
    make_engine: MakeEngine, manual_clock: ManualClock, rows: Rows
) -> None:
    manual_clock.set(datetime(2030, 1, 1, 0, 1, tzinfo=UTC))
    schedule = gd.Schedule(Nightly, every=timedelta(minutes=5), name="five", missed="all")
    engine = await make_engine(workflows=[Nightly], schedules=[schedule], gc_retention=None)

    manual_clock.advance(timedelta(minutes=11))
    await engine.drain()

    assert await rows.keys() == ["five@2030-01-01T00:05:00Z", "five@2030-01-01T00:10:00Z"]


async def test_schedules_pause_stops_ticks_and_resume_starts_from_now(
    make_engine: MakeEngine, manual_clock: ManualClock, rows: Rows
) -> None:
    engine = await make_engine(workflows=[Nightly], schedules=[nightly(missed="all")])
    await engine.pause_schedule("sched.nightly")

    manual_clock.advance(2 * DAY)
    await engine.drain()
    assert await rows.keys() == []
    assert (await rows.schedule("sched.nightly"))["paused"] is True

    await engine.resume_schedule("sched.nightly")
    await engine.drain()
    assert await rows.keys() == []  # the ticks missed while paused never run
    manual_clock.advance(DAY)
    await engine.drain()
    assert await rows.keys() == [KEY.format(3)]
    with pytest.raises(gd.NoTarget, match="no schedule named 'nope'"):
        await engine.pause_schedule("nope")


async def test_schedules_a_failing_state_skips_its_tick_and_the_next_one_runs(
    make_engine: MakeEngine, manual_clock: ManualClock, rows: Rows, recorder: RecorderFactory
) -> None:
    def state(tick: datetime) -> Nightly.State:
        if tick.day == 2:
            raise RuntimeError("no data for the second")
        return day_of(tick)

    schedule = gd.Schedule(Nightly, cron="0 3 * * *", tz="Europe/Paris", state=state)
    engine = await make_engine(
        workflows=[Nightly], schedules=[schedule], start=False, gc_retention=None
    )
    rec = recorder(engine)
    await engine.start()

    for _ in range(2):
        manual_clock.advance(DAY)
        await engine.drain()

    [first] = await rows.instances()
    assert first["key"] == KEY.format(1)
    [failed] = rec.of(events.SCHEDULE_FAILED)
    assert failed["key"] == KEY.format(2)
    assert str(failed["error"]) == "no data for the second"
    row = await rows.schedule("sched.nightly")
    assert (row["last_at"], row["last_instance_id"]) == (
        datetime(2030, 1, 1, 2, tzinfo=UTC),
        first["id"],
    )  # the failed tick started nothing: the last one is still the first
    assert row["next_at"] == datetime(2030, 1, 3, 2, tzinfo=UTC)  # it went on
    manual_clock.advance(DAY)
    await engine.drain()
    assert await rows.keys() == [KEY.format(1), KEY.format(3)]


async def test_schedules_a_changed_definition_takes_over_and_starts_from_now(
    make_engine: MakeEngine, manual_clock: ManualClock, rows: Rows
) -> None:
    old = await make_engine(workflows=[Nightly], schedules=[nightly()])
    await old.drain()
    new = await make_engine(
        workflows=[Nightly],
        schedules=[gd.Schedule(Nightly, cron="0 4 * * *", tz="Europe/Paris", state=day_of)],
    )
    manual_clock.advance(DAY)

    await old.drain()  # the stored definition is the new one's: the old engine leaves it
    assert await rows.keys() == []
    await new.drain()
    assert await rows.keys() == ["sched.nightly@2030-01-01T03:00:00Z"]


async def test_schedules_a_changed_definition_does_not_catch_up_the_old_ones_ticks(
    make_engine: MakeEngine, manual_clock: ManualClock, rows: Rows
) -> None:
    old = await make_engine(workflows=[Nightly], schedules=[nightly(missed="all")])
    await old.drain()
    await old.stop()
    manual_clock.advance(2 * DAY)
    changed = gd.Schedule(Nightly, cron="0 4 * * *", tz="Europe/Paris", state=day_of, missed="all")

    new = await make_engine(workflows=[Nightly], schedules=[changed])
    await new.drain()
    assert await rows.keys() == []  # no tick from before the change runs
    manual_clock.advance(DAY)
    await new.drain()
    assert await rows.keys() == ["sched.nightly@2030-01-03T03:00:00Z"]


async def test_schedules_not_declared_for_the_grace_period_are_disabled_only_then(
    make_engine: MakeEngine,
    manual_clock: ManualClock,
    rows: Rows,
    recorder: RecorderFactory,
) -> None:
    declaring = await make_engine(workflows=[Nightly], schedules=[nightly()])
    other = await make_engine(workflows=[Nightly], start=False)
    rec = recorder(other)
    await other.start()

    for _ in range(6):  # 30 minutes, three grace periods, while `declaring` runs
        manual_clock.advance(GRACE / 2)
        await declaring.drain()
        await other.drain()
    assert (await rows.schedule("sched.nightly"))["disabled_at"] is None

    await declaring.stop()
    manual_clock.advance(GRACE)
    await other.drain()
    assert (await rows.schedule("sched.nightly"))["disabled_at"] is None  # not yet past it
    manual_clock.advance(timedelta(seconds=1))
    await other.drain()
    row = await rows.schedule("sched.nightly")
    assert row["disabled_at"] == manual_clock.now()
    assert [e["schedule"] for e in rec.of(events.SCHEDULE_DISABLED)] == ["sched.nightly"]

    manual_clock.set(datetime(2030, 1, 1, 3, tzinfo=UTC))  # past the 02:00 tick
    await other.drain()
    assert await rows.keys() == []  # no engine declares it: nobody starts its ticks

    again = await make_engine(workflows=[Nightly], schedules=[nightly()])
    assert (await rows.schedule("sched.nightly"))["disabled_at"] is None
    await again.drain()  # it kept its place: the missed nightly tick runs (missed="latest")
    assert await rows.keys() == [KEY.format(1)]


async def test_schedules_a_schedule_held_by_another_ticker_is_skipped_not_waited_for(
    make_engine: MakeEngine,
    manual_clock: ManualClock,
    rows: Rows,
    gendurable_dsn: str,
    gendurable_schema: str,
) -> None:
    engine = await make_engine(workflows=[Nightly], schedules=[nightly()])
    manual_clock.advance(DAY)
    other = await asyncpg.connect(gendurable_dsn)
    try:
        async with other.transaction():  # another engine's ticker, mid-advance
            await other.execute(
                f'SELECT 1 FROM "{gendurable_schema}".schedules WHERE name = $1 FOR UPDATE',
                "sched.nightly",
            )
            async with asyncio.timeout(10):  # skipped, not waited for
                await engine.drain()
            assert await rows.keys() == []
    finally:
        await other.close()

    await engine.drain()
    assert await rows.keys() == [KEY.format(1)]


async def test_schedules_a_tick_never_starts_twice_even_after_its_instance_ended(
    make_engine: MakeEngine, manual_clock: ManualClock, rows: Rows, db: asyncpg.Connection
) -> None:
    engine = await make_engine(workflows=[Nightly], schedules=[nightly()], gc_retention=None)
    manual_clock.advance(DAY)
    await engine.drain()
    [first] = await rows.instances()
    assert first["status"] == "done"

    # An advance that never happened (say, a stale ticker): the tick is due again.
    await db.execute(
        f'UPDATE "{rows.schema}".schedules SET next_at = $1',
        datetime(2030, 1, 1, 1, tzinfo=UTC),
    )
    await engine.drain()

    assert [i["id"] for i in await rows.instances()] == [first["id"]]
    assert (await rows.schedule("sched.nightly"))["last_instance_id"] == first["id"]


async def test_schedules_run_only_on_engines_with_queues(
    make_engine: MakeEngine, manual_clock: ManualClock, rows: Rows, db: asyncpg.Connection
) -> None:
    await make_engine(workflows=[Nightly], schedules=[nightly()], queues=None)

    count = await db.fetchval(f'SELECT count(*) FROM "{rows.schema}".schedules')

    assert count == 0


async def test_schedules_disabling_passes_over_a_schedule_another_transaction_holds(
    make_engine: MakeEngine,
    manual_clock: ManualClock,
    rows: Rows,
    gendurable_dsn: str,
) -> None:
    gone = await make_engine(workflows=[Nightly], schedules=[nightly()])
    await gone.stop()
    other = await make_engine(workflows=[Nightly])
    manual_clock.advance(2 * GRACE)
    holder = await asyncpg.connect(gendurable_dsn)
    try:
        async with holder.transaction():
            await holder.execute(
                f'SELECT 1 FROM "{rows.schema}".schedules WHERE name = $1 FOR UPDATE',
                "sched.nightly",
            )
            async with asyncio.timeout(10):
                await other.drain()
            assert (await rows.schedule("sched.nightly"))["disabled_at"] is None
    finally:
        await holder.close()

    await other.drain()
    assert (await rows.schedule("sched.nightly"))["disabled_at"] == manual_clock.now()


async def test_schedules_a_running_engine_that_was_silent_revives_its_disabled_schedule(
    make_engine: MakeEngine, manual_clock: ManualClock, rows: Rows
) -> None:
    declaring = await make_engine(workflows=[Nightly], schedules=[nightly()])
    other = await make_engine(workflows=[Nightly])
    manual_clock.advance(2 * GRACE)  # `declaring` could not refresh all that time
    await other.drain()
    assert (await rows.schedule("sched.nightly"))["disabled_at"] is not None

    await declaring.drain()

    row = await rows.schedule("sched.nightly")
    assert row["disabled_at"] is None
    assert row["refreshed_at"] == manual_clock.now()


async def test_schedules_a_tick_starts_in_the_transaction_that_advances_its_schedule(
    make_engine: MakeEngine, manual_clock: ManualClock, rows: Rows
) -> None:
    engine = await make_engine(workflows=[Nightly], schedules=[nightly()])
    manual_clock.advance(DAY)
    advance = engine.store.db.sql["schedule_advance"]
    engine.store.db.sql["schedule_advance"] = Statement(  # the advance fails
        advance.name,
        *bind_names(
            advance.name,
            "SELECT :names::text[], :next_ats::timestamptz[], :last_ats::timestamptz[],"
            " :instance_ids::bigint[], :now::timestamptz, 1 / 0",
        ),
    )

    with pytest.raises(asyncpg.DivisionByZeroError):
        await engine.drain()

    assert await rows.keys() == []  # so the instance was never started
    engine.store.db.sql["schedule_advance"] = advance
    await engine.drain()
    assert await rows.keys() == [KEY.format(1)]
