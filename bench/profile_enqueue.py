"""Where the client CPU of a bulk enqueue goes: `python bench/profile_enqueue.py`.

Runs w2's enqueue (one `start_many` of `--jobs` `bench.job` entries, claiming paused) on an
embedded PostgreSQL (or `--dsn`), `--repeat` times, and prints one JSON line per run with
the wall time, the client CPU (`time.process_time()`) split into building the rows (the
Python before the statement) and the rest (encoding, the round trip, decoding), and the
server's CPU. With `--profile`, one extra run under cProfile prints its top functions by
own time (cProfile slows Python-heavy code, so read its shares, not its milliseconds).

With `--explain`, the server's side: `EXPLAIN (ANALYZE, BUFFERS, WAL)` of the batch's
`instance_insert_many` (each in a transaction rolled back), first as shipped, then once per
index of `instances` with that index dropped (inside the same rolled-back transaction), then
as shipped again (the spread of the two shipped lines is the noise): one JSON line each, the
difference to the first being what that index costs a row. `--repeat` is the number of
executions each line takes the fastest of.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.engines import bench_engine
from harness.flows import QUEUE, bench_job
from harness.meters import CpuWindow

import gendurable.engine.client as client_module
from gendurable.entries import columns, new_row


async def enqueue_runs(dsn: str, jobs: int, repeat: int, profile: bool) -> None:
    from harness.env import BenchEnv
    from harness.report import Report

    env = await BenchEnv.open(dsn, Report())
    built = {"s": 0.0}
    original = client_module.columns

    def timed_columns(rows: Any) -> Any:  # the rows are built by now: time what follows
        built["s"] = time.process_time()
        return original(rows)

    client_module.columns = timed_columns  # type: ignore[assignment]
    async with bench_engine(dsn, [bench_job], {QUEUE: 64}) as (engine, _finished):
        await bench_job.enqueue({"n": -1}, engine=engine)
        engine.schedulers[QUEUE].stop_claiming()
        for run in range(repeat + (1 if profile else 0)):
            entries = [bench_job.new({"n": i}) for i in range(jobs)]
            profiler = cProfile.Profile() if profile and run == repeat else None
            window = CpuWindow(env.postmaster).start()
            cpu0 = time.process_time()
            if profiler is not None:
                profiler.enable()
            await engine.start_many(entries)
            if profiler is not None:
                profiler.disable()
            cpu1 = time.process_time()
            window.stop()
            if profiler is not None:
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
                print(out.getvalue(), file=sys.stderr)
                continue
            per = window.per(jobs)
            print(
                json.dumps(
                    {
                        "bench": "profile_enqueue",
                        "jobs": jobs,
                        "run": run,
                        "wall_ms": round(window.wall_s * 1000, 1),
                        "rate": round(jobs / window.wall_s),
                        "client_cpu_ms": round((cpu1 - cpu0) * 1000, 1),
                        "rows_cpu_ms": round((built["s"] - cpu0) * 1000, 1),
                        "rest_cpu_ms": round((cpu1 - built["s"]) * 1000, 1),
                        "server_cpu_ms_per_job": per["server_cpu_ms_per"],
                    }
                ),
                flush=True,
            )


async def explain(dsn: str, jobs: int, rounds: int) -> None:
    """The insert's plan and cost, as shipped and without each index of `instances`."""
    async with bench_engine(dsn, [bench_job], {QUEUE: 64}) as (engine, _finished):
        engine.schedulers[QUEUE].stop_claiming()
        db = engine.store.db
        statement = db.sql["instance_insert_many"]
        rows = [new_row(bench_job.spec, bench_job.new({"n": i})) for i in range(jobs)]
        args = statement.args(**columns(rows), parent_id=None, now=None, trace_context=None)
        await engine.start_many([bench_job.new({"n": i}) for i in range(jobs)])  # a table
        async with db.pool.acquire() as conn:
            indexes = [
                r["indexname"]
                for r in await conn.fetch(
                    "SELECT indexname FROM pg_indexes WHERE schemaname = $1 "
                    "AND tablename = 'instances' ORDER BY indexname",
                    engine.schema,
                )
            ]
            base: float | None = None
            for n, dropped in enumerate([None, *indexes, None]):  # shipped again: noise
                if dropped in ("instances_key", "instances_pkey"):  # the arbiter, the key
                    continue
                times: list[float] = []
                plan: dict[str, Any] = {}
                for _ in range(rounds):
                    tx = conn.transaction()
                    await tx.start()
                    try:
                        if dropped is not None:
                            await conn.execute(f'DROP INDEX "{engine.schema}"."{dropped}"')
                        found = await conn.fetchval(
                            "EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) " + statement.sql,
                            *args,
                        )
                    finally:
                        await tx.rollback()
                    plan = json.loads(found)[0]
                    times.append(plan["Execution Time"] + plan["Planning Time"])
                best = min(times)
                base = best if base is None else base
                top = plan["Plan"]
                if n == 0:
                    _print_tree(top, plan["Planning Time"])
                print(
                    json.dumps(
                        {
                            "bench": "profile_enqueue",
                            "explain": f"without {dropped}" if dropped else "as shipped",
                            "jobs": jobs,
                            "ms": round(best, 1),
                            "us_per_row": round(best * 1000 / jobs, 2),
                            "saves_us_per_row": round((base - best) * 1000 / jobs, 2),
                            "wal_bytes_per_row": round(_wal(top, "WAL Bytes") / jobs),
                            "wal_records_per_row": round(_wal(top, "WAL Records") / jobs, 1),
                            "shared_dirtied": _wal(top, "Shared Dirtied Blocks"),
                        }
                    ),
                    flush=True,
                )


def _print_tree(node: dict[str, Any], planning_ms: float, depth: int = 0) -> None:
    """The plan, one node a line on stderr: what it is, its time and rows."""
    if depth == 0:
        print(f"planning {planning_ms:.1f} ms", file=sys.stderr)
    what = node["Node Type"] + "".join(
        f" {node[k]}" for k in ("Subplan Name", "Function Name", "Alias") if k in node
    )
    print(
        f"{'  ' * depth}{what}: {node['Actual Total Time']:.1f} ms, "
        f"{node['Actual Rows']:.0f} rows, WAL {node.get('WAL Records', 0)} records",
        file=sys.stderr,
    )
    for child in node.get("Plans", []):
        _print_tree(child, planning_ms, depth + 1)


def _wal(node: dict[str, Any], field: str) -> float:
    """The largest figure `field` of the plan (a parent's figures include its children's,
    but a CTE's insert is not under the top node's: take the maximum over the tree)."""
    found = float(node.get(field, 0) or 0)
    for child in node.get("Plans", []):
        found = max(found, _wal(child, field))
    return found


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="one more run under cProfile")
    parser.add_argument("--explain", action="store_true", help="the insert's plan, per index")
    args = parser.parse_args(argv)
    embedded = None
    dsn = args.dsn
    if not dsn:
        from gendurable.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres()
        dsn = await embedded.astart()
    try:
        if args.explain:
            await explain(dsn, args.jobs, args.repeat)
        else:
            await enqueue_runs(dsn, args.jobs, args.repeat, args.profile)
    finally:
        if embedded is not None:
            await embedded.astop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
