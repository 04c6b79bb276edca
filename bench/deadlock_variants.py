"""Deadlock variants: the lock order is what keeps the engine deadlock-free.

    python bench/deadlock_variants.py [--rounds 200] [--runs 3] [--dsn DSN] [VARIANT ...]

Runs the load of `tests/engine/deadlock_load.py` (spawns, starts, batches, cascading cancels
and signals on overlapping keys from three engines) against the engine as shipped and
against copies of one writer that break the order, and prints one JSON line per run: the
deadlocks PostgreSQL detected (what the load saw, and `pg_stat_database.deadlocks`), the
rounds and the seconds. `deadlock_timeout` is lowered to 50 ms on the engines' connections
so that a deadlock costs little time. Variants:

- `shipped`: the statements as shipped (expected: no deadlock).
- `batch_desc`: `outcome_batch` locks its rows and their parents in descending id order
  (children before parents), against cancels that lock a parent and then its descendants.
- `cancel_child_first`: `instance_cancel` locks the target before its parent, against
  cascading cancels and commits that lock the parent first.
- `insert_unordered`: `instance_insert_many` inserts in entry order instead of key order,
  so racing spawns and batches take the unique-key locks in different orders.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

import gendurable as gd
from gendurable.db.schema_admin import drop_schema

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "engine"))
import deadlock_load


def emit(**fields: Any) -> None:
    """Print one JSON line."""
    print(json.dumps(fields), flush=True)


async def deadlocks_so_far(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
            )
        )
    finally:
        await conn.close()


async def one_run(dsn: str, variant: str, rounds: int, seed: int) -> None:
    schema = f"dl_{uuid.uuid4().hex[:10]}"
    fast = deadlock_load.fast_deadlocks(dsn)
    engines = [
        gd.Engine(
            fast,
            workflows=deadlock_load.WORKFLOWS,
            schema=schema,
            queues={"default": 4},
            name=f"dl-{variant}-{i}-{uuid.uuid4().hex[:6]}",
        )
        for i in range(3)
    ]
    before = await deadlocks_so_far(dsn)
    try:
        for engine in engines:
            await engine.start()
            if variant != "shipped":
                deadlock_load.use_variant(engine, variant)
        started = time.perf_counter()
        tally = await deadlock_load.run(engines, rounds, seed=seed)
        seconds = time.perf_counter() - started
    finally:
        for engine in engines:
            await engine.stop(timeout=5)
        await drop_schema(dsn, schema)
    # Backends report their counts when they exit: the engines' pools are closed by now.
    await asyncio.sleep(1.0)
    emit(
        variant=variant,
        seed=seed,
        rounds=tally.rounds,
        ops=tally.ops,
        deadlocks_seen=len(tally.deadlocks),
        deadlocks_server=await deadlocks_so_far(dsn) - before,
        other_errors=len(tally.errors),
        seconds=round(seconds, 2),
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("variants", nargs="*", default=["shipped", *deadlock_load.VARIANTS])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dsn", default=None)
    args = parser.parse_args()
    server = None
    dsn = args.dsn
    if dsn is None:
        from gendurable.embedded import EmbeddedPostgres

        server = EmbeddedPostgres()
        dsn = await server.astart()
    try:
        for variant in args.variants:
            for run in range(args.runs):
                await one_run(dsn, variant, args.rounds, seed=run)
    finally:
        if server is not None:
            await server.astop()


if __name__ == "__main__":
    asyncio.run(main())
