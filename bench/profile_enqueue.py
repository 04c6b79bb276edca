"""Where the client CPU of a bulk enqueue goes: `python bench/profile_enqueue.py`.

Runs w2's enqueue (one `start_many` of `--jobs` `bench.job` entries, claiming paused) on an
embedded PostgreSQL (or `--dsn`), `--repeat` times, and prints one JSON line per run with
the wall time, the client CPU (`time.process_time()`) split into building the rows (the
Python before the statement) and the rest (encoding, the round trip, decoding), and the
server's CPU. With `--profile`, one extra run under cProfile prints its top functions by
own time (cProfile slows Python-heavy code, so read its shares, not its milliseconds).
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


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="one more run under cProfile")
    args = parser.parse_args(argv)
    embedded = None
    dsn = args.dsn
    if not dsn:
        from gendurable.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres()
        dsn = await embedded.astart()
    try:
        await enqueue_runs(dsn, args.jobs, args.repeat, args.profile)
    finally:
        if embedded is not None:
            await embedded.astop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
