"""What bounds w1 one by one: `python bench/start_bound.py [--dsn DSN] [--rounds N]`.

A start loop waits for each start's insert, so w1 one by one runs at most three steps per
insert round trip. This measures, round by round on one server, the latency of that round
trip in three settings, with floor(1) and floor(8) beside them:

- `engine_running`: w1 one by one as `bench/run.py w1` runs it (the engine of the same
  process runs every instance's three steps meanwhile, at concurrency 64);
- `nothing_running`: the same 2,000 starts from a client-only engine (no queue runs here),
  so each insert meets no other statement of ours on the server;
- `floor(1)`: single-row update transactions from one connection, the cheapest durable
  write (its latency is 1 / its rate);
- `roundtrip_cpu_us`: the client CPU (`time.thread_time()`) of one `SELECT` round trip,
  answered at once, and answered after the server slept 1 ms: the same work on the client,
  but in the second the process goes idle while it waits and wakes up when the answer
  comes, as a start loop does at each insert.

Each round prints one JSON line: the mean and p50 of a start's latency (the insert's round
trip is all of it but a few microseconds), the steps/s w1 reached, and their ratios to the
floor. A closing line gives the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.engines import bench_engine
from harness.env import BenchEnv
from harness.floor import floor
from harness.flows import QUEUE, ThreeSteps
from harness.report import Report

WARM_UP = 20


async def starts(engine: Any, instances: int, tag: str) -> list[float]:
    """Start `instances` one by one; each start's latency in seconds."""
    latencies = []
    for i in range(instances):
        began = time.perf_counter()
        await ThreeSteps.start(key=f"{tag}{i}", engine=engine)
        latencies.append(time.perf_counter() - began)
    return latencies


async def engine_running(env: BenchEnv, instances: int) -> tuple[list[float], float]:
    async with bench_engine(env.dsn, [ThreeSteps], {QUEUE: 64}) as (engine, finished):
        await starts(engine, WARM_UP, "warm")
        await finished.wait(WARM_UP)
        began = time.perf_counter()
        latencies = await starts(engine, instances, "i")
        await finished.wait(WARM_UP + instances)
        return latencies, 3 * instances / (time.perf_counter() - began)


async def nothing_running(env: BenchEnv, instances: int) -> list[float]:
    async with bench_engine(env.dsn, [ThreeSteps], {}) as (engine, _):
        await starts(engine, WARM_UP, "warm")
        return await starts(engine, instances, "i")


async def roundtrip_cpu(dsn: str, count: int = 1000) -> dict[str, float]:
    """Client CPU (us) of one round trip, answered at once and after 1 ms on the server."""
    conn = await asyncpg.connect(dsn)
    try:
        cpu = {}
        for name, sql in (
            ("answered_at_once", "SELECT $1::int"),
            ("answered_after_1ms", "SELECT $1::int, pg_sleep(0.001)"),
        ):
            await conn.fetchrow(sql, 0)
            began = time.thread_time()
            for i in range(count):
                await conn.fetchrow(sql, i)
            cpu[name] = round((time.thread_time() - began) * 1e6 / count, 1)
        return cpu
    finally:
        await conn.close()


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "mean_ms": round(1000 * statistics.mean(latencies), 3),
        "p50_ms": round(1000 * statistics.median(latencies), 3),
    }


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn")
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    embedded = None
    dsn = args.dsn
    if not dsn:
        from gendurable.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres()
        dsn = await embedded.astart()
    lines = []
    try:
        env = await BenchEnv.open(dsn, Report())
        for r in range(1, args.rounds + 1):
            floor1 = await floor(dsn, 1, seconds=2.0)
            floor8 = await floor(dsn, 8, seconds=2.0)
            running, rate = await engine_running(env, args.instances)
            idle = await nothing_running(env, args.instances)
            roundtrip = await roundtrip_cpu(dsn)
            line = {
                "bench": "start_bound",
                "round": r,
                "floor1_tx_per_s": round(floor1),
                "floor1_latency_ms": round(1000 / floor1, 3),
                "floor8_tx_per_s": round(floor8),
                "start_engine_running": summary(running),
                "start_nothing_running": summary(idle),
                "w1_steps_per_s": round(rate),
                "w1_ratio_to_floor8": round(rate / floor8, 3),
                "w1_bound_steps_per_s": round(3 / statistics.mean(running)),
                "running_over_floor1_latency": round(statistics.mean(running) * floor1, 2),
                "idle_over_floor1_latency": round(statistics.mean(idle) * floor1, 2),
                "roundtrip_cpu_us": roundtrip,
            }
            lines.append(line)
            print(json.dumps(line), flush=True)
    finally:
        if embedded is not None:
            await embedded.astop()
    keys = ("w1_ratio_to_floor8", "running_over_floor1_latency", "idle_over_floor1_latency")
    print(
        json.dumps(
            {
                "bench": "start_bound",
                "medians": {k: statistics.median(x[k] for x in lines) for k in keys},
            }
        )
    )


if __name__ == "__main__":
    warnings.simplefilter("ignore", ResourceWarning)
    asyncio.run(main(sys.argv[1:]))
