"""scale: does a big table slow the engine down? Claim latency and w1 one-by-one with `rows`
rows already in the table: 80% done, 5% failed, 15% awaiting a signal (a third of those
with a deadline), none due. They go in with one `generate_series` INSERT, then VACUUM
ANALYZE (what autovacuum would have done to a table that grew over time) and a CHECKPOINT
(so the probe does not time the flush of the fill's own writes; skipped without the right).
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import timedelta
from typing import Any

import asyncpg

import gendurable as gd
from gendurable.db.schema_admin import drop_schema
from gendurable.sql import statements

from .counting import COUNTER
from .engines import bench_engine, new_schema
from .env import BenchEnv
from .floor import floor
from .flows import QUEUE, ThreeSteps
from .meters import percentile
from .w1 import one_by_one

FILL = """
INSERT INTO "{schema}".instances (
    workflow, queue, step, state, status, run_at, key, await_names, await_deadline,
    result, inserted_at, updated_at, finished_at)
SELECT CASE WHEN kind < 85 THEN 'bench.three_steps' ELSE 'bench.await_then_next' END,
       '{queue}',
       CASE WHEN kind < 85 THEN 'c' ELSE 'wait' END,
       '{{"n": 3}}'::jsonb,
       (CASE WHEN kind < 80 THEN 'done' WHEN kind < 85 THEN 'failed'
             ELSE 'awaiting' END)::"{schema}".status,
       now() - interval '1 day',
       'fill-' || g,
       CASE WHEN kind >= 85 THEN ARRAY['go'] END,
       CASE WHEN kind >= 95 THEN now() + interval '1 day' END,
       CASE WHEN kind < 80 THEN '3'::jsonb END,
       now() - interval '1 day', now() - interval '1 day',
       CASE WHEN kind < 85 THEN now() - interval '1 day' + g * interval '1 ms' END
