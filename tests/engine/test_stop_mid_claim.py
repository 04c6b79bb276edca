"""A stop that cancels a claim in flight gives back the rows that claim took.

The claim statement may have committed on the server when `stop()` cancels the claim loop;
its rows are then `executing` under this scheduler with no step running them, and without a
give-back they would wait out their whole lease. (Found by the deadlock stress test, which
stops three busy engines.) The claim's answer is held back here until the stop has
cancelled the loop, as a slow network would.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

import gendurable as gd
from gendurable.testing import MakeEngine


@gd.workflow(name="stop.quick")
class Quick:
    @gd.step(start=True)
    async def run(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


async def test_stop_mid_claim_releases_the_rows_the_cancelled_claim_took(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Quick], queues={"default": 2})
    # The loop's first claim (slow: it plans the statement) must be over before the spy goes
    # in, or it could take the row itself; drain() waits for it under the claim lock.
    await engine.drain()
    store = engine.store
    claim = store.instance_claim
    answered = asyncio.Event()
    late = asyncio.Event()

    async def slow_answer(*args: Any, **kwargs: Any) -> Any:
        rows = await claim(*args, **kwargs)
        if rows:
            answered.set()
            await late.wait()  # committed on the server; the answer is on its way
        return rows

    store.instance_claim = slow_answer  # type: ignore[method-assign]
    handle = await Quick.start(key="q")
    async with asyncio.timeout(10):
        await answered.wait()
    status = await db.fetchval(
        f'SELECT status::text FROM "{gendurable_schema}".instances WHERE id = $1', handle.id
    )
    assert status == "executing"
    scheduler = engine.schedulers["default"]

    stopping = asyncio.create_task(engine.stop(timeout=5))
    await asyncio.sleep(0)  # stop() cancels the claim loop before its first wait
    assert scheduler.claiming is False
    late.set()
    async with asyncio.timeout(10):
        await stopping

    row = await db.fetchrow(
        f'SELECT status::text AS status, locked_by, attempt FROM "{gendurable_schema}".instances '
        "WHERE id = $1",
        handle.id,
    )
    assert dict(row) == {"status": "available", "locked_by": None, "attempt": 0}
