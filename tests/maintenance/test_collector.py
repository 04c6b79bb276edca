"""Garbage collection: terminal rows past retention, idle buckets, configs nobody holds."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from gendurable.maintenance.collector import CONFIG_TTL, Collector
from gendurable.testing import MakeEngine, ManualClock, RecorderFactory

DAY = timedelta(days=1)
LIVE = ("available", "executing", "awaiting", "waiting")
TERMINAL = ("done", "failed", "cancelled")


@gd.workflow(name="gc.flow")
class Flow:
    @gd.step(start=True)
    async def first(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.wait)

    @gd.step
    @gd.await_signals("go")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        if state == "fail":
            return gd.stop("asked to")
        return gd.done({"ok": True})


async def insert(
    db: asyncpg.Connection,
    schema: str,
    *,
    status: str,
    at: datetime,
    finished_at: datetime | None = None,
    parent_id: int | None = None,
    n: int = 1,
) -> list[int]:
    """Insert `n` rows of an unknown workflow (never claimed) straight into the table."""
    rows = await db.fetch(
        f"""
        INSERT INTO "{schema}".instances
            (workflow, queue, step, status, run_at, inserted_at, updated_at, finished_at,
             parent_id)
        SELECT 'gc.raw', 'default', 'only', $1::"{schema}".status, $2, $2, $2, $3, $4
        FROM generate_series(1, $5)
        RETURNING id
        """,
        status,
        at,
        finished_at,
        parent_id,
        n,
    )
    return [r["id"] for r in rows]


async def ids(db: asyncpg.Connection, schema: str) -> set[int]:
    return {r["id"] for r in await db.fetch(f'SELECT id FROM "{schema}".instances')}


async def client(make_engine: MakeEngine, **options: Any) -> gd.Engine:
    """A client-only engine: nothing runs by itself, the test calls the collector by hand."""
    return await make_engine(workflows=[Flow], queues=None, **options)


# -- terminal instances ----------------------------------------------------------------------


async def test_gc_sweeps_terminal_rows_past_retention_through_drain(
    make_engine: MakeEngine,
    recorder: RecorderFactory,
    manual_clock: ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    engine = await make_engine(workflows=[Flow], start=False)
    rec = recorder(engine)
    await engine.start()
    await Flow.start(key="done", state="ok", engine=engine)
    await Flow.start(key="failed", state="fail", engine=engine)
    await Flow.start(key="cancelled", engine=engine)
    await Flow.start(key="live", engine=engine)
    await engine.drain()
    await Flow.cancel("cancelled", engine=engine)
    for key in ("done", "failed"):
        await Flow.signal(key, "go", engine=engine)
    await engine.drain()
    statuses = {
        r["key"]: r["status"]
        for r in await db.fetch(f'SELECT key, status::text FROM "{gendurable_schema}".instances')
    }
    assert statuses == {
        "done": "done",
        "failed": "failed",
        "cancelled": "cancelled",
        "live": "awaiting",
    }

    manual_clock.advance(DAY)  # exactly the retention: not older than it yet
    await engine.drain()
    assert rec.of(("gc", "swept")) == []
    assert len(await ids(db, gendurable_schema)) == 4

    manual_clock.advance(timedelta(microseconds=1))
    await engine.drain()
    left = await db.fetch(f'SELECT key FROM "{gendurable_schema}".instances')
    assert [r["key"] for r in left] == ["live"]
    assert rec.of(("gc", "swept")) == [{"instances": 3, "buckets": 0, "configs": 0}]
    await Flow.signal("live", "go", engine=engine)  # the live instance still works
    await engine.drain()
    assert (await Flow.get("live", engine=engine)).status == "done"


async def test_gc_deletes_the_inbox_with_the_instance(
    make_engine: MakeEngine,
    manual_clock: ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    engine = await client(make_engine)
    now = manual_clock.now()
    old, young = await insert(
        db, gendurable_schema, status="done", at=now, finished_at=now - 2 * DAY, n=2
    )
    await db.execute(
        f'UPDATE "{gendurable_schema}".instances SET finished_at = $2 WHERE id = $1', young, now
    )
    await db.executemany(
        f"""INSERT INTO "{gendurable_schema}".signals (instance_id, name, payload, received_at)
            VALUES ($1, 'late', '{{}}'::jsonb, $2)""",
        [(old, now), (old, now), (young, now)],
    )
    report = await collector(engine).run_once()
    assert report.instances == 1
    inbox = await db.fetch(f'SELECT instance_id FROM "{gendurable_schema}".signals')
    assert [r["instance_id"] for r in inbox] == [young]


def collector(engine: gd.Engine) -> Collector:
    assert engine.collector is not None
    return engine.collector


@pytest.mark.parametrize("status", LIVE)
async def test_gc_never_deletes_a_live_row_even_with_an_old_finished_at(
    status: str,
    make_engine: MakeEngine,
    manual_clock: ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    # A live row keeps whatever finished_at it has (a failed row revived by hand, say): only
    # the status says whether an instance has ended.
    engine = await client(make_engine)
    now = manual_clock.now()
    live = await insert(db, gendurable_schema, status=status, at=now, finished_at=now - 9 * DAY)
    await insert(db, gendurable_schema, status="failed", at=now, finished_at=now - 9 * DAY)
    await collector(engine).run_once()
    assert await ids(db, gendurable_schema) == set(live)  # the failed one went


@pytest.mark.parametrize("parent_status", LIVE)
async def test_gc_keeps_terminal_children_while_their_parent_is_live(
    parent_status: str,
    make_engine: MakeEngine,
    manual_clock: ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    engine = await client(make_engine)
    now = manual_clock.now()
    old = now - 3 * DAY
    (parent,) = await insert(db, gendurable_schema, status=parent_status, at=now)
    children = await insert(
        db, gendurable_schema, status="done", at=now, finished_at=old, parent_id=parent, n=3
    )
    (orphan,) = await insert(
        db, gendurable_schema, status="done", at=now, finished_at=old, parent_id=10**12
    )
    report = await collector(engine).run_once()
    assert report.instances == 1  # the child of a parent that no longer exists goes
    assert await ids(db, gendurable_schema) == {parent, *children}
    assert orphan not in await ids(db, gendurable_schema)

    # The parent ends (its next step read its children); later its children go too.
    await db.execute(
        f"""UPDATE "{gendurable_schema}".instances
            SET status = 'done', finished_at = $2 WHERE id = $1""",
        parent,
        now,
    )
    report = await collector(engine).run_once()
    assert report.instances == 3
    assert await ids(db, gendurable_schema) == {parent}
    manual_clock.advance(2 * DAY)
    await collector(engine).run_once()
    assert await ids(db, gendurable_schema) == set()


async def test_gc_retention_none_keeps_every_row(
    make_engine: MakeEngine,
    manual_clock: ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    engine = await client(make_engine, gc_retention=None)
    now = manual_clock.now()
    kept = await insert(db, gendurable_schema, status="done", at=now, finished_at=now - 400 * DAY)
    manual_clock.advance(400 * DAY)
    report = await collector(engine).run_once()
    assert report.instances == 0
    assert await ids(db, gendurable_schema) == set(kept)


async def test_gc_retention_is_configurable(
    make_engine: MakeEngine,
    manual_clock: ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    engine = await client(make_engine, gc_retention=timedelta(hours=1))
    now = manual_clock.now()
    (recent,) = await insert(
        db, gendurable_schema, status="done", at=now, finished_at=now - timedelta(minutes=59)
    )
    await insert(
        db, gendurable_schema, status="done", at=now, finished_at=now - timedelta(minutes=61)
    )
    await collector(engine).run_once()
    assert await ids(db, gendurable_schema) == {recent}


async def test_gc_run_sweeps_every_due_row_in_bounded_batches(
    make_engine: MakeEngine,
    manual_clock: ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    # Batches of 7 over 100 due rows, with kept children of a live parent spread among them
    # (a batch that deletes nothing must not end the run).
    engine = await client(make_engine, gc_batch=7)
    now = manual_clock.now()
    (parent,) = await insert(db, gendurable_schema, status="waiting", at=now)
    kept = await insert(
        db,
        gendurable_schema,
        status="done",
        at=now,
        finished_at=now - 5 * DAY,
        parent_id=parent,
        n=20,
    )
    for age in range(100):
        await insert(
            db,
            gendurable_schema,
            status=random.choice(TERMINAL),
            at=now,
            finished_at=now - 2 * DAY - timedelta(seconds=age % 10),
        )
    report = await collector(engine).run_once()
    assert report.instances == 100
    assert await ids(db, gendurable_schema) == {parent, *kept}


@pytest.mark.fresh_schema
async def test_gc_sweep_is_an_index_range_of_one_batch(
    make_engine: MakeEngine,
    manual_clock: ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    # O(batch), never O(table): the statement reads the instances_terminal index from the
    # cursor and stops after one batch, however many rows the table holds.
    engine = await client(make_engine)
    now = manual_clock.now()
    await insert(db, gendurable_schema, status="awaiting", at=now, n=20_000)
    await insert(db, gendurable_schema, status="done", at=now, finished_at=now - 2 * DAY, n=5_000)
    await db.execute(f'ANALYZE "{gendurable_schema}".instances')
    statement = engine.store.db.sql["terminal_sweep"]
    args = statement.args(now=now, retention=DAY, after_finished_at=None, after_id=None, limit=100)
    tx = db.transaction()
    await tx.start()
    explained = await db.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement.sql}", *args)
    await tx.rollback()  # ANALYZE ran the delete
    nodes = list(walk(json.loads(explained)[0]["Plan"]))
    on_instances = [n for n in nodes if n.get("Relation Name") == "instances"]
    assert {n["Node Type"] for n in on_instances} <= {
        "Index Scan",
        "Index Only Scan",
        "ModifyTable",
    }
    scan = next(n for n in on_instances if n.get("Index Name") == "instances_terminal")
    assert "ROW(finished_at, id) >" in scan["Index Cond"]  # starts at the cursor
    assert scan["Actual Rows"] * scan["Actual Loops"] == 100
    for node in on_instances:  # every other access is a lookup of one of the batch's rows
        assert node["Actual Rows"] * node["Actual Loops"] <= 100
    assert await db.fetchval(f'SELECT count(*) FROM "{gendurable_schema}".instances') == 25_000


def walk(node: dict[str, Any]) -> Any:
    yield node
    for child in node.get("Plans", []):
        yield from walk(child)


async def test_gc_skips_rows_another_transaction_holds(
    make_engine: MakeEngine,
    manual_clock: ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    # A row locked elsewhere (a signal being delivered, another collector) is skipped, never
    # waited for: the sweep finishes and takes that row on a later run.
    engine = await client(make_engine)
    now = manual_clock.now()
    held, *rest = await insert(
        db, gendurable_schema, status="done", at=now, finished_at=now - 2 * DAY, n=5
    )
    tx = db.transaction()
    await tx.start()
    await db.execute(
        f'SELECT 1 FROM "{gendurable_schema}".instances WHERE id = $1 FOR UPDATE', held
    )
    async with asyncio.timeout(10):
        report = await collector(engine).run_once()
    await tx.rollback()
    assert report.instances == len(rest)
    assert await ids(db, gendurable_schema) == {held}
    assert (await collector(engine).run_once()).instances == 1


@pytest.mark.race
async def test_gc_on_several_nodes_deletes_each_row_exactly_once(
    make_engine: MakeEngine,
    manual_clock: ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    engines = [await client(make_engine, gc_batch=13) for _ in range(4)]
    await db.execute(
        f"""INSERT INTO "{gendurable_schema}".rate_configs
                (name, allowed, per_ms, burst, updated_at)
            VALUES ('api', 10, 1000, 10, $1)""",
        manual_clock.now(),
    )
    for _ in range(15):
        now = manual_clock.now()
        (parent,) = await insert(db, gendurable_schema, status="waiting", at=now)
        kept = await insert(
            db,
            gendurable_schema,
            status="failed",
            at=now,
            finished_at=now - 2 * DAY,
            parent_id=parent,
            n=10,
        )
        due = await insert(
            db, gendurable_schema, status="done", at=now, finished_at=now - 2 * DAY, n=300
        )
        await db.execute(
            f"""INSERT INTO "{gendurable_schema}".rate_buckets
                    (name, partition, tokens, refreshed_at)
                SELECT 'api', 't' || g, 10, $1 FROM generate_series(1, 60) g""",
            now,
        )
        reports = await asyncio.gather(*(collector(e).run_once() for e in engines))
        assert sum(r.instances for r in reports) == len(due)
        assert sum(r.buckets for r in reports) == 60
        assert await ids(db, gendurable_schema) == {parent, *kept}
        assert await db.fetchval(f'SELECT count(*) FROM "{gendurable_schema}".rate_buckets') == 0
        await db.execute(f'DELETE FROM "{gendurable_schema}".instances')
        manual_clock.advance(timedelta(minutes=1))


# -- rate buckets and configs ------------------------------------------------------------------


async def bucket(
    db: asyncpg.Connection, schema: str, name: str, partition: str, tokens: float, at: datetime
) -> None:
    await db.execute(
        f"""INSERT INTO "{schema}".rate_buckets (name, partition, tokens, refreshed_at)
            VALUES ($1, $2, $3, $4)""",
        name,
        partition,
        tokens,
        at,
    )


async def buckets(db: asyncpg.Connection, schema: str) -> set[tuple[str, str]]:
    rows = await db.fetch(f'SELECT name, partition FROM "{schema}".rate_buckets')
    return {(r["name"], r["partition"]) for r in rows}


async def test_gc_prunes_buckets_idle_past_their_refill_horizon(
    make_engine: MakeEngine,
    recorder: RecorderFactory,
    manual_clock: ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    # 60 tokens a minute, burst 30: an empty bucket is full again after 30 seconds.
    engine = await client(
        make_engine, rate_limits={"api": gd.Limit(60, per=timedelta(minutes=1), burst=30)}
    )
    rec = recorder(engine)
    now = manual_clock.now()
    await bucket(db, gendurable_schema, "api", "full", 30, now)
    await bucket(db, gendurable_schema, "api", "empty", 0, now)
    await bucket(db, gendurable_schema, "api", "half", 15, now)
    await bucket(db, gendurable_schema, "api", "", 29.5, now)
    assert (await collector(engine).run_once()).buckets == 1
    assert await buckets(db, gendurable_schema) == {("api", "empty"), ("api", "half"), ("api", "")}

    manual_clock.advance(timedelta(seconds=15) - timedelta(microseconds=1))
    assert (await collector(engine).run_once()).buckets == 1  # 29.5 + 14.99.. >= 30
    assert await buckets(db, gendurable_schema) == {("api", "empty"), ("api", "half")}
    manual_clock.advance(timedelta(microseconds=1))
    assert (await collector(engine).run_once()).buckets == 1  # 15 + 15 reaches the burst
    assert await buckets(db, gendurable_schema) == {("api", "empty")}
    manual_clock.advance(timedelta(seconds=15))
    assert (await collector(engine).run_once()).buckets == 1
    assert await buckets(db, gendurable_schema) == set()
    assert [e["buckets"] for e in rec.of(("gc", "swept"))] == [1, 1, 1, 1]


async def test_gc_prunes_buckets_of_unconfigured_limits(
    make_engine: MakeEngine,
    manual_clock: ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    engine = await client(make_engine, rate_limits={"api": gd.Limit(1, per=timedelta(hours=1))})
    now = manual_clock.now()
    await bucket(db, gendurable_schema, "api", "a", 0, now)
    await bucket(db, gendurable_schema, "gone", "a", 0, now)
    await bucket(db, gendurable_schema, "gone", "b", 0, now)
    report = await collector(engine).run_once()
    assert (report.buckets, report.configs) == (2, 0)
    assert await buckets(db, gendurable_schema) == {("api", "a")}


async def test_gc_bucket_sweep_in_batches_over_many_partitions(
    make_engine: MakeEngine,
    manual_clock: ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    engine = await client(
        make_engine, gc_batch=9, rate_limits={"api": gd.Limit(5, per=timedelta(hours=1))}
    )
    now = manual_clock.now()
    for i in range(50):
        await bucket(db, gendurable_schema, "api", f"p{i:02d}", 0 if i % 5 else 5, now)
    assert (await collector(engine).run_once()).buckets == 10
    assert len(await buckets(db, gendurable_schema)) == 40


async def configs(db: asyncpg.Connection, schema: str) -> dict[str, datetime]:
    rows = await db.fetch(f'SELECT name, updated_at FROM "{schema}".rate_configs')
    return {r["name"]: r["updated_at"] for r in rows}


async def test_gc_removes_configs_no_running_engine_refreshes(
    make_engine: MakeEngine,
    recorder: RecorderFactory,
    manual_clock: ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    slow = gd.Limit(5, per=timedelta(days=30))  # buckets that stay far from full here
    old = await client(make_engine, rate_limits={"legacy": slow})
    await old.stop()  # the last engine that configured "legacy" is gone
    engine = await make_engine(workflows=[Flow], rate_limits={"api": slow}, start=False)
    rec = recorder(engine)
    await engine.start()
    now = manual_clock.now()
    await bucket(db, gendurable_schema, "legacy", "t1", 0, now)
    await bucket(db, gendurable_schema, "api", "t1", 0, now)
    await engine.drain()
    assert set(await configs(db, gendurable_schema)) == {"api", "legacy"}

    manual_clock.advance(CONFIG_TTL / 2)
    await engine.drain()  # refreshes "api"
    manual_clock.advance(CONFIG_TTL / 2 + timedelta(seconds=1))
    await engine.drain()
    assert await configs(db, gendurable_schema) == {"api": manual_clock.now()}
    assert await buckets(db, gendurable_schema) == {("api", "t1")}
    assert rec.of(("gc", "swept")) == [{"instances": 0, "buckets": 1, "configs": 1}]


async def test_gc_refresh_writes_back_a_removed_config_keeping_stored_values(
    make_engine: MakeEngine,
    manual_clock: ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    engine = await client(make_engine, rate_limits={"api": gd.Limit(5), "b": gd.Limit(7)})
    table = f'"{gendurable_schema}".rate_configs'
    await db.execute(f"DELETE FROM {table} WHERE name = 'api'")
    await db.execute(f"UPDATE {table} SET allowed = 99 WHERE name = 'b'")  # a later start's
    manual_clock.advance(timedelta(minutes=1))
    await collector(engine).run_once()
    rows = await db.fetch(f"SELECT name, allowed, updated_at FROM {table} ORDER BY name")
    assert [(r["name"], r["allowed"]) for r in rows] == [("api", 5), ("b", 99)]
    assert {r["updated_at"] for r in rows} == {manual_clock.now()}


# -- the loop --------------------------------------------------------------------------------


async def test_gc_loop_runs_on_engines_with_queues_only(
    make_engine: MakeEngine,
    recorder: RecorderFactory,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    # With the system clock the collector runs in the background, first at start.
    web = await make_engine(workflows=[Flow], queues=None, clock=gd.SystemClock())
    assert "gendurable:collector" not in {t.get_name() for t in asyncio.all_tasks()}
    now = await db.fetchval("SELECT now()")
    await insert(db, gendurable_schema, status="done", at=now, finished_at=now - 2 * DAY, n=3)
    engine = await make_engine(workflows=[Flow], clock=gd.SystemClock(), start=False)
    rec = recorder(engine)
    await engine.start()
    (swept,) = await rec.wait(("gc", "swept"))
    assert swept["instances"] == 3
    assert "gendurable:collector" in {t.get_name() for t in asyncio.all_tasks()}
    assert web.collector is not None
