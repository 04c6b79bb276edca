"""A process racing another over the same due schedule ticks (run by test_schedule_race).

    python race_ticks.py DSN SCHEMA SCHEDULES

Starts an engine declaring SCHEDULES schedules of one workflow, each `every=1 minute` with
`missed="all"`, on a manual clock, and prints `ready`. Then, for each line `T` it reads (a
time in ISO-8601), it sets its clock to T, runs its ticker once and prints the keys it
started, as `started k1 k2 ...`. It stops at end of input. The test sends both processes the
same times in lockstep, so their tickers meet over the same due rows every round.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import gendurable as gd
from gendurable import events
from gendurable.testing import ManualClock


@gd.workflow(name="race.tick", queue="nobody")  # no engine serves it: instances stay put
class Tick:
    @gd.step(start=True)
    async def run(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


async def main(dsn: str, schema: str, count: int) -> None:
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    schedules = [
        gd.Schedule(Tick, every=timedelta(minutes=1), name=f"s{i:02d}", missed="all")
        for i in range(count)
    ]
    engine = gd.Engine(
        dsn, workflows=[Tick], schema=schema, queues={"race": 1}, schedules=schedules, clock=clock
    )
    started: list[str] = []
    engine.telemetry.attach(
        "race",
        lambda event, _m, meta: started.append(meta["key"]),
        events=[events.SCHEDULE_STARTED],
    )
    loop = asyncio.get_running_loop()
    async with engine:
        print("ready", flush=True)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            clock.set(datetime.fromisoformat(line.strip()))
            assert engine.ticker is not None
            await engine.ticker.run_once(upkeep=False)
            print("started", *started, flush=True)
            started.clear()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
