"""w1 in N worker processes against one database (`bench/run.py w1 --workers N`).

Each worker is a process of its own running an engine on the shared schema and starting its
share of the instances one by one, as in w1; any engine may run any instance. The parent
times from "go" until the instances table shows every instance done, and reads each worker's
client CPU and statement count once all are.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

import gendurable as gd
from gendurable.db.schema_admin import drop_schema

from .counting import COUNTER
from .engines import bench_engine, new_schema, wait_done_in_table, wait_nothing_due
from .env import BenchEnv
from .flows import QUEUE, ThreeSteps
from .meters import CpuWindow

CHILD = "_w1-worker"
RUN_PY = Path(__file__).resolve().parent.parent / "run.py"


async def _line(stream: asyncio.StreamReader) -> dict[str, Any]:
    raw = await stream.readline()
    if not raw:
        raise RuntimeError("a worker exited early")
    return dict(json.loads(raw))


async def run(env: BenchEnv, n: int, instances: int, concurrency: int) -> None:
    schema = new_schema()
    await gd.migrate(env.dsn, schema=schema)
    procs = []
    check = await asyncpg.connect(env.dsn)
    try:
        share = instances // n
        for k in range(n):
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(RUN_PY),
                    CHILD,
                    env.dsn,
                    schema,
                    str(k),
                    str(share),
                    str(concurrency),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        for p in procs:
            assert p.stdout is not None
            await _line(p.stdout)  # ready (warmed up)
        first_id = await check.fetchval(
            f'SELECT coalesce(max(id), 0) + 1 FROM "{schema}".instances'
        )
        cpu = CpuWindow(env.postmaster).start()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            await p.stdin.drain()
        for p in procs:
            assert p.stdout is not None
            await _line(p.stdout)  # its start loop is over: every row is in the table
        await wait_nothing_due(check, schema)
        await wait_done_in_table(check, schema, share * n, first_id, timeout=600)
        cpu.stop()
        reports = []
        for p in procs:
            assert p.stdin is not None
            assert p.stdout is not None
            p.stdin.write(b"stop\n")
            await p.stdin.drain()
            reports.append(await _line(p.stdout))
            await p.wait()
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await check.close()
        await drop_schema(env.dsn, schema)
    steps = share * n * 3
    client_s = sum(r["cpu_s"] for r in reports)
    statements = sum(r["statements"] for r in reports)
    env.report.add(
        {
            "bench": "w1",
            "system": "gendurable",
            "variant": f"one-by-one, {n} worker process(es), concurrency {concurrency} each",
            "workers": n,
            "instances": share * n,
            "steps": steps,
            "seconds": round(cpu.wall_s, 3),
            "rate": round(steps / cpu.wall_s),
            "unit": "steps/s",
            "start_loop_seconds": [r["loop_s"] for r in reports],
            "statements_per_step": round(statements / steps, 3),
            "client_cpu_ms_per_step": round(client_s * 1000 / steps, 4),
            "server_cpu_ms_per_step": cpu.per(steps)["server_cpu_ms_per"],
            "client_cpu_busy": round(client_s / cpu.wall_s, 2),
            "server_cpu_busy": (
                round(cpu.server_s / cpu.wall_s, 2) if cpu.server_s is not None else None
            ),
        }
    )


async def child(argv: list[str]) -> None:
    """One worker: engine up, warm-up, wait for go, start its share, report on stop."""
    parser = argparse.ArgumentParser(prog=CHILD)
    for name in ("dsn", "schema", "index", "instances", "concurrency"):
        parser.add_argument(name)
    args = parser.parse_args(argv)
    COUNTER.install()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with bench_engine(
        args.dsn,
        [ThreeSteps],
        {QUEUE: int(args.concurrency)},
        schema=args.schema,
        keep_schema=True,
    ) as (engine, _):
        warm = [f"w{args.index}-warm{i}" for i in range(5)]
        for key in warm:
            await ThreeSteps.start(key=key, engine=engine)
        for key in warm:  # another worker may run them: wait on the rows, not telemetry
            await ThreeSteps.result(key, timeout=60, engine=engine)
        print(json.dumps({"ready": True}), flush=True)
        await reader.readline()
        COUNTER.reset()
        cpu_start = time.process_time()
        started = time.perf_counter()
        for i in range(int(args.instances)):
            await ThreeSteps.start(key=f"w{args.index}-{i}", engine=engine)
        loop_s = time.perf_counter() - started
        print(json.dumps({"started": True}), flush=True)
        await reader.readline()  # stop: every instance is done
        report = {
            "cpu_s": time.process_time() - cpu_start,
            "statements": COUNTER.total,
            "loop_s": round(loop_s, 3),
        }
    print(json.dumps(report), flush=True)
