"""How long each page of a bulk retry or cancel takes (and so holds its locks) on a big table.

    python bench/bulk_pages.py [--rows 1000000] [--other 1000000] [--page 500]

Inserts `--rows` failed instances of one workflow (and `--other` rows of other workflows and
statuses, interleaved by id) into a fresh schema of an embedded PostgreSQL (or
`$GENDURABLE_DSN`), then retries them all with `gendurable.bulk.BulkRun`, timing every page
(the read of the next ids, then the statement that locks and acts on them), and then cancels
them all the same way. A sparse filter (one match in a thousand rows) is timed too: its pages
read further to fill. Prints the count, total and page percentiles of each run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from gendurable.bulk import CANCEL, RETRY, BulkRun
from gendurable.db.migrator import migrate
from gendurable.db.pool import Database
from gendurable.db.repair_store import Match, RepairStore
from gendurable.db.schema_admin import drop_schema
from gendurable.embedded import embedded_dsn

SCHEMA = "bench_bulk"


class Timed(RepairStore):
    """A RepairStore timing each page: the read of its ids and the statement acting on them."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.reads: list[float] = []
        self.acts: list[float] = []

    async def instances_matching(self, *args: Any, **kw: Any) -> list[int]:
        start = time.perf_counter()
        try:
            return await super().instances_matching(*args, **kw)
        finally:
            self.reads.append(time.perf_counter() - start)

    async def instances_retry_many(self, *args: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        try:
            return await super().instances_retry_many(*args, **kw)
        finally:
            self.acts.append(time.perf_counter() - start)

    async def instances_cancel_many(self, *args: Any, **kw: Any) -> Any:
        start = time.perf_counter()
        try:
            return await super().instances_cancel_many(*args, **kw)
        finally:
            self.acts.append(time.perf_counter() - start)


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return f"p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"


async def fill(db: Database, rows: int, other: int) -> None:
    s = f'"{SCHEMA}"'
    every = max(1, (rows + other) // max(rows, 1))
    async with db.pool.acquire() as conn:
        await conn.execute(
            f"INSERT INTO {s}.instances (workflow, queue, step, state, status, run_at, key, "
            "error, finished_at, inserted_at, updated_at) "
            "SELECT CASE WHEN g % $3 = 0 THEN 'bench.flaky' ELSE 'bench.other' || (g % 7) END, "
            "'default', 'work', '{}', CASE WHEN g % $3 = 0 THEN 'failed' "
            f"ELSE (ARRAY['available','done','awaiting','failed'])[1 + g % 4] END::{s}.status, "
            'now(), \'k-\' || g, \'{"type": "builtins.RuntimeError", "message": "the bank is '
            "down\"}', now() - interval '1 hour', now(), now() "
            "FROM generate_series(1, $1::int + $2::int) g",
            rows,
            other,
            every,
        )
        await conn.execute(f"ANALYZE {s}.instances")


async def timed_run(db: Database, action: str, match: Match, page: int) -> None:
    repairs = Timed(db)
    start = time.perf_counter()
    report = await BulkRun(repairs, action, match, page_size=page).run()
    total = time.perf_counter() - start
    print(
        f"{action} {match.statuses} error~{match.error_contains!r}: {report.summary()} in "
        f"{total:.1f} s, {report.pages} pages\n  read next ids: {_ms(repairs.reads)}\n"
        f"  act on a page: {_ms(repairs.acts)}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--other", type=int, default=1_000_000)
    parser.add_argument("--page", type=int, default=500)
    args = parser.parse_args()
    async with embedded_dsn() as dsn:
        await migrate(dsn, schema=SCHEMA)
        db = await Database.open(dsn, SCHEMA, max_size=2, timeout=600)
        try:
            await fill(db, args.rows, args.other)
            flaky = Match(statuses=("failed",), workflow="bench.flaky")
            sparse = Match(statuses=("failed",), workflow="bench.flaky", key_prefix="k-1000")
            await timed_run(db, RETRY, sparse, args.page)
            await timed_run(db, RETRY, flaky, args.page)
            live = Match(statuses=("available",), workflow="bench.flaky")
            await timed_run(db, CANCEL, live, args.page)
        finally:
            await db.close()
            await drop_schema(dsn, SCHEMA)


if __name__ == "__main__":
    asyncio.run(main())
