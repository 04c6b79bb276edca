"""The lean claim (`instance_claim_lean`): the claim of a queue front of plain rows (no
concurrency key, no rate limit) without the features' work. It takes the rows
`instance_claim` takes, with the same columns; when a row with a key or a limit is among the
rows it would take, it takes nothing and answers one row of NULLs, and the store claims with
`instance_claim` at once, so such a row is claimed in priority order under its rules.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from gendurable.db.rows import PickedRow
from gendurable.testing import MakeEngine
from raw_rows import Blocker, Leaf, row, without_waiting

WORK = timedelta(seconds=30)
WAIT = timedelta(seconds=90)
CLAIMS = ("instance_claim", "instance_claim_lean")


@pytest.fixture
async def engine(make_engine: MakeEngine) -> gd.Engine:
    """A client-only engine: nothing runs by itself; the test calls each statement."""
    return await make_engine(
        workflows=[Leaf], queues=None, rate_limits={"api": gd.Limit(10, per=timedelta(minutes=1))}
    )


async def put(
    db: asyncpg.Connection,
    schema: str,
    now: datetime,
    *,
    age: float = 1.0,
    priority: int = 0,
    queue: str = "default",
    step: str = "work",
    workflow: str = "raw.leaf",
    status: str = "available",
    concurrency_key: str | None = None,
    rate_limit: str | None = None,
) -> int:
    """One row due `age` seconds before `now` (not due yet for a negative age); its id."""
    at = now - timedelta(seconds=age)
    id: int = await db.fetchval(
        f'INSERT INTO "{schema}".instances (workflow, queue, step, state, status, run_at, '
        "priority, concurrency_key, rate_limit, locked_by, locked_until, inserted_at, "
        f'updated_at) VALUES ($1, $2, $3, \'{{"n": 1}}\', $4::text::"{schema}".status, $5, '
        "$6, $7, $8, CASE WHEN $4 = 'executing' THEN 'other' END, "
        "CASE WHEN $4 = 'executing' THEN $5::timestamptz + interval '1 hour' END, $5, $5) "
        "RETURNING id",
        workflow,
        queue,
        step,
        status,
        at,
        priority,
        concurrency_key,
        rate_limit,
    )
    return id


def values(now: datetime, limit: int = 10) -> dict[str, Any]:
    return {
        "queue": "default",
        "limit": limit,
        "locked_by": "me",
        "workflows": ["raw.leaf", "raw.leaf"],
        "steps": ["work", "wait"],
        "leases": [WORK, WAIT],
        "now": now,
    }


async def run(
    engine: gd.Engine, db: asyncpg.Connection, name: str, now: datetime, limit: int = 10
) -> list[asyncpg.Record]:
    """`name`'s answer on `db`, as the store would send it."""
    statement = engine.store.db.sql[name]
    given = values(now, limit)
    if name == "instance_claim":
        given["unknown_limit_wait"] = timedelta(seconds=5)
    return list(await db.fetch(statement.sql, *statement.bind(given)))


async def claimed_columns(db: asyncpg.Connection, schema: str, ids: list[int]) -> list[Any]:
    return [
        tuple(r)
        for r in await db.fetch(
            "SELECT id, status::text, locked_by, locked_until, run_at, throttled, updated_at "
            f'FROM "{schema}".instances WHERE id = ANY($1) ORDER BY id',
            ids,
        )
    ]


