"""A step that keeps its claim, and a heartbeat, update `instances` in place (HOT).

PostgreSQL updates a row without touching any index (a heap-only tuple: no index entry, the
old version pruned on its own page without waiting for vacuum) only when the update changes
no column an index reads, in its keys or its predicate, and the new version fits on the
row's page. A claim and a finish change `status`, which the partial indexes' predicates
read, so they never can. A step run back to back on its claim (`continue`) and a heartbeat
change only columns no index reads: the executing rows are indexed by `id`
(`instances_executing`), not by the `locked_until` they move on, and `instances` keeps room
on its pages (`fillfactor`). Each test here fails when one of the two is lost: an index
reading a column those updates change, or the room.

The counts are the transaction's own (`pg_stat_get_xact_*`, read at its start and its end):
exact, and with no wait for the statistics to be flushed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from commit_support import commit, move
from gendurable.clock import ManualClock
from gendurable.db.migrator import migrate
from gendurable.sql import statements
from gendurable.testing import MakeEngine

LEASE = timedelta(seconds=30)
ROWS = 300
"""Enough rows to fill a dozen pages: a page without room then shows."""

FILLFACTOR = 70

INDEXES = {
    "instances_pkey": "CREATE UNIQUE INDEX instances_pkey ON {s}.instances USING btree (id)",
    "instances_pick": "CREATE INDEX instances_pick ON {s}.instances USING btree "
    "(queue, priority DESC, run_at, id) WHERE (status = 'available'::{s}.status)",
    "instances_key": "CREATE UNIQUE INDEX instances_key ON {s}.instances USING btree "
    "(workflow, key) WHERE ((key IS NOT NULL) AND (status = ANY (scope)))",
    "instances_lookup": "CREATE INDEX instances_lookup ON {s}.instances USING btree "
    "(workflow, key, id) WHERE (key IS NOT NULL)",
    "instances_concurrency_active": "CREATE UNIQUE INDEX instances_concurrency_active ON "
    "{s}.instances USING btree (concurrency_key) WHERE ((status = 'executing'::{s}.status) "
    "AND (concurrency_key IS NOT NULL))",
    "instances_concurrency_head": "CREATE INDEX instances_concurrency_head ON {s}.instances "
    "USING btree (concurrency_key, queue, priority DESC, run_at, id) "
    "WHERE ((status = 'available'::{s}.status) AND (concurrency_key IS NOT NULL))",
    "instances_await_deadline": "CREATE INDEX instances_await_deadline ON {s}.instances "
    "USING btree (await_deadline) WHERE ((status = 'awaiting'::{s}.status) "
    "AND (await_deadline IS NOT NULL))",
    "instances_executing": "CREATE INDEX instances_executing ON {s}.instances USING btree "
    "(id) WHERE (status = 'executing'::{s}.status)",
    "instances_terminal": "CREATE INDEX instances_terminal ON {s}.instances USING btree "
    "(finished_at, id) WHERE (status = ANY (ARRAY['done'::{s}.status, "
    "'failed'::{s}.status, 'cancelled'::{s}.status]))",
    "instances_parent": "CREATE INDEX instances_parent ON {s}.instances USING btree "
    "(parent_id, id) WHERE (parent_id IS NOT NULL)",
}
"""Every index on `instances`, as `pg_get_indexdef` prints it. An index added here costs
every update that is not HOT an entry; one reading a column a kept claim or a heartbeat
changes (`locked_until`, `step`, `state`, `attempt`, `updated_at`...) makes those updates
never HOT again."""


@gd.workflow(name="hot.chain")
class Chain:
    """Three steps that run back to back on one claim."""

    @gd.step(start=True)
    async def a(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.b)

    @gd.step
    async def b(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.c)

    @gd.step
    async def c(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


async def test_instances_has_exactly_these_indexes_and_room_on_its_pages(
    gendurable_dsn: str, gendurable_schema: str, db: asyncpg.Connection
) -> None:
    await migrate(gendurable_dsn, schema=gendurable_schema)
    table = f'"{gendurable_schema}".instances'

    rows = await db.fetch(
        "SELECT c.relname, pg_get_indexdef(c.oid) AS def FROM pg_index x "
        "JOIN pg_class c ON c.oid = x.indexrelid WHERE x.indrelid = $1::regclass",
        table,
    )
    options = await db.fetchval("SELECT reloptions FROM pg_class WHERE oid = $1::regclass", table)

    schema = gendurable_schema  # a plain name: pg_get_indexdef leaves it unquoted
    assert {r["relname"]: r["def"] for r in rows} == {
        name: definition.format(s=schema) for name, definition in INDEXES.items()
    }
    assert options == [f"fillfactor={FILLFACTOR}"]


async def counters(conn: asyncpg.Connection, table: str) -> tuple[int, int]:
    """(updates, HOT updates) of `table` this backend has not yet reported: those of the
    current transaction so far, and of transactions it committed less than a second ago
    (nothing is reported inside a transaction, so a difference within one is exact)."""
    row = await conn.fetchrow(
        "SELECT pg_stat_get_xact_tuples_updated($1::regclass) AS updated, "
        "pg_stat_get_xact_tuples_hot_updated($1::regclass) AS hot",
        table,
    )
    assert row is not None
    return int(row["updated"]), int(row["hot"])


async def claimed_chain(make_engine: MakeEngine) -> tuple[gd.Engine, list[int]]:
    """A client-only engine and ROWS instances of `Chain` started by one `start_many` and
    claimed by one claim (both committed), as a scheduler takes a bulk-started batch."""
    engine = await make_engine(workflows=[Chain], queues=None)
    handles = await Chain.start_many([Chain.new(key=f"k{n}") for n in range(ROWS)], engine=engine)
    claimed = await engine.store.instance_claim(
        queue="default",
        limit=ROWS,
        locked_by="worker#1",
        workflows=[Chain.spec.name],
        steps=["a"],
        leases=[LEASE],
        now=engine.clock.now(),
    )
    assert sorted(r.id for r in claimed if r.go) == sorted(h.id for h in handles)
    return engine, [h.id for h in handles]


async def test_steps_run_back_to_back_on_their_claim_update_in_place(
    make_engine: MakeEngine, manual_clock: ManualClock, gendurable_schema: str
) -> None:
    engine, ids = await claimed_chain(make_engine)
    table = f'"{gendurable_schema}".instances'
    manual_clock.advance(timedelta(seconds=1))  # the first step took a second: a new lease

    async with engine.store.db.pool.acquire() as conn, conn.transaction():
        before = await counters(conn, table)
        done, busy = await commit(
            engine, [move(id, "worker#1", "b", lease=LEASE) for id in ids], conn=conn
        )
        after = await counters(conn, table)
    updated, hot = after[0] - before[0], after[1] - before[1]

    assert (sorted(done), busy) == (sorted(ids), set())
    assert updated == ROWS
    # Measured: 196 of 300 (the versions the claim put on pages without room left are not),
    # 284 with `fillfactor` 50, 17 with 100 (the last page's room), 0 with an index on
    # `locked_until`.
    assert hot >= ROWS // 2, (updated, hot)


async def test_heartbeats_update_in_place(make_engine: MakeEngine, gendurable_schema: str) -> None:
    engine, ids = await claimed_chain(make_engine)
    table = f'"{gendurable_schema}".instances'

    async with engine.store.db.pool.acquire() as conn, conn.transaction():
        before = await counters(conn, table)
        statement = engine.store.db.sql["lease_extend"]
        status = await conn.execute(
            statement.sql,
            *statement.args(
                ids=ids,
                names=["worker#1"] * len(ids),
                workflows=[Chain.spec.name],
                leases=[LEASE],
                now=engine.clock.now() + timedelta(seconds=10),
            ),
        )
        after = await counters(conn, table)
    updated, hot = after[0] - before[0], after[1] - before[1]

    assert status == f"UPDATE {ROWS}"
    assert updated == ROWS
    # Measured as for the steps above: 196 of 300, 17 with `fillfactor` 100, 0 with an index
    # on `locked_until`.
    assert hot >= ROWS // 2, (updated, hot)


PLANS = {
    "custom": "RESET plan_cache_mode; RESET enable_seqscan",
    "generic": "SET plan_cache_mode = force_generic_plan; RESET enable_seqscan",
    "generic-no-seqscan": "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off",
}
"""How the statement is planned: with its values (PostgreSQL's default for the first runs of
a prepared statement), or once for all values (what the default may switch to, and what the
engine's connections are to be set to)."""


@pytest.mark.parametrize("plan", list(PLANS))
@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("lease_rescue", {"now": None, "limit": 100}),
        ("claims_reclaim", {"prefix": "default@host-", "now": None, "limit": 100}),
    ],
)
async def test_the_reaper_reads_the_executing_rows_through_their_index(
    gendurable_dsn: str,
    gendurable_schema: str,
    db: asyncpg.Connection,
    plan: str,
    name: str,
    args: dict[str, Any],
) -> None:
    # The statements that read `instances_lease` (found by bench/index_users.py, in this tree
    # and in 0.1.0's, which runs them the same during a rolling deploy) read its replacement.
    await migrate(gendurable_dsn, schema=gendurable_schema)
    s = f'"{gendurable_schema}"'
    await db.execute(
        f"INSERT INTO {s}.instances (workflow, queue, step, status, run_at, locked_by, "
        "locked_until, inserted_at, updated_at, finished_at) "
        "SELECT 'raw.leaf', 'default', 'work', "
        f"CASE WHEN g % 10 = 0 THEN 'executing' ELSE 'done' END::{s}.status, now(), "
        "CASE WHEN g % 10 = 0 THEN 'default@host-1-x' END, "
        "CASE WHEN g % 10 = 0 THEN now() + (g % 60) * interval '1 second' END, now(), now(), "
        "CASE WHEN g % 10 <> 0 THEN now() END FROM generate_series(1, 5000) g"
    )
    await db.execute(f"ANALYZE {s}.instances")
    statement = statements(gendurable_schema)[name]
    values = statement.args(**args)

    await db.execute(PLANS[plan])
    if plan == "custom":
        rows = await db.fetch(f"EXPLAIN {statement.sql}", *values)
    else:  # the generic plan, which no value can change: NULLs stand in for them
        await db.execute(f"PREPARE probe AS {statement.sql}")
        rows = await db.fetch(f"EXPLAIN EXECUTE probe({', '.join(['NULL'] * len(values))})")
    explained = "\n".join(r[0] for r in rows)

    assert "instances_executing" in explained, explained
    if plan == "generic-no-seqscan":
        # With its values, on a table this small, the planner may join the rows to update by
        # a sequential scan, as it did with `instances_lease`; never without them.
        assert "Seq Scan on instances" not in explained, explained
