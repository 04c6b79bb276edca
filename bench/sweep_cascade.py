"""What the `signals` foreign key's ON DELETE CASCADE costs `terminal_sweep`, and whether an
explicit delete of the inboxes would win it back now or only once the key is dropped.

    python bench/sweep_cascade.py [--rows 20000] [--batch 1000] [--rounds 15] [--signals 0]

Inserts `--rows` instances that ended two days ago (and `--signals` inbox rows spread over
them; 0 by default, as the collector finds them: `instances_ended` purges the inbox of every
instance that ends) into a fresh schema of an embedded PostgreSQL (or `$GENDURABLE_DSN`), then
runs one `terminal_sweep` of `--batch` rows in four shapes, round after round in a rotating
order, each in a transaction rolled back afterwards (so every run deletes the same rows):

- `cascade`: the statement as released, the foreign key's trigger deleting each inbox;
- `cascade+delete`: the same statement with an explicit `DELETE FROM signals` of the deleted
  ids added, the foreign key still there (what a release could ship while 0.1.0 engines,
  which rely on the cascade, may still run);
- `no-fk+delete`: the explicit delete with the foreign key dropped (inside the transaction),
  what a later release could ship once the key is contracted away;
- `no-fk`: neither, the bound.

Prints, per shape, the median time of the statement as the client sees it, the median of
`EXPLAIN ANALYZE`'s execution time and, when the key is there, the time its trigger took
(the share of the statement it is). Timings are noisy on a shared machine: read the medians
of rounds that interleave the shapes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.ab import working_commit

from gendurable.db.migrator import migrate
from gendurable.db.pool import init_connection
from gendurable.db.schema_admin import drop_schema
from gendurable.embedded import embedded_dsn
from gendurable.sql import statements

SCHEMA = "bench_sweep_cascade"
SHAPES = ("cascade", "cascade+delete", "no-fk+delete", "no-fk")


def with_inbox_delete(sql: str, schema: str) -> str:
    """`terminal_sweep` with the deleted instances' inboxes deleted by the statement itself."""
    anchor = "keys AS ("
    assert anchor in sql, "terminal_sweep changed: update bench/sweep_cascade.py"
    inbox = (
        f'inbox AS (\n    DELETE FROM "{schema}".signals s USING deleted d\n'
        "    WHERE s.instance_id = d.id\n    RETURNING s.id\n),\n"
    )
    return sql.replace(anchor, inbox + anchor, 1)


async def fill(conn: asyncpg.Connection, rows: int, signals: int) -> None:
    s = f'"{SCHEMA}"'
    await conn.execute(
        f"INSERT INTO {s}.instances (workflow, queue, step, state, status, run_at, key, "
        "result, finished_at, inserted_at, updated_at) "
        "SELECT 'bench.sweep', 'default', 'work', '{\"n\": 3}', 'done', now(), 'k-' || g, "
        "'3', now() - interval '2 days' + g * interval '1 ms', now(), now() "
        "FROM generate_series(1, $1::int) g",
        rows,
    )
    await conn.execute(
        f"INSERT INTO {s}.signals (instance_id, name, payload, received_at) "
        f"SELECT i.id, 'go', 'null', now() FROM {s}.instances i "
        "ORDER BY i.id LIMIT $1",
        signals,
    )
    await conn.execute(f"VACUUM ANALYZE {s}.instances")
    await conn.execute(f"VACUUM ANALYZE {s}.signals")


async def run_shape(
    conn: asyncpg.Connection, shape: str, sql: str, args: tuple[Any, ...], fk: str
) -> tuple[float, float, float | None]:
    """(client seconds, execution ms, trigger ms) of one sweep in `shape`, rolled back."""
    s = f'"{SCHEMA}"'
    text = with_inbox_delete(sql, SCHEMA) if shape.endswith("+delete") else sql
    timings: list[float] = []
    for explain in (False, True):
        tx = conn.transaction()
        await tx.start()
        try:
            if shape.startswith("no-fk"):
                await conn.execute(f'ALTER TABLE {s}.signals DROP CONSTRAINT "{fk}"')
            if explain:
                plan = json.loads(
                    await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {text}", *args)
                )[0]
            else:
                start = time.perf_counter()
                row = await conn.fetchrow(text, *args)
                timings.append(time.perf_counter() - start)
                assert row is not None
                assert row["deleted"] > 0, "nothing swept"
        finally:
            await tx.rollback()
    trigger = (
        sum(t["Time"] for t in plan.get("Triggers", [])) if not shape.startswith("no-fk") else None
    )
    return timings[0], plan["Execution Time"], trigger


def run_line(conn_version: str) -> str:
    """The first line of the output: what ran, on what, for the record."""
    commit, dirty = working_commit()
    return json.dumps(
        {
            "bench": "sweep_cascade-run",
            "commit": commit,
            "engine_dirty": dirty,
            "server": f"PostgreSQL {conn_version}",
            "command": " ".join(["python", *sys.argv]),
        }
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--signals", type=int, default=0)
    args = parser.parse_args()
    async with embedded_dsn() as dsn:
        await migrate(dsn, schema=SCHEMA)
        conn = await asyncpg.connect(dsn)
        try:
            print(run_line(await conn.fetchval("SHOW server_version")), flush=True)
            await init_connection(conn)
            await fill(conn, args.rows, args.signals)
            fk = await conn.fetchval(
                "SELECT conname FROM pg_constraint WHERE contype = 'f' "
                "AND conrelid = to_regclass($1)",
                f'"{SCHEMA}".signals',
            )
            statement = statements(SCHEMA)["terminal_sweep"]
            sweep = statement.args(
                now=None,
                retention=timedelta(days=1),
                after_finished_at=None,
                after_id=None,
                limit=args.batch,
            )
            measured: dict[str, list[tuple[float, float, float | None]]] = {s: [] for s in SHAPES}
            for shape in SHAPES:  # warm-up, unrecorded
                await run_shape(conn, shape, statement.sql, sweep, fk)
            for n in range(args.rounds):
                order = SHAPES[n % len(SHAPES) :] + SHAPES[: n % len(SHAPES)]
                for shape in order:
                    measured[shape].append(await run_shape(conn, shape, statement.sql, sweep, fk))
            base = statistics.median(m[0] for m in measured["cascade"])
            for shape in SHAPES:
                runs = measured[shape]
                client = statistics.median(m[0] for m in runs)
                executed = statistics.median(m[1] for m in runs)
                triggers = [m[2] for m in runs if m[2] is not None]
                share = [m[2] / m[1] for m in runs if m[2] is not None]
                print(
                    json.dumps(
                        {
                            "bench": "sweep_cascade",
                            "shape": shape,
                            "rows": args.rows,
                            "batch": args.batch,
                            "signals": args.signals,
                            "rounds": args.rounds,
                            "client_ms": round(client * 1000, 2),
                            "ratio_to_cascade": round(client / base, 3),
                            "execution_ms": round(executed, 2),
                            "trigger_ms": round(statistics.median(triggers), 2)
                            if triggers
                            else None,
                            "trigger_share": round(statistics.median(share), 3) if share else None,
                        }
                    ),
                    flush=True,
                )
        finally:
            await conn.close()
            await drop_schema(dsn, SCHEMA)


if __name__ == "__main__":
    asyncio.run(main())
