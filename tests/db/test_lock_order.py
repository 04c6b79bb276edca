"""Guarantee 8: every multi-row writer locks in a fixed order (keys, ids, bucket keys), so two
writers can never wait on each other in a cycle.

Each test holds the *first* row of the order in a blocker transaction and starts the
writer: it must stop at that row, holding none of the later ones, which a probe checks
without waiting. A writer that took a later row first (the order broken) holds it while it
waits, and a second writer going the other way would deadlock with it.

The group commit takes its rows with SKIP LOCKED: it never waits, so no order of its own
can close a cycle. What it must keep is that a row it ends is ended only while it holds
the row's parent (which the ending counts down) and that a parent held elsewhere makes it
wait for nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from commit_support import GROUP_COMMITS, commit, finish
from gendurable.db.operator_store import OperatorStore
from gendurable.testing import MakeEngine
from raw_rows import (
    Blocker,
    Leaf,
    insert,
    instance_locked,
    lock_waiter,
    locked,
    row,
    without_waiting,
)

LEASE = timedelta(seconds=30)


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


async def test_batch_insert_takes_key_locks_in_key_order(
    engine: gd.Engine,
    db: asyncpg.Connection,
    gendurable_dsn: str,
    gendurable_schema: str,
    blocker: Blocker,
) -> None:
    now = engine.clock.now()
    assert now is not None
    # The blocker inserts key "a" without committing: whoever inserts "a" now waits for it.
    await insert(blocker.conn, gendurable_schema, now, key="a")
    batch = asyncio.create_task(Leaf.start_many([Leaf.new(key="b"), Leaf.new(key="a")]))
    await lock_waiter(db)

    # The batch, given (b, a), waits at "a" without having taken "b".
    probe = await asyncpg.connect(gendurable_dsn)
    try:
        await probe.execute("SET lock_timeout = '2s'")
        tx = probe.transaction()
        await tx.start()
        try:
            await insert(probe, gendurable_schema, now, key="b")
        except asyncpg.LockNotAvailableError:
            pytest.fail("the batch took key 'b' before waiting for key 'a'")
        await tx.rollback()
    finally:
        await probe.close()
    await blocker.release()
    async with asyncio.timeout(10):
        handles = await batch
    assert [(h.key, h.created) for h in handles] == [("b", True), ("a", True)]


async def test_claim_takes_rate_buckets_in_key_order(
    engine: gd.Engine,
    db: asyncpg.Connection,
    gendurable_dsn: str,
    gendurable_schema: str,
    blocker: Blocker,
) -> None:
    now = engine.clock.now()
    assert now is not None
    s = gendurable_schema
    parts = ["p0", "p1", "p2", "p3", "p4", "p5"]
    for part in reversed(parts):  # the urgency order of the rows is the reverse of the keys
        await insert(db, s, now, rate_partition=part)
        await db.execute(
            f'INSERT INTO "{s}".rate_buckets (name, partition, tokens, refreshed_at) '
            "VALUES ('api', $1, 10, $2)",
            part,
            now,
        )
    bucket = f"SELECT 1 FROM \"{s}\".rate_buckets WHERE name = 'api' AND partition = $1"
    await blocker.hold(bucket + " FOR UPDATE", "p0")
    claim = asyncio.create_task(
        engine.store.instance_claim(
            queue="default",
            limit=10,
            locked_by="w1",
            leases=[LEASE],
            now=now,
            workflows=["raw.leaf"],
            steps=["work"],
        )
    )
    await lock_waiter(db)

    for part in parts[1:]:
        assert not await locked(gendurable_dsn, bucket + " FOR UPDATE NOWAIT", part), part
    await blocker.release()
    async with asyncio.timeout(10):
        claimed = await claim
    assert all(r.go for r in claimed)
    assert len(claimed) == len(parts)


async def family(
    db: asyncpg.Connection, schema: str, engine: gd.Engine, children: int, **child: Any
) -> tuple[int, list[int]]:
    now = engine.clock.now()
    assert now is not None
    parent = await insert(db, schema, now, status="waiting", pending=children)
    kids = [await insert(db, schema, now, parent=parent, **child) for _ in range(children)]
    return parent, kids


async def test_cancel_locks_the_parent_before_the_row_it_ends(
    engine: gd.Engine,
    db: asyncpg.Connection,
    gendurable_dsn: str,
    gendurable_schema: str,
    blocker: Blocker,
) -> None:
    parent, (child,) = await family(db, gendurable_schema, engine, 1, status="awaiting")
    await blocker.hold(lock_row(gendurable_schema), parent)
    cancel = asyncio.create_task(Leaf.cancel(child))
    await lock_waiter(db)

    assert not await instance_locked(gendurable_dsn, gendurable_schema, child)
    await blocker.release()
    async with asyncio.timeout(10):
        await cancel
    assert (await row(db, gendurable_schema, child))["status"] == "cancelled"
    counted = await row(db, gendurable_schema, parent)
    assert (counted["status"], counted["pending_children"]) == ("available", 0)


@pytest.mark.parametrize("statement", GROUP_COMMITS)
async def test_group_commit_ends_a_row_only_while_it_holds_the_parent(
    engine: gd.Engine,
    db: asyncpg.Connection,
    gendurable_dsn: str,
    gendurable_schema: str,
    blocker: Blocker,
    statement: str,
) -> None:
    # A finishing row counts its parent down, so the group commit takes the parent's lock
    # in the same step as the row's (SKIP LOCKED, in id order) and ends the row only when it
    # got both. With the parent held elsewhere it waits for neither: it leaves the row as it
    # was, holds nothing, and reports the outcome busy, to be sent again.
    now = engine.clock.now()
    parent, (child,) = await family(
        db, gendurable_schema, engine, 1, status="executing", locked_by="w1",
        locked_until=now + LEASE,
    )  # fmt: skip
    await blocker.hold(lock_row(gendurable_schema), parent)

    ended = [finish(child, "w1", "done")]
    held = await without_waiting(db, commit(engine, ended, statement=statement))

    assert held == ({}, {child})
    assert (await row(db, gendurable_schema, child))["status"] == "executing"
    assert not await instance_locked(gendurable_dsn, gendurable_schema, child)
    await blocker.release()
    assert await commit(engine, ended, statement=statement) == ({child: None}, set())
    assert (await row(db, gendurable_schema, child))["status"] == "done"
    counted = await row(db, gendurable_schema, parent)
    assert (counted["status"], counted["pending_children"]) == ("available", 0)


async def test_cancel_cascade_locks_descendants_in_id_order(
    engine: gd.Engine,
    db: asyncpg.Connection,
    gendurable_dsn: str,
    gendurable_schema: str,
    blocker: Blocker,
) -> None:
    parent, kids = await family(db, gendurable_schema, engine, 3, status="awaiting")
    await blocker.hold(lock_row(gendurable_schema), kids[0])
    cancel = asyncio.create_task(Leaf.cancel(parent))
    await lock_waiter(db)

    for kid in kids[1:]:
        assert not await instance_locked(gendurable_dsn, gendurable_schema, kid), kid
    await blocker.release()
    async with asyncio.timeout(10):
        await cancel
    for kid in kids:
        assert (await row(db, gendurable_schema, kid))["status"] == "cancelled"


async def test_retry_locks_the_parent_before_the_child_it_puts_back(
    engine: gd.Engine,
    db: asyncpg.Connection,
    gendurable_dsn: str,
    gendurable_schema: str,
    blocker: Blocker,
) -> None:
    # The blocker holds the parent, so the retry of its failed child waits, holding nothing.
    # Then the blocker takes the child too, as a writer keeping the id order does: a retry
    # that had taken the child first would now wait for the parent while holding the child,
    # and the two would deadlock.
    s = gendurable_schema
    parent, (child,) = await family(db, s, engine, 1, status="failed")
    await blocker.hold(lock_row(s), parent)
    retry = asyncio.create_task(OperatorStore(engine.store.db).instance_retry(id=child, now=None))
    await lock_waiter(db)

    assert not await instance_locked(gendurable_dsn, s, child)
    await blocker.hold("SET lock_timeout = '5s'")
    await blocker.hold(lock_row(s), child)
    await blocker.release()
    async with asyncio.timeout(10):
        retried = await retry
    assert retried.retried == child
    counted = await row(db, s, parent)
    assert (counted["status"], counted["pending_children"]) == ("waiting", 2)
    assert (await row(db, s, child))["status"] == "available"
