"""DBOS on w1, w2 and w3, with its defaults unless said otherwise.

Its system tables go to a schema of their own (`dbos_system_schema`), dropped afterwards.
Concurrency is a queue's `worker_concurrency` (DBOS's way to bound it); a queue polls every
`polling_interval_sec` (default 1 s, which caps a queue at `worker_concurrency` starts per
second), so w1 and w2 run with the default and with 0.01 s.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from importlib.metadata import version
from typing import Any

import asyncpg
from common import CpuWindow, arguments, emit, percentile
from dbos import DBOS, SetWorkflowID

VERSION = f"dbos {version('dbos')}"
SCHEMA = f"dbos_bench_{uuid.uuid4().hex[:6]}"


class Progress:
    """Counts finished workflows in this process; `wait(n)` returns once `n` have."""

    def __init__(self) -> None:
        self.count = 0
        self.first_start: float | None = None
        self.target = 0
        self.reached = asyncio.Event()

    def started(self) -> None:
        if self.first_start is None:
            self.first_start = time.perf_counter()

    def finished(self) -> None:
        self.count += 1
        if self.count >= self.target:
            self.reached.set()

    async def wait(self, target: int) -> None:
        self.target = target
        if self.count >= target:
            self.reached.set()
        async with asyncio.timeout(1800):
            await self.reached.wait()


PROGRESS = Progress()
WOKEN_AT: dict[str, float] = {}
WAITERS: dict[str, asyncio.Future[None]] = {}
PARKED: set[str] = set()


@DBOS.step()
async def step_a(n: int) -> int:
    return n + 1


@DBOS.step()
async def step_b(n: int) -> int:
    return n + 1


@DBOS.step()
async def step_c(n: int) -> int:
    return n + 1


@DBOS.workflow()
async def three_steps(n: int) -> int:
    PROGRESS.started()
    n = await step_c(await step_b(await step_a(n)))
    PROGRESS.finished()
    return n


@DBOS.workflow()
async def job(args: dict[str, Any]) -> None:
    PROGRESS.started()
    PROGRESS.finished()


@DBOS.step()
async def after(key: str) -> None:
    WOKEN_AT[key] = time.perf_counter()
    waiter = WAITERS.pop(key, None)
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


@DBOS.workflow()
async def await_then_next(key: str) -> None:
    PARKED.add(key)
    await DBOS.recv_async("go", timeout_seconds=3600)
    await after(key)


async def wait_status(dsn: str, target: int, name: str) -> None:
    """Read DBOS's workflow table until `target` workflows named `name` succeeded."""
    conn = await asyncpg.connect(dsn)
    try:
        async with asyncio.timeout(60):
            while (  # noqa: ASYNC110 - the table is what a user would read
                await conn.fetchval(
                    f'SELECT count(*) FROM "{SCHEMA}".workflow_status '
                    "WHERE status = 'SUCCESS' AND name LIKE $1",
                    f"%{name}",
                )
                < target
            ):
                await asyncio.sleep(0.002)
    finally:
        await conn.close()


async def w1(args: Any, poll: float) -> None:
    n, c = args.instances, args.concurrency
    queue = await DBOS.register_queue_async(
        f"w1_{c}_{poll}", worker_concurrency=c, polling_interval_sec=poll
    )
    base = PROGRESS.count
    cpu = CpuWindow(args.postmaster).start()
    for i in range(n):
        await queue.enqueue_async(three_steps, i)
    loop_s, _ = cpu.lap()
    await PROGRESS.wait(base + n)
    await wait_status(args.dsn, base + n, "three_steps")
    cpu.stop()
    steps = 3 * n
    emit(
        bench="w1",
        system=VERSION,
        variant=f"one-by-one, worker_concurrency {c}, polling_interval_sec {poll}",
        instances=n,
        concurrency=c,
        steps=steps,
        seconds=round(cpu.wall_s, 3),
        rate=round(steps / cpu.wall_s),
        unit="steps/s",
        start_loop_seconds=round(loop_s, 3),
        client_cpu_ms_per_step=cpu.per(steps)["client_cpu_ms_per"],
        server_cpu_ms_per_step=cpu.per(steps)["server_cpu_ms_per"],
    )


