"""A small pool under many slow steps, and a pool exhausted by statements blocked on locks.

A running step holds no connection: the pool serves only statements (claims, commits,
heartbeats, the client calls of steps). So slow steps, however many, leave the pool to the
other queues; and statements that wait on a lock hold their connection only up to the
statement timeout, after which the waiting callers get it in turn.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
from fault_support import Engines, Rows, eventually, holding

import gendurable as gd
from gendurable.testing import TelemetryRecorder
from recordings import Gate, recorded

SLOW = 24
POOL = 4
HELD: list[str] = recorded([])
GATE = Gate()
FAST_RUNS: list[str] = recorded([])


@gd.workflow(name="pool.slow", queue="slow")
class Slow:
    """Signals a peer through the engine's pool, then runs until the gate opens."""

    @gd.step(start=True)
    async def work(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        assert ctx.key is not None
        await Fast.signal("peer", "ping", ctx.key, engine=ctx.engine)
        HELD.append(ctx.key)
        await GATE.wait()
        return gd.goto(self.wait)

    @gd.step
    @gd.await_signals("go")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done(ctx.key)


@gd.workflow(name="pool.fast", queue="fast")
class Fast:
    @gd.step(start=True)
    async def work(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        assert ctx.key is not None
        FAST_RUNS.append(ctx.key)
        return gd.goto(self.listen)

    @gd.step
    @gd.await_signals("ping", "stop")
    async def listen(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        if any(s.name == "stop" for s in ctx.awaited):
            return gd.done(len(ctx.awaited))
        return gd.reawait()


def options() -> dict[str, Any]:
    return {
        "queues": {"slow": SLOW, "fast": 2},
        "pool_size": POOL,
        "lease": timedelta(seconds=3),
        "reap_interval": timedelta(seconds=0.5),
    }


async def test_fault_pool_many_slow_steps_leave_the_pool_to_other_queues_and_clients(
    engines: Engines, gendurable_schema: str, db: asyncpg.Connection
) -> None:
    worker = await engines(workflows=[Slow, Fast], start=False, **options())
    events = TelemetryRecorder().attach(worker)
    await worker.start()
    client = await engines(workflows=[Slow, Fast])
    await Fast.start(key="peer", engine=client)
    await Slow.start_many([Slow.new(key=f"s{i}") for i in range(SLOW)], engine=client)

    async def all_running() -> bool:
        return len(HELD) == SLOW

    await eventually(all_running, what=f"{SLOW} slow steps running on a pool of {POOL}")
    # Slow steps run well past their 3 s lease: the heartbeat keeps every claim (no rescue),
    # while the fast queue goes on and a client's calls answer.
    for i in range(3):
        await Fast.start(key=f"f{i}", engine=client)
        await Fast.signal(f"f{i}", "stop", engine=client)
        assert await Fast.result(f"f{i}", timeout=10, engine=client) == 1
    await Fast.signal("peer", "stop", engine=client)
    assert await Fast.result("peer", timeout=10, engine=client) == SLOW + 1
    await events.wait(("step", "start"), count=SLOW + 2 * 4, timeout=15)
    assert await Rows(db, gendurable_schema).count("status = 'executing'") == SLOW
    assert events.of(("reaper", "rescued")) == []

    GATE.set()
    for i in range(SLOW):
        await Slow.signal(f"s{i}", "go", engine=client)
    assert [await Slow.result(f"s{i}", timeout=15, engine=client) for i in range(SLOW)] == [
        f"s{i}" for i in range(SLOW)
    ]
    assert await Rows(db, gendurable_schema).count("rescued > 0 OR attempt > 0") == 0


async def test_fault_rows_locked_by_someone_else_hold_no_connection_and_delay_only_themselves(
    engines: Engines,
    gendurable_dsn: str,
    gendurable_schema: str,
    db: asyncpg.Connection,
) -> None:
    # More parks than the pool has connections meet rows another transaction holds. A group
    # commit skips locked rows and sends their outcomes again: no connection waits on the
    # lock, so the fast queue's claims, heartbeats and commits go on at full speed, and the
    # parks commit once the lock is gone. The lease outlasts the lock (a row locked by
    # someone else past its lease cannot be extended, and once free the reaper may hand it
    # out again: at least once).
    blocked = 2 * POOL
    worker = await engines(
        workflows=[Slow, Fast],
        start=False,
        **{
            **options(),
            "statement_timeout": timedelta(seconds=0.5),
            "lease": timedelta(seconds=30),
        },
    )
    events = TelemetryRecorder().attach(worker)
    await worker.start()
    client = await engines(workflows=[Slow, Fast])
    await Fast.start(key="peer", engine=client)
    await Slow.start_many([Slow.new(key=f"s{i}") for i in range(blocked)], engine=client)

    async def all_running() -> bool:
        return len(HELD) == blocked

    await eventually(all_running, what="the slow steps running")
    slow_rows = (
        f"SELECT id FROM \"{gendurable_schema}\".instances WHERE queue = 'slow' "
        "ORDER BY id FOR UPDATE"
    )
    async with holding(gendurable_dsn, slow_rows):
        GATE.set()  # the parks, more than the pool has connections, meet the row locks
        for i in range(2):
            await Fast.start(key=f"f{i}", engine=client)
            await Fast.signal(f"f{i}", "stop", engine=client)
            assert await Fast.result(f"f{i}", timeout=30, engine=client) == 1
        held = await db.fetchval(
            f'SELECT count(*) FROM "{gendurable_schema}".instances '
            "WHERE queue = 'slow' AND status = 'executing'"
        )
        assert held == blocked  # their parks wait for the lock, outside the pool
    for i in range(blocked):
        await Slow.signal(f"s{i}", "go", engine=client)
    assert [await Slow.result(f"s{i}", timeout=30, engine=client) for i in range(blocked)] == [
        f"s{i}" for i in range(blocked)
    ]
    assert events.of(("reaper", "rescued")) == []
    assert await Rows(db, gendurable_schema).count("rescued > 0 OR attempt > 0") == 0
