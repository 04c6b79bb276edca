"""A rate limit holds across worker processes: one bucket, whatever node claims."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from e2e_support import Marks, SpawnWorker, eventually
from limits_app import SHARED, Limited

from gendurable.testing import MakeEngine

pytestmark = pytest.mark.race

INSTANCES = 40
# A step starts a little after the claim that granted its token: the windows measured from
# the steps' side may be this much shorter than the grants' own.
START_DELAY = 0.15


async def test_two_worker_processes_never_grant_more_than_the_shared_bucket(
    make_engine: MakeEngine,
    spawn_worker: SpawnWorker,
    marks: Marks,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    client = await make_engine(workflows=[Limited], queues=None, rate_limits={"shared": SHARED})
    first = await spawn_worker(E2E_TARGET="limits_app:engine")
    second = await spawn_worker(E2E_TARGET="limits_app:engine")
    await Limited.start_many(
        [Limited.new(key=f"k{i:03d}") for i in range(INSTANCES)], engine=client
    )

    async def finished() -> bool:
        done = await db.fetchval(
            f"SELECT count(*) FROM \"{gendurable_schema}\".instances WHERE status = 'done'"
        )
        return bool(done == INSTANCES)

    await eventually(finished, timeout=60, what=f"{INSTANCES} limited instances done")

    grants = _grants(marks.folder / "grants.log")
    assert len(grants) == INSTANCES
    assert {pid for _, pid in grants} == {first.pid, second.pid}  # both nodes took tokens
    rate = SHARED.allowed / SHARED.per.total_seconds()
    times = sorted(t for t, _ in grants)
    for i in range(len(times)):
        for j in range(i, len(times)):
            allowed = SHARED.capacity + rate * (times[j] - times[i] + START_DELAY)
            assert j - i + 1 <= allowed, (
                f"{j - i + 1} steps started within {times[j] - times[i]:.3f}s; the bucket "
                f"allows {allowed:.1f}"
            )
    # One shared bucket, not one per node: the whole run took as long as the rate says.
    assert times[-1] - times[0] >= (INSTANCES - SHARED.capacity) / rate - START_DELAY


def _grants(path: Path) -> list[tuple[float, int]]:
    out = []
    for line in path.read_text().splitlines():
        t, pid, _key = line.split()
        out.append((float(t), int(pid)))
    return out
