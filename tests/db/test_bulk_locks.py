"""Bulk pages and rewinds interleaved with a concurrent writer.

A page (`instances_retry_many`, `instances_cancel_many`) takes its rows and their parents
in id order with SKIP LOCKED: held by a writer, a row or its parent makes that row `busy`,
the page waits for nothing and leaves it as it was; a bulk run then does that row alone,
with the single-row statement, which waits for the writer and judges what it committed. A
page a deadlock chose as its victim, or one a start beat to a key, is run again. A rewind
takes the parent before the instance, as a retry does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

import gendurable as gd
from gendurable.bulk import CANCEL, RETRY, BulkRun
from gendurable.db.repair_store import Match, RepairStore
from gendurable.testing import MakeEngine
from raw_rows import Blocker, Leaf, insert, instance_locked, lock_waiter, row, without_waiting


@pytest.fixture
async def engine(make_engine: MakeEngine) -> gd.Engine:
    """A client-only engine: nothing runs by itself; the test calls each statement."""
    return await make_engine(workflows=[Leaf], queues=None)


@pytest.fixture
def repairs(engine: gd.Engine) -> RepairStore:
    return RepairStore(engine.store.db)


@pytest.fixture
async def blocker(gendurable_dsn: str) -> AsyncIterator[Blocker]:
    held = await Blocker.open(gendurable_dsn)
    yield held
    await held.release()


async def commit(blocker: Blocker) -> None:
    """End the blocker's transaction by committing what it wrote."""
    await blocker.tx.commit()
    await blocker.conn.close()


def lock_row(schema: str) -> str:
    return f'SELECT 1 FROM "{schema}".instances WHERE id = $1 FOR UPDATE'


async def test_retry_page_passes_over_held_rows_and_children_of_held_parents(
    engine: gd.Engine,
    repairs: RepairStore,
    db: asyncpg.Connection,
    gendurable_dsn: str,
    gendurable_schema: str,
    blocker: Blocker,
) -> None:
    s, now = gendurable_schema, engine.clock.now()
    assert now is not None
    first = await insert(db, s, now, status="failed")
    held = await insert(db, s, now, status="failed")
    parent = await insert(db, s, now, status="waiting", pending=1)
    child = await insert(db, s, now, status="failed", parent=parent)
    last = await insert(db, s, now, status="failed")
    await blocker.hold(lock_row(s), held)
    await blocker.hold(lock_row(s), parent)

    verdicts = await without_waiting(
        db, repairs.instances_retry_many(ids=[first, held, child, last], now=None)
    )

    assert [(v.id, v.verdict) for v in verdicts] == [
        (first, "retried"), (held, "busy"), (child, "busy"), (last, "retried"),
    ]  # fmt: skip
    assert [(await row(db, s, i))["status"] for i in (held, child)] == ["failed", "failed"]
    assert (await row(db, s, parent))["pending_children"] == 1
    for id in (first, child, last):
        assert not await instance_locked(gendurable_dsn, s, id), id


async def test_cancel_page_passes_over_held_rows_and_children_of_held_parents(
    engine: gd.Engine,
    repairs: RepairStore,
    db: asyncpg.Connection,
    gendurable_dsn: str,
    gendurable_schema: str,
    blocker: Blocker,
) -> None:
    s, now = gendurable_schema, engine.clock.now()
    assert now is not None
    first = await insert(db, s, now, status="awaiting")
    held = await insert(db, s, now, status="available")
    parent = await insert(db, s, now, status="waiting", pending=1)
    child = await insert(db, s, now, status="awaiting", parent=parent)
    await blocker.hold(lock_row(s), held)
    await blocker.hold(lock_row(s), parent)

    page = await without_waiting(
        db, repairs.instances_cancel_many(ids=[first, held, child], now=None)
    )

    assert [(v.id, v.verdict) for v in page.verdicts] == [
        (first, "cancelled"), (held, "busy"), (child, "busy"),
    ]  # fmt: skip
    assert [(await row(db, s, i))["status"] for i in (first, held, child)] == [
        "cancelled", "available", "awaiting",
    ]  # fmt: skip
    assert (await row(db, s, parent))["pending_children"] == 1


async def test_bulk_retry_waits_for_a_held_row_alone_and_judges_what_its_holder_committed(
    engine: gd.Engine,
    repairs: RepairStore,
    db: asyncpg.Connection,
    gendurable_schema: str,
    blocker: Blocker,
) -> None:
    # The holder puts the row back itself (a retry from elsewhere) and commits: the run,
    # which waited for it, finds it no longer failed, and retries the others.
    s, now = gendurable_schema, engine.clock.now()
    assert now is not None
    ids = [await insert(db, s, now, status="failed") for _ in range(3)]
    await blocker.hold(f"UPDATE \"{s}\".instances SET status = 'available' WHERE id = $1", ids[1])
    run = BulkRun(repairs, RETRY, Match(statuses=("failed",), workflow="raw.leaf"))
    task = asyncio.create_task(run.run())
    await lock_waiter(db)

    assert (run.report.acted, run.report.left) == (2, 1)  # waiting for ids[1] alone
    await commit(blocker)
    async with asyncio.timeout(10):
        report = await task

    assert (report.matched, report.acted, report.skipped) == (3, 2, {"not_failed": 1})
    assert report.examples == {"not_failed": [ids[1]]}