async def w2(args: Any, poll: float, report_enqueue: bool) -> None:
    c = args.concurrency
    # At the default 1 s poll a queue starts at most worker_concurrency jobs a second: a
    # tenth of the jobs shows that rate without taking minutes.
    n = args.jobs if poll < 1 else max(1, args.jobs // 10)
    name = f"w2_{c}_{poll}".replace(".", "_")
    # Enqueued on a queue no worker serves yet; registering it starts the processing.
    base = PROGRESS.count
    PROGRESS.first_start = None
    enqueue = CpuWindow(args.postmaster).start()
    for i in range(n):
        await DBOS.enqueue_workflow_async(name, job, {"n": i})
    enqueue.stop()
    if report_enqueue:
        emit(
            bench="w2",
            system=VERSION,
            variant="enqueue one by one (no batch API)",
            jobs=n,
            seconds=round(enqueue.wall_s, 3),
            rate=round(n / enqueue.wall_s),
            unit="jobs/s",
            client_cpu_ms_per_step=enqueue.per(n)["client_cpu_ms_per"],
            server_cpu_ms_per_step=enqueue.per(n)["server_cpu_ms_per"],
        )
    cpu = CpuWindow(args.postmaster).start()
    await DBOS.register_queue_async(name, worker_concurrency=c, polling_interval_sec=poll)
    await PROGRESS.wait(base + n)
    await wait_status(args.dsn, base + n, "job")
    cpu.stop()
    assert PROGRESS.first_start is not None
    # Timed from the first job's start: the queue thread may take up to 1 s to notice.
    seconds = time.perf_counter() - PROGRESS.first_start
    emit(
        bench="w2",
        system=VERSION,
        variant=f"processing, worker_concurrency {c}, polling_interval_sec {poll}",
        jobs=n,
        seconds=round(seconds, 3),
        rate=round(n / seconds),
        unit="jobs/s",
        client_cpu_ms_per_step=cpu.per(n)["client_cpu_ms_per"],
        server_cpu_ms_per_step=cpu.per(n)["server_cpu_ms_per"],
    )


async def w3(args: Any) -> None:
    rng = random.Random(7)
    keys = [f"s{i}-{SCHEMA}" for i in range(args.signals + 1)]
    for key in keys:
        with SetWorkflowID(key):
            await DBOS.start_workflow_async(await_then_next, key)
    async with asyncio.timeout(120):
        while len(PARKED) < len(keys):  # noqa: ASYNC110 - set from DBOS's own threads
            await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # every workflow is inside recv now
    latencies: list[float] = []
    for i, key in enumerate(keys):
        await asyncio.sleep(rng.uniform(0.05, 0.25))
        woken = asyncio.get_running_loop().create_future()
        WAITERS[key] = woken
        sent = time.perf_counter()
        await DBOS.send_async(key, "go", topic="go")
        async with asyncio.timeout(30):
            await woken
        if i:
            latencies.append(WOKEN_AT[key] - sent)
    await wait_status(args.dsn, len(keys), "await_then_next")
    emit(
        bench="w3",
        system=VERSION,
        variant="send -> recv returned and checkpointed, next step begins",
        signals=args.signals,
        p50_ms=round(percentile(latencies, 0.5) * 1000, 2),
        p99_ms=round(percentile(latencies, 0.99) * 1000, 2),
        max_ms=round(max(latencies) * 1000, 2),
    )


async def main() -> None:
    args = arguments(("w1", "w2", "w3"))
    DBOS(
        config={
            "name": "gendurable-bench",
            "system_database_url": args.dsn,
            "dbos_system_schema": SCHEMA,
            "log_level": "WARNING",
        }
    )
    DBOS.launch()
    try:
        # The default 1 s poll caps a queue at worker_concurrency starts a second: run it at
        # the larger concurrency only (at 16 it would take minutes).
        polls = (1.0, 0.01) if args.concurrency >= 64 else (0.01,)
        if args.workload == "w1":
            for poll in polls:
                await w1(args, poll)
        elif args.workload == "w2":
            for k, poll in enumerate(reversed(polls)):
                await w2(args, poll, report_enqueue=k == 0)
        else:
            await w3(args)
    finally:
        DBOS.destroy(workflow_completion_timeout_sec=0)
        conn = await asyncpg.connect(args.dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
        finally:
            await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