FROM (SELECT g, g % 100 AS kind FROM generate_series(1, $1::int) g) s
"""

PROBES = 200


async def _fill(dsn: str, schema: str, rows: int) -> float:
    await gd.migrate(dsn, schema=schema)
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        await conn.execute(FILL.format(schema=schema, queue=QUEUE), rows)
        await conn.execute(f'VACUUM ANALYZE "{schema}".instances')
        elapsed = time.perf_counter() - started
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")
        return elapsed
    finally:
        await conn.close()


async def _claim_plan_times(dsn: str, schema: str, scheduler: Any) -> list[float]:
    """The claim's execution time inside PostgreSQL (EXPLAIN ANALYZE, rolled back): the
    part a bigger table could slow down, free of the client's and the machine's noise."""
    claim: Any = statements(schema)["instance_claim"]
    if isinstance(claim, str):  # an engine from before statements named their parameters
        sql = "EXPLAIN (ANALYZE, FORMAT JSON) " + claim
        args: tuple[Any, ...] = (QUEUE, 1, "probe", scheduler.known_leases, None)
        args += (scheduler.known_workflows, scheduler.known_steps)
        args += (f"gendurable:ck:{schema}:", timedelta(seconds=5))
    else:
        sql = "EXPLAIN (ANALYZE, FORMAT JSON) " + claim.sql
        args = claim.args(
            queue=QUEUE,
            limit=1,
            locked_by="probe",
            workflows=scheduler.known_workflows,
            steps=scheduler.known_steps,
            leases=scheduler.known_leases,
            now=None,
            unknown_limit_wait=timedelta(seconds=5),
        )
    conn = await asyncpg.connect(dsn)
    times: list[float] = []
    try:
        for _ in range(PROBES):
            tx = conn.transaction()
            await tx.start()
            try:
                plan = json.loads(await conn.fetchval(sql, *args))
                times.append(plan[0]["Execution Time"] / 1000)
            finally:
                await tx.rollback()
    finally:
        await conn.close()
    return times


async def _claim_probe(dsn: str, schema: str) -> tuple[list[float], list[float]]:
    """Time `PROBES` single-row claims, each finding one due row among the filler, from the
    client and inside the server."""
    async with bench_engine(dsn, [ThreeSteps], {QUEUE: 1}, schema=schema, keep_schema=True) as (
        engine,
        _,
    ):
        scheduler = engine.schedulers[QUEUE]
        scheduler.stop_claiming()
        async with scheduler._claim_lock:  # a claim already in flight could take a probe row
            pass
        await ThreeSteps.start_many(
            [ThreeSteps.new(key=f"probe{i}") for i in range(PROBES)], engine=engine
        )
        try:
            inside = await _claim_plan_times(dsn, schema, scheduler)
        except asyncpg.InterfaceError:
            # The claim of an older engine (an A/B run, `--against`) takes other parameters:
            # its time inside the server is left out, the rest of the figure stands.
            inside = []
        times: list[float] = []
        for _ in range(PROBES):
            started = time.perf_counter()
            rows = await engine.store.instance_claim(
                queue=QUEUE,
                limit=1,
                locked_by="probe",
                leases=scheduler.known_leases,
                now=None,
                workflows=scheduler.known_workflows,
                steps=scheduler.known_steps,
            )
            times.append(time.perf_counter() - started)
            assert len(rows) == 1, rows
        conn = await asyncpg.connect(dsn)
        try:  # the probed rows are done with: out of the way of w1
            await conn.execute(
                f"UPDATE \"{schema}\".instances SET status = 'done', finished_at = now(), "
                "locked_by = NULL WHERE locked_by = 'probe'"
            )
        finally:
            await conn.close()
    return times, inside


def latencies(name: str, seconds: list[float]) -> dict[str, Any]:
    """p50 and p99 in ms of one statement's timings, with their count (None when it ran
    not at all)."""
    if not seconds:
        return {f"{name}_count": 0}
    return {
        f"{name}_count": len(seconds),
        f"{name}_p50_ms": round(percentile(seconds, 0.5) * 1000, 3),
        f"{name}_p99_ms": round(percentile(seconds, 0.99) * 1000, 3),
    }


async def run(env: BenchEnv, sizes: list[int], concurrency: int) -> None:
    for rows in sizes:
        schema = new_schema()
        try:
            fill_s = await _fill(env.dsn, schema, rows)
            probe, inside = await _claim_probe(env.dsn, schema)
            env.report.hold()
            COUNTER.reset()
            before = await floor(env.dsn, 8, seconds=2.0)
            line: dict[str, Any] = await one_by_one(
                env, 2000, concurrency, schema=schema, report=False
            )
            after = await floor(env.dsn, 8, seconds=2.0)
            # Starts made by the executing engine are claimed by their insert, so w1 one by
            # one may claim nothing: the group commit's latency is the loaded statement then.
            claims = COUNTER.seconds.get("instance_claim", []) + COUNTER.seconds.get(
                "instance_claim_lean", []
            )
            commits = COUNTER.seconds.get("outcome_batch", [])
            inserts = COUNTER.seconds.get("instance_insert", [])
        finally:
            await drop_schema(env.dsn, schema)
        env.report.add(
            {
                "bench": "scale",
                "system": "gendurable",
                "variant": f"{rows:,} rows in the table",
                "rows": rows,
                "fill_seconds": round(fill_s, 1),
                "claim_probe_p50_ms": round(percentile(probe, 0.5) * 1000, 3),
                "claim_probe_p99_ms": round(percentile(probe, 0.99) * 1000, 3),
                **latencies("claim_in_server", inside),
                **latencies("claim_under_load", claims),
                **latencies("commit_under_load", commits),
                **latencies("insert_under_load", inserts),
                "rate": line["rate"],
                "unit": "steps/s",
                "w1": "one-by-one, 2,000 instances, concurrency " + str(concurrency),
                "statements_per_step": line["statements_per_step"],
                "client_cpu_ms_per_step": line["client_cpu_ms_per_step"],
            }
        )
        env.report.release(before, after)
