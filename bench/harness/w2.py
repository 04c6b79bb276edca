"""w2: jobs (`@gd.job`): one bulk enqueue with claiming paused, then processing."""

from __future__ import annotations

from typing import Any

import asyncpg

from .counting import COUNTER
from .engines import bench_engine, wait_done_in_table
from .env import BenchEnv
from .flows import QUEUE, bench_job
from .meters import CpuWindow


async def run(env: BenchEnv, jobs: int, concurrency: int) -> None:
    async with bench_engine(env.dsn, [bench_job], {QUEUE: concurrency}) as (engine, finished):
        check = await asyncpg.connect(env.dsn)
        try:
            await bench_job.enqueue({"n": -1}, engine=engine)  # warm-up
            await finished.wait(1)
            scheduler = engine.schedulers[QUEUE]
            scheduler.stop_claiming()
            COUNTER.reset()
            enqueue = CpuWindow(env.postmaster).start()
            handles = await engine.start_many([bench_job.new({"n": i}) for i in range(jobs)])
            enqueue.stop()
            enqueue_statements = COUNTER.snapshot()
            COUNTER.reset()
            cpu = CpuWindow(env.postmaster).start()
            scheduler.resume_claiming()
            await finished.wait(jobs + 1)
            await wait_done_in_table(check, engine.schema, jobs, min(h.id for h in handles))
            cpu.stop()
        finally:
            await check.close()
    env.report.add(
        {
            "bench": "w2",
            "system": "gendurable",
            "variant": "bulk enqueue (one start_many)",
            "jobs": jobs,
            "seconds": round(enqueue.wall_s, 3),
            "rate": round(jobs / enqueue.wall_s),
            "unit": "jobs/s",
            "statement_breakdown": enqueue_statements,
            "client_cpu_ms_per_step": enqueue.per(jobs)["client_cpu_ms_per"],
            "server_cpu_ms_per_step": enqueue.per(jobs)["server_cpu_ms_per"],
        }
    )
    per = cpu.per(jobs)
    line: dict[str, Any] = {
        "bench": "w2",
        "system": "gendurable",
        "variant": f"processing, concurrency {concurrency}",
        "jobs": jobs,
        "concurrency": concurrency,
        "seconds": round(cpu.wall_s, 3),
        "rate": round(jobs / cpu.wall_s),
        "unit": "jobs/s",
        "claims": COUNTER.counts.get("instance_claim", 0)
        + COUNTER.counts.get("instance_claim_lean", 0),
        "statements": COUNTER.total,
        "statements_per_step": round(COUNTER.total / jobs, 3),
        "statement_breakdown": COUNTER.snapshot(),
        **COUNTER.notified(),
        "client_cpu_ms_per_step": per["client_cpu_ms_per"],
        "server_cpu_ms_per_step": per["server_cpu_ms_per"],
    }
    env.report.add(line)
