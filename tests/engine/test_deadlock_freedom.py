"""Deadlock freedom (guarantee 8): spawns, starts, batches, cascading cancels and signals on
overlapping keys, from three engines at once, finish with no deadlock, and every parent's
pending count equals its live children at the end.

Every writer keeps one order: key locks (in key order) before row locks, row locks in
ascending id (a child's id is above its parent's). `bench/deadlock_variants.py` runs the
same load with writers that break the order, and counts their deadlocks.
"""

from __future__ import annotations

import asyncpg
import pytest
from deadlock_load import WORKFLOWS, broken_counts, run

from gendurable.testing import MakeEngine

ROUNDS = 200


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
    cancelled, spawned = await db.fetchrow(
        f"SELECT count(*) FILTER (WHERE status = 'cancelled' AND parent_id IS NOT NULL), "
        f"count(*) FILTER (WHERE parent_id IS NOT NULL) "
        f'FROM "{gendurable_schema}".instances'
    )
    assert spawned > 100, "too few spawns succeeded for the load to mean anything"
    assert cancelled > 10, "too few cascades happened for the load to mean anything"
