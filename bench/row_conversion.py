"""Client CPU of typed rows: what building them costs on the claim's and the commit's paths.

    python bench/row_conversion.py [--rows 64] [--repeat 2000] [--dsn DSN]

The stores turn each asyncpg `Record` into a frozen msgspec Struct (`db/rows.py`) before the
engine reads it; before that the engine read the Records by key. This times both on real
Records of the claim's and the group commit's result shapes (fetched once from PostgreSQL,
an embedded server without `--dsn`): per row, the old reads by key against building the
typed row and reading its attributes, through to the `Claimed` a claim hands the executor.
Timings are this machine's and noisy; they never go in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import asyncpg

from gendurable.db.rows import CommittedOutcome, PickedRow
from gendurable.engine.claimed import Claimed
from gendurable.entries import NO_LIMIT, StepLimit

CLAIM_ROWS = """
SELECT g::bigint AS id, 'w' AS workflow, 'step' AS step, '{"n": 1}'::jsonb::text::bytea AS state,
       0 AS attempt, 0 AS priority, 'k' || g AS key, 'default' AS queue, false AS timed_out,
       0::bigint AS await_seen, NULL::bigint AS children_from, true AS go,
       false AS unknown_limit, NULL::text AS rate_limit, NULL::text AS rate_partition,
       1 AS weight, now() AS run_at, 0.0::float8 AS wait, NULL::text AS trace_context,
       0.001::float8 AS waited, 1 AS state_version, 0::bigint AS contended
FROM generate_series(1, $1) g
"""
OUTCOME_ROWS = """
SELECT g::bigint AS id, NULL::int AS cascaded, NULL::bool AS woken_by_deadline, false AS busy
FROM generate_series(1, $1) g
"""


def claimed_by_key(row: Any, locked_by: str) -> Claimed:
    """What `Claimed.from_row` did before typed rows: read the Record by key."""
    return Claimed(
        id=row["id"],
        workflow=row["workflow"],
        step=row["step"],
        state=row["state"],
        attempt=row["attempt"],
        priority=row["priority"],
        key=row["key"],
        queue=row["queue"],
        timed_out=row["timed_out"],
        await_seen=row["await_seen"],
        locked_by=locked_by,
        limit=StepLimit(row["rate_limit"], row["rate_partition"], row["weight"])
        if row["rate_limit"] is not None
        else NO_LIMIT,
        trace_context=row["trace_context"],
        waited=row["waited"],
        state_version=row["state_version"],
    )


def claim_before(records: list[Any]) -> int:
    claimed = [r for r in records if r["go"]]
    _ = {r["wait"] for r in records if not r["go"]}
    return len([claimed_by_key(r, "w#1") for r in claimed])


def claim_after(records: list[Any]) -> int:
    rows = [PickedRow(*r) for r in records]
    claimed = [r for r in rows if r.go]
    _ = {r.wait for r in rows if not r.go}
    return len([Claimed.from_row(r, "w#1") for r in claimed])


def outcomes_before(records: list[Any]) -> int:
    done = {int(r["id"]): r["woken_by_deadline"] for r in records if not r["busy"]}
    return len(done) + len({int(r["id"]) for r in records if r["busy"]})


def outcomes_after(records: list[Any]) -> int:
    done: dict[int, bool | None] = {}
    busy: set[int] = set()
    for outcome in [CommittedOutcome(*r) for r in records]:
        if outcome.busy:
            busy.add(outcome.id)
        else:
            done[outcome.id] = outcome.woken_by_deadline
    return len(done) + len(busy)


def per_row_us(work: Callable[[list[Any]], int], records: list[Any], repeat: int) -> float:
    """The median of five runs of `repeat` calls, in microseconds per row."""
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            work(records)
        runs.append((time.perf_counter() - started) / repeat / len(records) * 1e6)
    return statistics.median(runs)


async def fetch(dsn: str, rows: int) -> tuple[list[Any], list[Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(CLAIM_ROWS, rows)), list(await conn.fetch(OUTCOME_ROWS, rows))
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64, help="rows per claim or commit")
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--dsn")
    args = parser.parse_args()
    if args.dsn:
        claims, outcomes = asyncio.run(fetch(args.dsn, args.rows))
    else:
        from gendurable.embedded import EmbeddedPostgres

        server = EmbeddedPostgres()
        try:
            claims, outcomes = asyncio.run(fetch(server.start(), args.rows))
        finally:
            server.stop()
    for path, before, after, records in (
        ("claim", claim_before, claim_after, claims),
        ("commit", outcomes_before, outcomes_after, outcomes),
    ):
        old = per_row_us(before, records, args.repeat)
        new = per_row_us(after, records, args.repeat)
        print(
            json.dumps(
                {
                    "path": path,
                    "rows": len(records),
                    "by_key_us_per_row": round(old, 3),
                    "typed_us_per_row": round(new, 3),
                    "delta_us_per_row": round(new - old, 3),
                }
            )
        )


if __name__ == "__main__":
    main()
