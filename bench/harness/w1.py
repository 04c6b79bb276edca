"""w1: a 3-step workflow over many instances, in one process or in N worker processes.

- one by one: `await ThreeSteps.start(...)` in a loop while the same engine executes, timed
  from the first start until every instance is done (the issue's "as a new user would");
- bulk: one `start_many` inserts the instances with claiming paused, then the engine runs
  them, timed from resuming the claims until all are done.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from .counting import COUNTER
from .engines import bench_engine, wait_done_in_table
from .env import BenchEnv
from .flows import QUEUE, ThreeSteps
from .meters import CpuWindow

WARM_UP = 20
"""Instances run before the window, so statements are prepared and the pool is full."""


async def _warm_up(engine: Any, finished: Any) -> None:
    for i in range(WARM_UP):
        await ThreeSteps.start(key=f"warm{i}", engine=engine)
    await finished.wait(WARM_UP)


def _costs(cpu: CpuWindow, steps: int) -> dict[str, Any]:
    per = cpu.per(steps)
    return {
        "statements": COUNTER.total,
        "statements_per_step": round(COUNTER.total / steps, 3),
        "statement_breakdown": COUNTER.snapshot(),
        **COUNTER.notified(),
        "client_cpu_ms_per_step": per["client_cpu_ms_per"],
        "server_cpu_ms_per_step": per["server_cpu_ms_per"],
    }


async def one_by_one(
    env: BenchEnv,
    instances: int,
    concurrency: int,
    *,
    schema: str | None = None,
    report: bool = True,
    keyed: bool = True,
) -> dict[str, Any]:
    """Start `instances` one by one while the same engine runs them (in `schema`, if given);
    each with a key of its own, or with none (`keyed=False`, `bench/start_unkeyed.py`)."""
    async with bench_engine(
        env.dsn, [ThreeSteps], {QUEUE: concurrency}, schema=schema, keep_schema=schema is not None
    ) as (engine, finished):
        check = await asyncpg.connect(env.dsn)
        try:
            await _warm_up(engine, finished)
            target = WARM_UP + instances
            COUNTER.reset()
            cpu = CpuWindow(env.postmaster).start()
            first = await ThreeSteps.start(key="i0" if keyed else None, engine=engine)
            for i in range(1, instances):
                await ThreeSteps.start(key=f"i{i}" if keyed else None, engine=engine)
            loop_s, loop_cpu_s = cpu.lap()
            await finished.wait(target)
            await wait_done_in_table(check, engine.schema, instances, first.id)
            cpu.stop()
        finally:
            await check.close()
    steps = instances * 3
    claims = COUNTER.counts.get("instance_claim", 0) + COUNTER.counts.get("instance_claim_lean", 0)
    line = {
        "bench": "w1",
        "system": "gendurable",
        "variant": f"one-by-one, concurrency {concurrency}" + ("" if keyed else ", unkeyed"),
        "instances": instances,
        "concurrency": concurrency,
        "steps": steps,
        "seconds": round(cpu.wall_s, 3),
        "rate": round(steps / cpu.wall_s),
        "unit": "steps/s",
        "start_loop_seconds": round(loop_s, 3),
        "client_cpu_ms_per_start_in_loop": round(loop_cpu_s * 1000 / instances, 4),
        "client_cpu_ms_per_start": round(cpu.client_s * 1000 / instances, 4),
        "claims": claims,
        **_costs(cpu, steps),
    }
    return env.report.add(line) if report else line


async def bulk(env: BenchEnv, instances: int, concurrency: int) -> dict[str, Any]:
    """Insert `instances` with one `start_many`, then run them all."""
    async with bench_engine(env.dsn, [ThreeSteps], {QUEUE: concurrency}) as (engine, finished):
        check = await asyncpg.connect(env.dsn)
        try:
            await _warm_up(engine, finished)
            scheduler = engine.schedulers[QUEUE]
            scheduler.stop_claiming()
            insert_cpu = CpuWindow(env.postmaster).start()
            handles = await ThreeSteps.start_many(
                [ThreeSteps.new(key=f"i{i}") for i in range(instances)], engine=engine
            )
            insert_cpu.stop()
            COUNTER.reset()
            cpu = CpuWindow(env.postmaster).start()
            scheduler.resume_claiming()
            target = WARM_UP + instances
            await finished.wait(target)
            await wait_done_in_table(check, engine.schema, instances, min(h.id for h in handles))
            cpu.stop()
        finally:
            await check.close()
    steps = instances * 3
    return env.report.add(
        {
            "bench": "w1",
            "system": "gendurable",
            "variant": f"bulk start_many, concurrency {concurrency}",
            "instances": instances,
            "concurrency": concurrency,
            "steps": steps,
            "seconds": round(cpu.wall_s, 3),
            "rate": round(steps / cpu.wall_s),
            "unit": "steps/s",
            "insert_seconds": round(insert_cpu.wall_s, 3),
            "insert_per_s": round(instances / insert_cpu.wall_s),
            "client_cpu_ms_per_start_insert": round(insert_cpu.client_s * 1000 / instances, 4),
            "client_cpu_ms_per_start": round(
                (insert_cpu.client_s + cpu.client_s) * 1000 / instances, 4
            ),
            "claims": COUNTER.counts.get("instance_claim", 0)
            + COUNTER.counts.get("instance_claim_lean", 0),
            **_costs(cpu, steps),
        }
    )
