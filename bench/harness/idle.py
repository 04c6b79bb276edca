"""idle: statements per second an engine with 4 queues and nothing to do sends."""

from __future__ import annotations

import asyncio

from .counting import COUNTER
from .engines import bench_engine
from .env import BenchEnv
from .flows import Idle
from .meters import CpuWindow

QUEUES = {f"idle-{i}": 4 for i in range(4)}


async def run(env: BenchEnv, seconds: float) -> None:
    async with bench_engine(env.dsn, [Idle], QUEUES):
        await asyncio.sleep(2.0)  # past the start-up claims and reports
        COUNTER.reset()
        cpu = CpuWindow(env.postmaster).start()
        await asyncio.sleep(seconds)
        cpu.stop()
        counts = COUNTER.snapshot()
    env.report.add(
        {
            "bench": "idle",
            "system": "gendurable",
            "variant": "4 queues, nothing due",
            "seconds": round(cpu.wall_s, 2),
            "rate": round(sum(counts.values()) / cpu.wall_s, 2),
            "unit": "statements/s (counted by wrapping the Store)",
            "statement_breakdown": counts,
            "client_cpu_ms_per_s": round(cpu.client_s * 1000 / cpu.wall_s, 2),
        }
    )