async def test_bulk_cancel_ends_a_held_row_once_its_holder_lets_go(
    engine: gd.Engine,
    repairs: RepairStore,
    db: asyncpg.Connection,
    gendurable_schema: str,
    blocker: Blocker,
) -> None:
    s, now = gendurable_schema, engine.clock.now()
    assert now is not None
    ids = [await insert(db, s, now, status="awaiting") for _ in range(3)]
    await blocker.hold(lock_row(s), ids[0])
    run = BulkRun(repairs, CANCEL, Match(statuses=("awaiting",), workflow="raw.leaf"))
    task = asyncio.create_task(run.run())
    await lock_waiter(db)

    await blocker.release()
    async with asyncio.timeout(10):
        report = await task

    assert (report.matched, report.acted, report.skipped) == (3, 3, {})
    assert [(await row(db, s, i))["status"] for i in ids] == ["cancelled"] * 3


async def test_retry_page_beaten_to_a_key_by_a_start_runs_again_and_names_the_holder(
    engine: gd.Engine,
    repairs: RepairStore,
    db: asyncpg.Connection,
    gendurable_schema: str,
    blocker: Blocker,
) -> None:
    # The start inserts the key after the page's snapshot: the unique index makes the page
    # wait for it, then refuses it; run again, the page sees the holder and leaves the row.
    s, now = gendurable_schema, engine.clock.now()
    assert now is not None
    failed = await insert(db, s, now, status="failed", key="k")
    other = await insert(db, s, now, status="failed")
    holder = await insert(blocker.conn, s, now, key="k")
    page = asyncio.create_task(repairs.instances_retry_many(ids=[failed, other], now=None))
    await lock_waiter(db)

    await commit(blocker)
    async with asyncio.timeout(10):
        verdicts = await page

    assert [(v.id, v.verdict, v.holder) for v in verdicts] == [
        (failed, "key_held", holder), (other, "retried", None),
    ]  # fmt: skip


async def test_cancel_page_chosen_as_a_deadlock_victim_runs_again(
    engine: gd.Engine,
    repairs: RepairStore,
    db: asyncpg.Connection,
    gendurable_schema: str,
    blocker: Blocker,
) -> None:
    # The blocker holds a child, so the page's cascade waits for it; the blocker then asks
    # for the parent the page holds (against the id order every gendurable writer keeps).
    # PostgreSQL ends the page, the first to wait, as the deadlock's victim; run again, the
    # page finds the parent held and passes over it, waiting for nothing.
    s, now = gendurable_schema, engine.clock.now()
    assert now is not None
    parent = await insert(db, s, now, status="waiting", pending=1)
    child = await insert(db, s, now, status="awaiting", parent=parent)
    await blocker.hold(lock_row(s), child)
    page = asyncio.create_task(repairs.instances_cancel_many(ids=[parent], now=None))
    await lock_waiter(db)

    crossing = asyncio.create_task(blocker.hold(lock_row(s), parent))
    async with asyncio.timeout(20):
        result = await page
        await crossing

    assert [(v.id, v.verdict) for v in result.verdicts] == [(parent, "busy")]
    assert [(await row(db, s, i))["status"] for i in (parent, child)] == ["waiting", "awaiting"]


async def test_rewind_locks_the_parent_before_the_child_it_restarts(
    engine: gd.Engine,
    repairs: RepairStore,
    db: asyncpg.Connection,
    gendurable_dsn: str,
    gendurable_schema: str,
    blocker: Blocker,
) -> None:
    # As for a retry: the blocker holds the parent, so the rewind of its cancelled child
    # waits holding nothing; the blocker then takes the child as well, as a writer keeping
    # the id order does, and the two finish one after the other.
    s, now = gendurable_schema, engine.clock.now()
    assert now is not None
    parent = await insert(db, s, now, status="waiting", pending=1)
    child = await insert(db, s, now, status="cancelled", parent=parent, step="wait")
    await blocker.hold(lock_row(s), parent)
    rewind = asyncio.create_task(
        repairs.instance_rewind(
            id=child, step="work", state=None, state_version=None, max_attempts=3,
            rate_limit=None, rate_partition=None, weight=1, now=None,
        )
    )  # fmt: skip
    await lock_waiter(db)

    assert not await instance_locked(gendurable_dsn, s, child)
    await blocker.hold("SET lock_timeout = '5s'")
    await blocker.hold(lock_row(s), child)
    await blocker.release()
    async with asyncio.timeout(10):
        answer = await rewind
    assert (answer.rewound, answer.step) == (child, "work")
    assert (await row(db, s, parent))["pending_children"] == 2
    assert (await row(db, s, child))["status"] == "available"


async def test_rewind_beaten_to_its_key_by_a_start_runs_again_and_names_the_holder(
    engine: gd.Engine,
    repairs: RepairStore,
    db: asyncpg.Connection,
    gendurable_schema: str,
    blocker: Blocker,
) -> None:
    s, now = gendurable_schema, engine.clock.now()
    assert now is not None
    cancelled = await insert(db, s, now, status="cancelled", key="k")
    holder = await insert(blocker.conn, s, now, key="k")
    rewind = asyncio.create_task(
        repairs.instance_rewind(
            id=cancelled, step="work", state=None, state_version=None, max_attempts=3,
            rate_limit=None, rate_partition=None, weight=1, now=None,
        )
    )  # fmt: skip
    await lock_waiter(db)

    await commit(blocker)
    async with asyncio.timeout(10):
        answer = await rewind

    assert (answer.rewound, answer.holder) == (None, holder)
    assert (await row(db, s, cancelled))["status"] == "cancelled"
