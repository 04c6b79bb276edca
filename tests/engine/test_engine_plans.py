"""The engine's own connections plan each prepared statement once, with index scans
(`plan_cache_mode = force_generic_plan`, `enable_seqscan = off`); every other connection
keeps the server's settings: the engine's behind a transaction pooler (`prepare=False`), and
the stores the inspection tools open (dashboard, command line, deploy check)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

import gendurable as gd
from gendurable.db.pool import Database
from gendurable.testing import MakeEngine

ENGINE_PLANS = ("force_generic_plan", "off")


@gd.workflow(name="plans.quick")
class Quick:
    @gd.step
    async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done(ctx.key)


async def plans(conn: asyncpg.Connection) -> tuple[str, str]:
    return (await conn.fetchval("SHOW plan_cache_mode"), await conn.fetchval("SHOW enable_seqscan"))


async def test_engine_plans_are_set_on_every_connection_of_the_engines_pool(
    make_engine: MakeEngine, db: asyncpg.Connection
) -> None:
    assert await plans(db) != ENGINE_PLANS  # the server's own settings differ
    engine = await make_engine(workflows=[Quick], pool_size=3)
    database = engine.store.db
    # Three statements at once, each holding its connection until all three hold one: the
    # connections opened after start get them too, and those the database keeps between
    # statements as well as those it takes from the pool.
    holding: list[object] = []
    all_held = asyncio.Event()
    seen: list[tuple[str, str]] = []

    async def show(conn: asyncpg.Connection) -> None:
        holding.append(conn)
        if len(holding) == 3:
            all_held.set()
        await all_held.wait()
        seen.append(await plans(conn))

    async with asyncio.timeout(30):
        await asyncio.gather(*(database.retrying(show, idempotent=True) for _ in range(3)))
    assert len({id(conn) for conn in holding}) == 3
    assert seen == [ENGINE_PLANS] * 3
    await Quick.start(key="k", engine=engine)
    await engine.drain()
    assert (await Quick.get("k", engine=engine)).result == "k"


async def test_engine_plans_are_not_set_behind_a_transaction_pooler(
    make_engine: MakeEngine, db: asyncpg.Connection
) -> None:
    engine = await make_engine(workflows=[Quick], prepare=False)
    async with engine.store.db.pool.acquire() as conn:
        assert await plans(conn) == await plans(db)


async def test_engine_plans_are_not_set_on_the_inspection_tools_stores(
    gendurable_dsn: str, gendurable_schema: str, db: asyncpg.Connection
) -> None:
    # How the dashboard, the command line and the deploy check open theirs.
    store = await Database.open(gendurable_dsn, gendurable_schema, min_size=1, max_size=1)
    try:
        async with store.pool.acquire() as conn:
            assert await plans(conn) == await plans(db)
    finally:
        await store.close()
