"""Where w2's processing spends the server's time, statement by statement.

    python bench/w2_statements.py --dsn DSN [--jobs 10000] [--concurrency 64] [--runs 3]

Needs a server that loads `pg_stat_statements` (`shared_preload_libraries`, with
`pg_stat_statements.track = all` to see the statements inside `instances_ended`, and
`track_planning = on`); the embedded server does not ship it. Each run enqueues `--jobs`
jobs with claiming paused (as `bench/run.py w2` does), resets the statistics, resumes
claiming and waits until every job is done; then it prints one JSON line per statement
that ran at least once per 100 jobs: its name (the named statement, or the first words of a
statement run inside a function), calls, mean execution and planning time, rows, shared
buffers hit and dirtied, WAL records and bytes, each per call, and its execution time per
job. A closing line per run gives the sum per job beside the server CPU per job (from
/proc, when the server runs on this machine): what the statements do not account for is
the protocol, the commits' WAL flushes and the listener's notifications.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.engines import bench_engine, new_schema, wait_done_in_table
from harness.env import BenchEnv
from harness.flows import QUEUE, bench_job
from harness.meters import CpuWindow
from harness.report import Report

try:
    from gendurable.sql import statements
except ImportError:  # an engine from before named statements (run with its virtualenv)
    statements = None

STATS = """
SELECT query, calls, plans, total_exec_time, total_plan_time, rows, shared_blks_hit,
       shared_blks_dirtied, wal_records, wal_bytes
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def name_of(query: str, known: dict[str, str]) -> str:
    """The named statement `query` is, or its first words (a statement inside a function)."""
    for name, text in known.items():
        if query.strip()[:400] == text.strip()[:400]:
            return name
    return " ".join(re.sub(r"\s+", " ", query).split()[:8])


async def one_run(env: BenchEnv, jobs: int, concurrency: int) -> None:
    schema = new_schema()
    # (before 0.1.0 a statement was its text)
    known = {n: getattr(s, "sql", s) for n, s in statements(schema).items()} if statements else {}
    async with bench_engine(env.dsn, [bench_job], {QUEUE: concurrency}, schema=schema) as (
        engine,
        finished,
    ):
        conn = await asyncpg.connect(env.dsn)
        try:
            await bench_job.enqueue({"n": -1}, engine=engine)  # warm-up
            await finished.wait(1)
            scheduler = engine.schedulers[QUEUE]
            scheduler.stop_claiming()
            handles = await engine.start_many([bench_job.new({"n": i}) for i in range(jobs)])
            await conn.execute("SELECT pg_stat_statements_reset()")
            cpu = CpuWindow(env.postmaster).start()
            scheduler.resume_claiming()
            await finished.wait(jobs + 1)
            await wait_done_in_table(conn, schema, jobs, min(h.id for h in handles))
            cpu.stop()
            rows = await conn.fetch(STATS)
        finally:
            await conn.close()
    total_ms = 0.0
    for row in sorted(rows, key=lambda r: -r["total_exec_time"]):
        if row["calls"] * 64 < jobs or (
            schema not in row["query"] and "pg_notify" not in row["query"]
        ):
            continue  # the benchmark's own checks, other schemas, one-off statements
        calls = row["calls"]
        name = name_of(row["query"], known)
        if name in known:  # the statements inside functions are inside these already
            total_ms += row["total_exec_time"]
        line: dict[str, Any] = {
            "bench": "w2_statements",
            "statement": name,
            "calls": calls,
            "mean_exec_ms": round(row["total_exec_time"] / calls, 3),
            "mean_plan_ms": round(row["total_plan_time"] / max(row["plans"], 1), 3),
            "plans": row["plans"],
            "rows_per_call": round(row["rows"] / calls, 1),
            "blks_hit_per_call": round(row["shared_blks_hit"] / calls, 1),
            "blks_dirtied_per_call": round(row["shared_blks_dirtied"] / calls, 2),
            "wal_records_per_call": round(row["wal_records"] / calls, 1),
            "wal_bytes_per_call": round(float(row["wal_bytes"]) / calls),
            "exec_us_per_job": round(1000 * row["total_exec_time"] / jobs, 2),
        }
        print(json.dumps(line), flush=True)
    per = cpu.per(jobs)
    print(
        json.dumps(
            {
                "bench": "w2_statements-run",
                "jobs": jobs,
                "concurrency": concurrency,
                "rate": round(jobs / cpu.wall_s),
                "named_statements_exec_us_per_job": round(1000 * total_ms / jobs, 2),
                "server_cpu_ms_per_job": per["server_cpu_ms_per"],
                "client_cpu_ms_per_job": per["client_cpu_ms_per"],
            }
        ),
        flush=True,
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    env = await BenchEnv.open(args.dsn, Report())
    print(json.dumps({"bench": "w2_statements-server", "server": env.server_version}))
    for _ in range(args.runs):
        await one_run(env, args.jobs, args.concurrency)


if __name__ == "__main__":
    asyncio.run(main())
