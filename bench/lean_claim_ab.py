"""A lean claim (rows with no concurrency key and no rate limit) against `instance_claim`.

    python bench/lean_claim_ab.py [--dsn DSN] [--reps 300] [--limit 64]

Both statements claim `--limit` due rows of one queue in turn (ABBA), with the engine's plan
settings, on one connection, from a queue of plain rows (as w2's: no key, no limit), each
claim taking fresh rows off the front. Prints the client-timed medians, the median of the
per-pair ratios (lean ÷ full) and, with `pg_stat_statements` on the server, each one's mean
execution time. The lean statement is the shipped `instance_claim_lean` (the general claim's
scan without its per-row concurrency filter, its rate-limit CTEs and `held_back`; when a row
with a key or a limit is among the rows it would take, it takes nothing and answers one row
of NULLs, and the store then runs `instance_claim`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from datetime import timedelta
from typing import Any

import asyncpg

from gendurable.db.migrator import migrate
from gendurable.db.pool import init_engine_connection
from gendurable.db.schema_admin import drop_schema
from gendurable.embedded import embedded_dsn
from gendurable.sql import Statement, statements


async def main(args: argparse.Namespace) -> None:
    async with embedded_dsn(args.dsn) as dsn:
        schema = "lean_claim_" + uuid.uuid4().hex[:8]
        await migrate(dsn, schema=schema)
        conn = await asyncpg.connect(dsn)
        try:
            ours = statements(schema)
            await init_engine_connection(conn, ours["engine_plans"].sql)
            sides = {
                side: Statement(st.name, f"/* lean_claim_ab {side} */\n{st.sql}", st.params)
                for side, st in (
                    ("full", ours["instance_claim"]),
                    ("lean", ours["instance_claim_lean"]),
                )
            }
            try:
                await conn.execute("SELECT pg_stat_statements_reset()")
                stats = True
            except asyncpg.PostgresError:
                stats = False
            s = f'"{schema}"'
            await conn.execute(
                f"INSERT INTO {s}.instances (workflow, queue, step, state, status,"
                " run_at, inserted_at, updated_at)"
                " SELECT 'w', 'bench', 'a', 'null', 'available', now() - interval '1 hour',"
                " now(), now() FROM generate_series(1, $1)",
                2 * args.reps * args.limit + 10_000,
            )
            await conn.execute(f"VACUUM ANALYZE {s}.instances")
            times: dict[str, list[float]] = {"full": [], "lean": []}
            for r in range(2 * args.reps):
                side = ("full", "lean")[(r + r // 2) % 2]
                statement = sides[side]
                values: dict[str, Any] = {
                    "queue": "bench", "limit": args.limit, "locked_by": f"me{r}",
                    "workflows": ["w", "x"], "steps": ["a", "b"],
                    "leases": [timedelta(seconds=30)] * 2, "now": None,
                    "unknown_limit_wait": timedelta(seconds=5),
                }  # fmt: skip
                started = time.perf_counter()
                values = {p: v for p, v in values.items() if p in statement.params}
                rows = await conn.fetch(statement.sql, *statement.bind(values))
                times[side].append(time.perf_counter() - started)
                if len(rows) != args.limit or rows[0]["id"] is None:
                    raise RuntimeError(f"{side} claimed {len(rows)}")
            pairs = [b / a for a, b in zip(times["full"], times["lean"], strict=True)]
            print(
                json.dumps(
                    {
                        "limit": args.limit,
                        "reps": args.reps,
                        "full_p50_ms": round(statistics.median(times["full"]) * 1000, 3),
                        "lean_p50_ms": round(statistics.median(times["lean"]) * 1000, 3),
                        "lean_over_full": round(statistics.median(pairs), 3),
                    }
                )
            )
            if stats:
                for side in sides:
                    row = await conn.fetchrow(
                        "SELECT calls, mean_exec_time FROM pg_stat_statements WHERE query LIKE $1",
                        f"/* lean_claim_ab {side} */%",
                    )
                    if row is not None:
                        print(
                            json.dumps(
                                {
                                    "side": side,
                                    "calls": row["calls"],
                                    "mean_exec_ms": round(row["mean_exec_time"], 4),
                                }
                            )
                        )
        finally:
            await conn.close()
            await drop_schema(dsn, schema)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default=None)
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--limit", type=int, default=64)
    asyncio.run(main(parser.parse_args()))
