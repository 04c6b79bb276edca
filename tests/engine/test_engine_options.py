"""Engine options reach the parts that use them: the schedulers' demand, the pool's size and
the statements' timeout (the checks themselves are in tests/engine/test_engine_config.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg

import gendurable as gd
from gendurable.testing import MakeEngine, RecorderFactory
from recordings import Gate

RELEASE = Gate()
SEVEN_SECONDS = timedelta(seconds=7)


@gd.workflow(name="options.hold")
class Hold:
    @gd.step
    async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        await RELEASE.wait()
        return gd.done()


@gd.workflow(name="options.quick")
class Quick:
    @gd.step
    async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done(ctx.key)


async def statuses(db: asyncpg.Connection, schema: str) -> dict[str, str]:
    rows = await db.fetch(f'SELECT key, status::text FROM "{schema}".instances')
    return {r["key"]: r["status"] for r in rows}


async def test_engine_options_min_demand_waits_for_that_many_free_slots(
    make_engine: MakeEngine,
    recorder: RecorderFactory,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    engine = await make_engine(workflows=[Hold], queues={"default": 4}, min_demand=3, start=False)
    rec = recorder(engine)
    await engine.start()
    scheduler = engine.schedulers["default"]
    try:
        await Hold.start_many([Hold.new(key="a"), Hold.new(key="b")], engine=engine)
        await scheduler.run_once()
        await rec.wait(("step", "start"), count=2)
        await Hold.start_many([Hold.new(key="c"), Hold.new(key="d")], engine=engine)
        assert await scheduler.run_once() == 0  # 2 free slots, fewer than min_demand
        assert (await statuses(db, gendurable_schema))["c"] == "available"
    finally:
        RELEASE.set()
    await engine.drain()
    assert set((await statuses(db, gendurable_schema)).values()) == {"done"}


async def test_engine_options_min_demand_above_a_queues_concurrency_still_claims(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[Quick], queues={"default": 2}, min_demand=10)
    await Quick.start(key="k", engine=engine)
    await engine.drain()
    assert (await Quick.get("k", engine=engine)).result == "k"


async def test_engine_options_pool_size_and_statement_timeout_reach_the_pool(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(
        workflows=[Quick], queues={"default": 4}, pool_size=1, statement_timeout=SEVEN_SECONDS
    )
    assert engine.store.db.pool.get_max_size() == 1
    assert engine.store.db.timeout == 7.0
    # One connection is enough: every statement holds it only while it runs.
    await Quick.start_many([Quick.new(key=f"k{i}") for i in range(9)], engine=engine)
    await engine.drain()
    assert [(await Quick.get(f"k{i}", engine=engine)).result for i in range(9)] == [
        f"k{i}" for i in range(9)
    ]
