"""w3: signal latency. Awaiting instances are signalled one at a time, with a random
50-250 ms pause before each; the latency runs from the `signal` call until the woken step
has committed, seen as the start of the step after it (which runs only once it has).
"""

from __future__ import annotations

import asyncio
import random
import time

import asyncpg

from . import flows
from .counting import COUNTER
from .engines import bench_engine
from .env import BenchEnv
from .flows import QUEUE, AwaitThenNext
from .meters import CpuWindow, percentile


async def run(env: BenchEnv, signals: int, concurrency: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    latencies: list[float] = []
    async with bench_engine(env.dsn, [AwaitThenNext], {QUEUE: concurrency}) as (engine, _):
        check = await asyncpg.connect(env.dsn)
        try:
            keys = [f"s{i}" for i in range(signals + 1)]
            await AwaitThenNext.start_many([AwaitThenNext.new(key=k) for k in keys], engine=engine)
            await engine.drain()  # every instance parked
            parked = await check.fetchval(
                f"SELECT count(*) FROM \"{engine.schema}\".instances WHERE status = 'awaiting'"
            )
            if parked != len(keys):
                raise RuntimeError(f"expected {len(keys)} parked instances, found {parked}")
            COUNTER.reset()
            cpu = CpuWindow(env.postmaster).start()
            for i, key in enumerate(keys):
                await asyncio.sleep(rng.uniform(0.05, 0.25))
                woken = asyncio.get_running_loop().create_future()
                flows.WAITERS[key] = woken
                sent = time.perf_counter()
                await AwaitThenNext.signal(key, "go", engine=engine)
                async with asyncio.timeout(30):
                    await woken
                if i:  # the first one is the warm-up
                    latencies.append(flows.WOKEN_AT[key] - sent)
            cpu.stop()
        finally:
            await check.close()
    env.report.add(
        {
            "bench": "w3",
            "system": "gendurable",
            "variant": "signal -> woken step committed",
            "signals": signals,
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
            "max_ms": round(max(latencies) * 1000, 2),
            "statements_per_signal": round(COUNTER.total / (signals + 1), 3),
            "statement_breakdown": COUNTER.snapshot(),
            **COUNTER.notified(),
        }
    )
