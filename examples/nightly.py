"""Nightly: a report that a schedule starts every night at 03:00, Paris time.

    python examples/nightly.py                 # a throwaway embedded PostgreSQL
    GENDURABLE_DSN=postgresql://user@host/db python examples/nightly.py

`gd.Schedule(Report, cron="0 3 * * *", tz="Europe/Paris", state=for_night)` starts one
`Report` per night, keyed `nightly-report@<tick>`, however many engines run it: each tick
starts exactly one instance. So that the demo does not wait for 3 a.m., its engine runs on a
`ManualClock` and three nights pass in a moment (`clock.advance(...)`, then
`engine.drain()`), as in a test. In production, leave `clock=` out. Cron schedules need the
`gendurable[cron]` extra.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec

import gendurable as gd
from gendurable import events

PARIS = ZoneInfo("Europe/Paris")


@gd.workflow(name="report")
class Report:
    """gather -> publish: the figures of the day before the tick, then the report."""

    class State(msgspec.Struct):
        day: str
        orders: int = 0

    class Result(msgspec.Struct):
        summary: str

    @gd.step(start=True)
    async def gather(self, state: State, ctx: gd.Context) -> gd.Outcome:
        state.orders = 40 + 10 * int(state.day[-2:])  # stands for a real query
        return gd.goto(self.publish)

    @gd.step
    async def publish(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done(Report.Result(summary=f"{state.day}: {state.orders} orders"))


def for_night(tick: datetime) -> Report.State:
    """The state of the instance started for `tick`: the day that night closes."""
    return Report.State(day=(tick.astimezone(PARIS) - timedelta(days=1)).date().isoformat())


NIGHTLY = gd.Schedule(
    Report, cron="0 3 * * *", tz="Europe/Paris", state=for_night, name="nightly-report"
)


async def main(dsn: str | None = None, schema: str = "gendurable") -> list[str]:
    """Let three nights pass; return the summaries of the reports they started."""
    clock = gd.ManualClock(datetime(2030, 1, 1, 12, tzinfo=PARIS))
    engine = gd.Engine(
        dsn,
        workflows=[Report],
        schedules=[NIGHTLY],
        schema=schema,
        queues={"default": 2},
        clock=clock,
    )
    started: list[str] = []  # the keys of the instances the schedule starts
    engine.telemetry.attach(
        "nightly", lambda _, __, meta: started.append(meta["key"]), [events.SCHEDULE_STARTED]
    )
    summaries = []
    async with engine:
        print(f"schedule {NIGHTLY.name!r}: {NIGHTLY.describe()}")
        for _ in range(3):
            clock.advance(timedelta(days=1))
            await engine.drain()  # starts the tick that came due, then runs the report
            key = started.pop()
            result: Report.Result = await Report.result(key, timeout=30)
            print(f"{key} -> {result.summary}")
            summaries.append(result.summary)
    return summaries


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--schema", default="gendurable", help="PostgreSQL schema to use")
    args = parser.parse_args()
    asyncio.run(main(schema=args.schema))