async def test_both_claims_take_the_same_plain_rows_in_the_same_order_and_leave_the_same_rows(
    engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    now = engine.clock.now()
    assert now is not None
    s = gendurable_schema
    first = await put(db, s, now, age=1, priority=5)
    second = await put(db, s, now, age=20)
    third = await put(db, s, now, age=10, step="wait")
    fourth = await put(db, s, now, age=5)
    # a claim clears `throttled` whatever set it
    await db.execute(f'UPDATE "{s}".instances SET throttled = true WHERE id = $1', second)
    # never taken: not due, another queue, a step or workflow this deploy does not know,
    # already executing
    others = [
        await put(db, s, now, age=-1, priority=9),
        await put(db, s, now, age=30, queue="elsewhere"),
        await put(db, s, now, age=30, step="gone"),
        await put(db, s, now, age=30, workflow="raw.other"),
        await put(db, s, now, age=30, status="executing"),
    ]
    every = [first, second, third, fourth, *others]
    answers, after = {}, {}
    for name in CLAIMS:
        tx = db.transaction()
        await tx.start()
        try:
            answers[name] = [tuple(r) for r in await run(engine, db, name, now, limit=3)]
            after[name] = await claimed_columns(db, s, every)
        finally:
            await tx.rollback()

    # The rows an UPDATE returns come in the order of its plan, not of the pick: compare
    # them by id. Which rows the LIMIT took is the pick's order (the fourth, due later than
    # the others of priority 0, is left).
    lean, general = sorted(answers["instance_claim_lean"]), sorted(answers["instance_claim"])
    assert [r[0] for r in lean] == sorted([first, second, third])
    assert lean == general
    assert after["instance_claim_lean"] == after["instance_claim"]
    picked = {p.id: p for p in (PickedRow(*r) for r in lean)}
    assert all(p.go and not p.unknown_limit and p.contended == 0 for p in picked.values())
    assert {id: p.waited for id, p in picked.items()} == {first: 1.0, second: 20.0, third: 10.0}
    leases = {r[0]: r[3] - now for r in after["instance_claim_lean"] if r[2] == "me"}
    assert leases == {first: WORK, second: WORK, third: WAIT}


@pytest.mark.parametrize("name", CLAIMS)
async def test_a_paused_queue_is_claimed_by_neither(
    engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str, name: str
) -> None:
    now = engine.clock.now()
    assert now is not None
    plain = await put(db, gendurable_schema, now)
    await engine.pause("default")

    assert await run(engine, db, name, now) == []
    assert (await row(db, gendurable_schema, plain))["status"] == "available"


@pytest.mark.parametrize("feature", ["key", "limit"])
@pytest.mark.parametrize("ahead", [True, False])
async def test_the_lean_claim_takes_nothing_when_a_row_with_a_key_or_limit_is_among_its_rows(
    engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str, feature: str, ahead: bool
) -> None:
    now = engine.clock.now()
    assert now is not None
    plain = await put(db, gendurable_schema, now, age=10)
    general = await put(
        db,
        gendurable_schema,
        now,
        age=20 if ahead else 5,
        concurrency_key="ck" if feature == "key" else None,
        rate_limit="api" if feature == "limit" else None,
    )

    answer = await run(engine, db, "instance_claim_lean", now)

    assert [tuple(r) for r in answer] == [(None,) * len(PickedRow.__struct_fields__)]
    for id in (plain, general):
        assert (await row(db, gendurable_schema, id))["status"] == "available"


@pytest.mark.parametrize("feature", ["key", "limit"])
async def test_a_row_with_a_key_or_limit_behind_the_rows_taken_leaves_the_lean_claim_lean(
    engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str, feature: str
) -> None:
    now = engine.clock.now()
    assert now is not None
    plain = await put(db, gendurable_schema, now, age=10)
    await put(
        db,
        gendurable_schema,
        now,
        age=5,
        concurrency_key="ck" if feature == "key" else None,
        rate_limit="api" if feature == "limit" else None,
    )

    answer = await run(engine, db, "instance_claim_lean", now, limit=1)

    assert [r["id"] for r in answer] == [plain]


async def claim(engine: gd.Engine, now: datetime, limit: int = 10) -> list[PickedRow]:
    return await engine.store.instance_claim(**values(now, limit))


@pytest.mark.parametrize("feature", ["key", "limit"])
async def test_a_row_with_a_key_or_limit_is_claimed_in_priority_order_among_plain_rows(
    engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str, feature: str
) -> None:
    now = engine.clock.now()
    assert now is not None
    s = gendurable_schema
    plain = [await put(db, s, now, age=age) for age in (30, 20)]
    general = await put(
        db,
        s,
        now,
        priority=1,
        concurrency_key="ck" if feature == "key" else None,
        rate_limit="api" if feature == "limit" else None,
    )

    assert [(r.id, r.go) for r in await claim(engine, now, limit=1)] == [(general, True)]
    # (the answer comes in the UPDATE's order, not the pick's: by id)
    assert sorted((r.id, r.go) for r in await claim(engine, now)) == [
        (p, True) for p in sorted(plain)
    ]


async def test_a_row_whose_key_executes_elsewhere_is_passed_over_not_claimed(
    engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    now = engine.clock.now()
    assert now is not None
    s = gendurable_schema
    await put(db, s, now, status="executing", concurrency_key="ck")
    waiting = await put(db, s, now, age=30, priority=1, concurrency_key="ck")
    plain = await put(db, s, now, age=10)

    assert [r.id for r in await claim(engine, now)] == [plain]
    assert (await row(db, s, waiting))["status"] == "available"


async def test_a_row_whose_limit_no_engine_configures_is_deferred_not_claimed(
    engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    now = engine.clock.now()
    assert now is not None
    s = gendurable_schema
    unconfigured = await put(db, s, now, age=30, rate_limit="nobody")
    plain = await put(db, s, now, age=10)

    answer = {r.id: (r.go, r.unknown_limit) for r in await claim(engine, now)}

    assert answer == {unconfigured: (False, True), plain: (True, False)}
    assert (await row(db, s, unconfigured))["status"] == "available"


@pytest.fixture
async def blocker(gendurable_dsn: str) -> AsyncIterator[Blocker]:
    held = await Blocker.open(gendurable_dsn)
    yield held
    await held.release()


@pytest.mark.parametrize("name", CLAIMS)
async def test_both_claims_pass_over_a_row_another_transaction_holds(
    engine: gd.Engine,
    db: asyncpg.Connection,
    gendurable_schema: str,
    blocker: Blocker,
    gendurable_dsn: str,
    name: str,
) -> None:
    now = engine.clock.now()
    assert now is not None
    held = await put(db, gendurable_schema, now, age=20)
    free = await put(db, gendurable_schema, now, age=10)
    await blocker.hold(
        f'SELECT 1 FROM "{gendurable_schema}".instances WHERE id = $1 FOR UPDATE', held
    )
    other = await asyncpg.connect(gendurable_dsn)
    try:
        answer = await without_waiting(db, run(engine, other, name, now))
    finally:
        await other.close()

    assert [r["id"] for r in answer] == [free]
    assert (await row(db, gendurable_schema, held))["status"] == "available"
