"""Guarantee 8, the writers that never wait: the claim, the group commit, the reaper and the
bucket sweep take rows with `FOR UPDATE SKIP LOCKED`. A row another transaction holds
(another claim, a delivery, a cancel, a user's transaction) is passed over, never waited
for; the statement does the rest of its work and takes that row on a later run (the group
commit reports its outcome busy, to be sent again).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

import gendurable as gd
from commit_support import GROUP_COMMITS, commit, finish
from gendurable.testing import MakeEngine
from raw_rows import Blocker, Leaf, insert, row, without_waiting

LEASE = timedelta(seconds=30)
HOUR = timedelta(hours=1)


@pytest.fixture
async def engine(make_engine: MakeEngine) -> gd.Engine:
    """A client-only engine: nothing runs by itself; the test calls each statement."""
    return await make_engine(
        workflows=[Leaf], queues=None, rate_limits={"api": gd.Limit(10, per=timedelta(minutes=1))}
    )


@pytest.fixture
async def blocker(gendurable_dsn: str) -> AsyncIterator[Blocker]:
    held = await Blocker.open(gendurable_dsn)
    yield held
    await held.release()


def lock_row(schema: str) -> str:
    return f'SELECT 1 FROM "{schema}".instances WHERE id = $1 FOR UPDATE'


async def test_claim_passes_over_a_row_another_transaction_holds(
    engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str, blocker: Blocker
) -> None:
    now = engine.clock.now()
    assert now is not None
    held, free = [await insert(db, gendurable_schema, now) for _ in range(2)]
    await blocker.hold(lock_row(gendurable_schema), held)

    async with asyncio.timeout(10):
        claimed = await engine.store.instance_claim(
            queue="default",
            limit=10,
            locked_by="w1",
            leases=[LEASE],
            now=now,
            workflows=["raw.leaf"],
            steps=["work"],
        )

    assert [r.id for r in claimed] == [free]
    assert (await row(db, gendurable_schema, held))["status"] == "available"
    await blocker.release()
    claimed = await engine.store.instance_claim(
        queue="default",
        limit=10,
        locked_by="w2",
        leases=[LEASE],
        now=now,
        workflows=["raw.leaf"],
        steps=["work"],
    )
    assert [r.id for r in claimed] == [held]


@pytest.mark.parametrize("statement", GROUP_COMMITS)
async def test_group_commit_passes_over_a_row_another_transaction_holds_and_reports_it_busy(
    engine: gd.Engine,
    db: asyncpg.Connection,
    gendurable_schema: str,
    blocker: Blocker,
    statement: str,
) -> None:
    now = engine.clock.now()
    assert now is not None
    held, free = [
        await insert(db, gendurable_schema, now, status="executing", locked_by="w1",
                     locked_until=now + LEASE)
        for _ in range(2)
    ]  # fmt: skip
    await blocker.hold(lock_row(gendurable_schema), held)
    outcomes = [finish(held, "w1", "done"), finish(free, "w1", "done")]

    committed = await without_waiting(db, commit(engine, outcomes, statement=statement))

    assert committed == ({free: None}, {held})
    assert (await row(db, gendurable_schema, held))["status"] == "executing"
    assert (await row(db, gendurable_schema, free))["status"] == "done"
    await blocker.release()
    assert await commit(engine, outcomes[:1], statement=statement) == ({held: None}, set())
    assert (await row(db, gendurable_schema, held))["status"] == "done"


async def test_reaper_passes_over_expired_claims_and_deadlines_another_transaction_holds(
    engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str, blocker: Blocker
) -> None:
    now = engine.clock.now()
    assert now is not None
    s = gendurable_schema
    claims = [
        await insert(db, s, now, status="executing", locked_by="gone", locked_until=now - HOUR)
        for _ in range(2)
    ]
    awaits = [
        await insert(db, s, now, status="awaiting", step="wait", await_deadline=now - HOUR)
        for _ in range(2)
    ]
    await blocker.hold(lock_row(s), claims[0])
    await blocker.hold(lock_row(s), awaits[0])
    assert engine.reaper is not None

    async with asyncio.timeout(10):
        report = await engine.reaper.run_once()

    assert (report.rescued, report.timed_out) == (1, 1)
    assert (await row(db, s, claims[1]))["status"] == "available"
    assert (await row(db, s, awaits[1]))["status"] == "available"
    assert (await row(db, s, claims[0]))["status"] == "executing"
    assert (await row(db, s, awaits[0]))["status"] == "awaiting"
    await blocker.release()
    report = await engine.reaper.run_once()
    assert (report.rescued, report.timed_out) == (1, 1)


async def test_reaper_leaves_a_dying_claim_whose_parent_is_held_for_the_next_round(
    engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str, blocker: Blocker
) -> None:
    # The claim expired on its last attempt: the reaper fails it, which counts its parent
    # down. With the parent held elsewhere the reaper skips both rather than wait.
    now = engine.clock.now()
    assert now is not None
    s = gendurable_schema
    parent = await insert(db, s, now, status="waiting", pending=1)
    child = await insert(
        db, s, now, status="executing", parent=parent, locked_by="gone",
        locked_until=now - HOUR, attempt=1, max_attempts=2,
    )  # fmt: skip
    await blocker.hold(lock_row(s), parent)
    assert engine.reaper is not None

    async with asyncio.timeout(10):
        report = await engine.reaper.run_once()

    assert (report.rescued, report.failed) == (0, 0)
    assert (await row(db, s, child))["status"] == "executing"
    await blocker.release()
    report = await engine.reaper.run_once()
    assert report.failed == 1
    assert (await row(db, s, child))["status"] == "failed"
    woken = await row(db, s, parent)
    assert (woken["status"], woken["pending_children"]) == ("available", 0)


async def test_bucket_sweep_passes_over_a_bucket_another_transaction_holds(
    engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str, blocker: Blocker
) -> None:
    now = engine.clock.now()
    assert now is not None
    s = gendurable_schema
    for part in ("a", "b"):  # idle for a day: full again, nothing to remember
        await db.execute(
            f'INSERT INTO "{s}".rate_buckets (name, partition, tokens, refreshed_at) '
            "VALUES ('api', $1, 0, $2)",
            part,
            now - timedelta(days=1),
        )
    await blocker.hold(
        f"SELECT 1 FROM \"{s}\".rate_buckets WHERE name = 'api' AND partition = 'a' FOR UPDATE"
    )
    assert engine.collector is not None

    async with asyncio.timeout(10):
        report = await engine.collector.run_once()

    assert report.buckets == 1
    left = await db.fetch(f'SELECT partition FROM "{s}".rate_buckets')
    assert [r["partition"] for r in left] == ["a"]
    await blocker.release()
    assert (await engine.collector.run_once()).buckets == 1
