"""A lock held on one running instance (an operator's `SELECT ... FOR UPDATE`, a long
transaction of the application) for longer than the lease.

The heartbeat extends the claims it can and skips the locked row until it is free: the
other steps of the same scheduler keep their claims and run once. The locked row itself
cannot be extended while locked; past its lease, once free, the reaper may hand it out again
(it runs again: at least once).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
from fault_support import Engines, Rows, eventually, holding

import gendurable as gd
from gendurable.testing import TelemetryRecorder
from recordings import Gate, recorded

LEASE = timedelta(seconds=1.5)
RUNS: list[str] = recorded([])
HELD: list[str] = recorded([])
GATE = Gate()


@gd.workflow(name="rowlocks.long")
class Long:
    @gd.step(start=True)
    async def work(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        assert ctx.key is not None
        RUNS.append(ctx.key)
        HELD.append(ctx.key)
        await GATE.wait()
        return gd.done(ctx.key)


async def test_fault_row_lock_on_one_running_row_does_not_stop_the_heartbeat_of_the_others(
    engines: Engines, gendurable_dsn: str, gendurable_schema: str, db: asyncpg.Connection
) -> None:
    worker = await engines(
        workflows=[Long],
        queues={"default": 4},
        lease=LEASE,
        reap_interval=timedelta(seconds=0.2),
        start=False,
    )
    events = TelemetryRecorder().attach(worker)
    await worker.start()
    handles = await Long.start_many([Long.new(key=k) for k in "abc"], engine=worker)

    async def running() -> bool:
        return len(HELD) == 3

    await eventually(running, what="three steps running")
    lock = f'SELECT id FROM "{gendurable_schema}".instances WHERE id = $1 FOR UPDATE'
    async with holding(gendurable_dsn, lock, args=(handles[0].id,)):
        # Three leases long: the heartbeat of `b` and `c` must not wait for `a`'s lock.
        for _ in range(3):
            before = await db.fetchval(
                f'SELECT max(locked_until) FROM "{gendurable_schema}".instances '
                "WHERE key IN ('b', 'c')"
            )

            async def extended(before: Any = before) -> bool:
                after = await db.fetchval(
                    f'SELECT min(locked_until) FROM "{gendurable_schema}".instances '
                    "WHERE key IN ('b', 'c')"
                )
                return after is not None and after > before

            await eventually(extended, timeout=10, what="the heartbeat extending b and c")
    assert events.of(("reaper", "rescued")) == []

    GATE.set()
    assert [await Long.result(k, timeout=10, engine=worker) for k in "abc"] == ["a", "b", "c"]
    assert sorted(RUNS).count("b") == sorted(RUNS).count("c") == 1
    found = {r["key"]: r for r in await Rows(db, gendurable_schema).all()}
    assert [(found[k]["attempt"], found[k]["rescued"]) for k in "bc"] == [(0, 0), (0, 0)]
