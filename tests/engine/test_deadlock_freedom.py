"""Deadlock freedom (guarantee 8): spawns, starts, batches, cascading cancels and signals on
overlapping keys, from three engines at once, finish with no deadlock, and every parent's
pending count equals its live children at the end.

Every writer keeps one order: key locks (in key order) before row locks, row locks in
ascending id (a child's id is above its parent's). The same load run with a copy of one
writer that breaks the order deadlocks within a few dozen rounds (the second test, for the
two variants that do so reliably; `bench/deadlock_variants.py` counts them all).
"""

from __future__ import annotations

import secrets

import asyncpg
import pytest
from deadlock_load import WORKFLOWS, broken_counts, fast_deadlocks, run, use_variant

import gendurable as gd
from gendurable.testing import MakeEngine

pytestmark = [pytest.mark.race, pytest.mark.slow]

ROUNDS = 200
VARIANT_ROUNDS = 400


@pytest.fixture
def gendurable_clock() -> None:
    """The system clock: the engines run the load in real time, in the background."""
    return None


async def test_deadlock_freedom_under_overlapping_spawns_starts_cancels_and_signals(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engines = [await make_engine(workflows=WORKFLOWS, queues={"default": 4}) for _ in range(3)]

    tally = await run(engines, ROUNDS, seed=1)

    for engine in engines:
        await engine.stop()
    assert tally.rounds == ROUNDS
    assert tally.deadlocks == []
    assert tally.errors == []
    assert await broken_counts(db, gendurable_schema) == []
    stranded = await db.fetchval(
        f"SELECT count(*) FROM \"{gendurable_schema}\".instances WHERE status = 'executing'"
    )
    assert stranded == 0, "a stopped engine left claims behind"
    cancelled, spawned = await db.fetchrow(
        f"SELECT count(*) FILTER (WHERE status = 'cancelled' AND parent_id IS NOT NULL), "
        f"count(*) FILTER (WHERE parent_id IS NOT NULL) "
        f'FROM "{gendurable_schema}".instances'
    )
    assert spawned > 100, "too few spawns succeeded for the load to mean anything"
    assert cancelled > 10, "too few cascades happened for the load to mean anything"


@pytest.mark.parametrize("variant", ["batch_desc", "cancel_child_first"])
async def test_deadlock_freedom_a_writer_without_the_order_deadlocks_under_the_same_load(
    gendurable_dsn: str, gendurable_schema: str, variant: str
) -> None:
    """The load has teeth: with children locked before parents (by the group commit, or by a
    cancel), PostgreSQL detects a deadlock. Measured: 5 to 8 per 200 rounds."""
    engines = [
        gd.Engine(
            fast_deadlocks(gendurable_dsn),
            workflows=WORKFLOWS,
            schema=gendurable_schema,
            queues={"default": 4},
            name=f"variant-{i}-{secrets.token_hex(3)}",
        )
        for i in range(3)
    ]
    try:
        for engine in engines:
            await engine.start()
            use_variant(engine, variant)

        tally = await run(engines, VARIANT_ROUNDS, seed=2, until_deadlock=True)
    finally:
        for engine in engines:
            await engine.stop(timeout=5)

    assert tally.deadlocks, f"no deadlock in {tally.rounds} rounds"
    assert "deadlock detected" in tally.deadlocks[0]
