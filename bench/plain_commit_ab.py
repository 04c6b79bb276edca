"""`outcome_plain` of this tree against the one of an earlier commit, on the same table.

    python bench/plain_commit_ab.py --against REF [--dsn DSN] [--reps 300]

Batches of 1, 16 and 64 kept-claim moves (`continue`: the rows stay executing, so the same
rows are committed again and again), sent through both versions of the statement in turn
(ABBA), with the engine's plan settings, on one connection. Prints, per batch size, the
client-timed medians and the median of the per-pair ratios (this ÷ REF), the client's mean
CPU per commit (`process_time`: building the parameters as the store does, encoding them,
reading the answer); with
`pg_stat_statements` on the server, also each version's mean execution time, which the
machine's load moves far less. REF's statement is read with `git show`; parameters this
tree's statement takes and REF's does not are sent empty (for 3e45c74: no consumed
signals), so the figure is what the change costs the batches that do not use it. A
statement that takes each column once or per row (since `outcome_plain` took `:kind`) gets
them as `EngineStore.outcome_plain` sends them; every row's state differs, as in a real
batch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from gendurable.db.engine_store import plain_outcome_params
from gendurable.db.migrator import migrate
from gendurable.db.pool import init_engine_connection
from gendurable.db.schema_admin import drop_schema
from gendurable.embedded import embedded_dsn
from gendurable.sql import Statement, _tokens, bind_names, statements

ROOT = Path(__file__).resolve().parent.parent
EMPTY: dict[str, Any] = {"consumed_instances": [], "consumed_signals": []}
"""Parameters of this tree's statement REF's may lack, and what they are sent as."""


def statement_at(ref: str, schema: str) -> Statement:
    text = subprocess.run(
        ["git", "show", f"{ref}:src/gendurable/sql/instances.sql"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    start = text.index("-- name: outcome_plain\n")
    end = text.index("-- name: ", start + 1)
    sql, params = bind_names("outcome_plain", text[start:end].split("\n", 1)[1])
    # the substitutions this tree's statements get (schema, channel, status lists)
    for token, value in _tokens(schema).items():
        sql = sql.replace(token, value)
    return Statement("outcome_plain", sql, params)


async def main(args: argparse.Namespace) -> None:
    async with embedded_dsn(args.dsn) as dsn:
        schema = "plain_ab_" + uuid.uuid4().hex[:8]
        await migrate(dsn, schema=schema)
        conn = await asyncpg.connect(dsn)
        try:
            ours = statements(schema)
            await init_engine_connection(conn, ours["engine_plans"].sql)
            # a leading comment per side, which pg_stat_statements keeps (it replaces the
            # constants of the text, so the text alone would not tell the sides apart)
            sides = {
                side: Statement(
                    "outcome_plain", f"/* plain_commit_ab {side} */\n{st.sql}", st.params
                )
                for side, st in (
                    ("ref", statement_at(args.against, schema)),
                    ("this", ours["outcome_plain"]),
                )
            }
            try:
                await conn.execute("SELECT pg_stat_statements_reset()")
                stats = True
            except asyncpg.PostgresError:
                stats = False
            s = f'"{schema}"'
            for k in (1, 16, 64):
                ids = [
                    r["id"]
                    for r in await conn.fetch(
                        f"INSERT INTO {s}.instances (workflow, queue, step, state, status,"
                        " run_at, locked_by, locked_until, inserted_at, updated_at)"
                        " SELECT 'w', 'bench', 'a', 'null', 'executing', now(), 'me',"
                        " now() + interval '1 hour', now(), now()"
                        " FROM generate_series(1, $1) RETURNING id",
                        k,
                    )
                ]
                await conn.execute(f"ANALYZE {s}.instances")
                times: dict[str, list[float]] = {"ref": [], "this": []}
                cpus: dict[str, list[float]] = {"ref": [], "this": []}
                states = [b'{"n": %d}' % j for j in range(k)]
                for r in range(2 * args.reps):
                    side = ("ref", "this")[(r + r // 2) % 2]
                    statement = sides[side]
                    values: dict[str, Any] = {
                        "ids": ids, "locked_bys": ["me"] * k, "kinds": ["continue"] * k,
                        "steps": ["b" if r % 2 else "a"] * k, "states": states,
                        "state_versions": [1] * k, "delays": [None] * k, "leases": [30.0] * k,
                        "statuses": [None] * k, "results": [None] * k, "errors": [None] * k,
                        "max_attempts": [None] * k, "queues": ["bench"] * k, "now": None,
                    }  # fmt: skip
                    values.update({p: v for p, v in EMPTY.items() if p in statement.params})
                    cpu = time.process_time()
                    if "kind" in statement.params:  # each column once, or per row as text
                        values = plain_outcome_params(**values)
                    started = time.perf_counter()
                    rows = await conn.fetch(statement.sql, *statement.bind(values))
                    times[side].append(time.perf_counter() - started)
                    cpus[side].append(time.process_time() - cpu)
                    if len(rows) != k or any(row["busy"] for row in rows):
                        raise RuntimeError(f"a commit of {k} did not go through: {rows}")
                pairs = [b / a for a, b in zip(times["ref"], times["this"], strict=True)]
                print(
                    json.dumps(
                        {
                            "continues": k,
                            "ref": args.against,
                            "ref_p50_ms": round(statistics.median(times["ref"]) * 1000, 3),
                            "this_p50_ms": round(statistics.median(times["this"]) * 1000, 3),
                            "this_over_ref": round(statistics.median(pairs), 3),
                            "ref_client_cpu_us": round(statistics.mean(cpus["ref"]) * 1e6, 1),
                            "this_client_cpu_us": round(statistics.mean(cpus["this"]) * 1e6, 1),
                        }
                    )
                )
            if stats:
                for side in sides:
                    row = await conn.fetchrow(
                        "SELECT calls, mean_exec_time FROM pg_stat_statements WHERE query LIKE $1",
                        f"/* plain_commit_ab {side} */%{schema}%",
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True)
    parser.add_argument("--dsn")
    parser.add_argument("--reps", type=int, default=300)
    asyncio.run(main(parser.parse_args()))
