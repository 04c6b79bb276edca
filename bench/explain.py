"""What `blocked_by` costs: `python bench/explain.py [--instances N] [--dsn DSN]`.

Prints JSON lines, each figure beside a PostgreSQL floor measured in the same run:

- get: `Flow.get()` of a waiting instance (a key lookup, then the row again with its
  `blocked_by`) per second, against the floor of plain primary-key reads of the same rows;
  get_ended: the same for ended instances, which skip `blocked_by` (the difference is its
  cost).
- view: rows per second read through `instances_explained` (every row explained) for N due
  instances, against a plain one-column read of the same rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg

import gendurable as gd
from gendurable.db.connect import resolve_dsn
from gendurable.db.schema_admin import drop_schema


def emit(**fields: Any) -> None:
    """Print one JSON line."""
    print(json.dumps(fields), flush=True)


@gd.workflow(name="bench.explain", queue="elsewhere")
class Flow:
    @gd.step(start=True)
    async def first(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


async def rate(seconds: float, once: Any) -> float:
    """Calls of `once()` per second, one after the other, for `seconds`."""
    done = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        await once(done)
        done += 1
    return done / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=20_000)
    parser.add_argument("--dsn", default=None)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    dsn = resolve_dsn(args.dsn)
    if dsn is None:
        raise SystemExit("pass --dsn or set GENDURABLE_DSN (`gendurable dev` prints one)")
    engine = gd.Engine(dsn, workflows=[Flow], schema=schema, queues=None)
    async with engine:
        n = args.instances
        for start in range(0, n, 1000):
            batch = [Flow.new(key=f"k{i}") for i in range(start, min(n, start + 1000))]
            await Flow.start_many(batch)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'ANALYZE "{schema}".instances')
            ids = [r[0] for r in await conn.fetch(f'SELECT id FROM "{schema}".instances')]
            plain = await conn.prepare(f'SELECT * FROM "{schema}".instances WHERE id = $1')

            async def read(i: int) -> None:
                await plain.fetchrow(ids[i % n])

            async def get(i: int) -> None:
                await Flow.get(f"k{i % n}")

            floor = await rate(args.seconds, read)
            figure = await rate(args.seconds, get)
            emit(workload="get", floor_per_s=round(floor), per_s=round(figure),
                 ratio=round(figure / floor, 3))  # fmt: skip

            t0 = time.perf_counter()
            await conn.fetch(f'SELECT status FROM "{schema}".instances')
            table_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            rows = await conn.fetch(f'SELECT blocked_reason FROM "{schema}".instances_explained')
            view_s = time.perf_counter() - t0
            emit(workload="view", rows=len(rows), floor_rows_per_s=round(n / table_s),
                 rows_per_s=round(n / view_s), ratio=round(table_s / view_s, 3))  # fmt: skip
            # The same get() for ended instances: blocked_by is not computed for them.
            await conn.execute(f"UPDATE \"{schema}\".instances SET status = 'done'")
            ended = await rate(args.seconds, get)
            emit(workload="get_ended", floor_per_s=round(floor), per_s=round(ended),
                 ratio=round(ended / floor, 3))  # fmt: skip
        finally:
            await conn.close()
        await drop_schema(dsn, schema)


if __name__ == "__main__":
    asyncio.run(main())
