"""PgQueuer on w2: 10,000 jobs enqueued in one batch, then processed (defaults otherwise).

Its tables get a prefix of their own (PGQUEUER_PREFIX), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import timedelta

from common import CpuWindow, arguments, emit

PREFIX = f"bench_{uuid.uuid4().hex[:6]}_"
os.environ["PGQUEUER_PREFIX"] = PREFIX

import asyncpg  # noqa: E402
import pgqueuer  # noqa: E402
from pgqueuer import Job, Queries, QueueManager  # noqa: E402
from pgqueuer.types import QueueExecutionMode  # noqa: E402


async def w2(dsn: str, jobs: int, concurrency: int | None, postmaster: int | None) -> None:
    conn = await asyncpg.connect(dsn)
    queries = Queries.from_asyncpg_connection(conn)
    await queries.install()
    try:
        enqueue = CpuWindow(postmaster).start()
        await queries.enqueue(["job"] * jobs, [b'{"n": %d}' % i for i in range(jobs)], [0] * jobs)
        enqueue.stop()
        if concurrency is None:
            emit(
                bench="w2",
                system=f"pgqueuer {pgqueuer.__version__}",
                variant="bulk enqueue (one batch)",
                jobs=jobs,
                seconds=round(enqueue.wall_s, 3),
                rate=round(jobs / enqueue.wall_s),
                unit="jobs/s",
                client_cpu_ms_per_step=enqueue.per(jobs)["client_cpu_ms_per"],
                server_cpu_ms_per_step=enqueue.per(jobs)["server_cpu_ms_per"],
            )
        worker_conn = await asyncpg.connect(dsn)
        qm = QueueManager(Queries.from_asyncpg_connection(worker_conn))
        done = 0

        @qm.entrypoint("job")
        async def job(job: Job) -> None:
            nonlocal done
            done += 1

        cpu = CpuWindow(postmaster).start()
        await qm.run(
            mode=QueueExecutionMode.drain,
            max_concurrent_tasks=concurrency or None,
            dequeue_timeout=timedelta(seconds=1),
        )
        cpu.stop()
        await worker_conn.close()
        if done != jobs:
            raise RuntimeError(f"expected {jobs} jobs done, ran {done}")
        emit(
            bench="w2",
            system=f"pgqueuer {pgqueuer.__version__}",
            variant=(
                f"processing, max_concurrent_tasks {concurrency}"
                if concurrency
                else "processing, defaults (batch_size 10, no max_concurrent_tasks)"
            ),
            jobs=jobs,
            seconds=round(cpu.wall_s, 3),
            rate=round(jobs / cpu.wall_s),
            unit="jobs/s",
            client_cpu_ms_per_step=cpu.per(jobs)["client_cpu_ms_per"],
            server_cpu_ms_per_step=cpu.per(jobs)["server_cpu_ms_per"],
        )
    finally:
        await queries.uninstall()
        await conn.close()


def main() -> None:
    args = arguments(("w2",))
    # Its defaults first (what a new user gets), then capped like gendurable's queue.
    for concurrency in (None, args.concurrency):
        asyncio.run(w2(args.dsn, args.jobs, concurrency, args.postmaster))


if __name__ == "__main__":
    main()
