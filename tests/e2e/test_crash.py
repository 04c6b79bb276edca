"""A worker process SIGKILLed mid-step: another engine finishes the instance after the lease.

Guarantee 1 (at-least-once, whole-step re-execution): the killed step runs again from the
last committed state, and the instance commits exactly once.
"""

from __future__ import annotations

import os
import signal
from datetime import timedelta

import asyncpg
import pytest
from e2e_app import QUEUE, Chore
from e2e_support import Marks, SpawnWorker, eventually, row

from gendurable.testing import MakeEngine, RecorderFactory

pytestmark = pytest.mark.crash

LEASE = 1.5


async def test_crash_sigkilled_worker_step_reruns_and_commits_once(
    make_engine: MakeEngine,
    spawn_worker: SpawnWorker,
    recorder: RecorderFactory,
    marks: Marks,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    worker = await spawn_worker(E2E_HANG="1", E2E_LEASE=str(LEASE), E2E_REAP_INTERVAL="0.2")
    client = await make_engine(workflows=[Chore], queues=None)
    handle = await Chore.start(key="crash-1", engine=client)

    # The worker claims the instance and enters `work`, which hangs there.
    await marks.wait("crash-1", "work")
    assert marks.runs("crash-1", "work") == [(0, worker.pid)]
    claimed = await row(db, gendurable_schema, handle.id)
    assert claimed["status"] == "executing"
    assert f"-{worker.pid}-" in claimed["locked_by"]

    worker.send(signal.SIGKILL)
    assert await worker.wait_exit(timeout=10) == -signal.SIGKILL

    # A second engine (this process) rescues the expired claim and finishes the instance.
    rescuer = await make_engine(
        workflows=[Chore],
        queues={QUEUE: 2},
        lease=timedelta(seconds=10),
        reap_interval=timedelta(seconds=0.1),
        start=False,
    )
    events = recorder(rescuer)
    await rescuer.start()
    result = await Chore.result("crash-1", timeout=30, engine=rescuer)

    assert result == {"worked": 1, "finished": 1, "pid": os.getpid()}
    runs = marks.runs("crash-1", "work")
    assert len(runs) >= 2, runs
    assert runs[0] == (0, worker.pid)
    assert runs[-1] == (1, os.getpid())  # the rescue counted the crashed attempt
    assert marks.runs("crash-1", "finish") == [(0, os.getpid())]
    rescued = events.of(("reaper", "rescued"), id=handle.id)
    assert [r["status"] for r in rescued] == ["available"]
    assert events.of(("outcome", "stale")) == []
    final = await row(db, gendurable_schema, handle.id)
    assert final["status"] == "done"
    assert final["rescued"] == 1
    assert final["locked_by"] is None
    assert final["finished_at"] is not None


async def test_crash_sigkilled_worker_other_worker_process_finishes(
    make_engine: MakeEngine,
    spawn_worker: SpawnWorker,
    marks: Marks,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    first = await spawn_worker(E2E_HANG="1", E2E_LEASE=str(LEASE), E2E_REAP_INTERVAL="0.2")
    client = await make_engine(workflows=[Chore], queues=None)
    handles = [await Chore.start(key=f"crash-{i}", engine=client) for i in range(2)]
    for handle in handles:
        await marks.wait(str(handle.key), "work")

    first.send(signal.SIGKILL)
    assert await first.wait_exit(timeout=10) == -signal.SIGKILL
    # The second worker does not hang: its reaper returns both claims and it runs them.
    second = await spawn_worker(E2E_LEASE=str(LEASE), E2E_REAP_INTERVAL="0.2")

    results = [await Chore.result(h.id, timeout=30, engine=client) for h in handles]

    assert results == [{"worked": 1, "finished": 1, "pid": second.pid}] * 2
    for handle in handles:
        key = str(handle.key)
        assert marks.runs(key, "work") == [(0, first.pid), (1, second.pid)]
        assert marks.runs(key, "finish") == [(0, second.pid)]
        final = await row(db, gendurable_schema, handle.id)
        assert (final["status"], final["rescued"]) == ("done", 1)

    second.send(signal.SIGTERM)
    assert await second.wait_exit(timeout=15) == 0

    async def nothing_claimed() -> bool:
        held = await db.fetchval(
            f'SELECT count(*) FROM "{gendurable_schema}".instances WHERE locked_by IS NOT NULL'
        )
        return held == 0

    await eventually(nothing_claimed, what="no claim left behind")
