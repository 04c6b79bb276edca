"""A step's own `max_attempts` is the limit its row carries, wherever the row goes.

The row's `max_attempts` column is what the reaper counts crashed attempts against and what
`show` and the dashboard display: every move to a step (a start, a goto, a park, a spawn)
writes that step's limit, its own `@gd.step(max_attempts=)` else the workflow's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from gendurable.testing import MakeEngine

BACKOFF = gd.Backoff(base=timedelta(seconds=1), jitter=0)
LEASE = timedelta(minutes=5)


@gd.workflow(name="attempts.order", backoff=BACKOFF)  # the workflow allows 5
class Order:
    @gd.step(start=True)
    async def take(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.charge)

    @gd.step(max_attempts=2)
    async def charge(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        raise RuntimeError("card declined")


@gd.workflow(name="attempts.approval", backoff=BACKOFF)
class Approval:
    @gd.step(start=True, max_attempts=3)
    async def submit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.wait_ok)

    @gd.step(max_attempts=2)
    @gd.await_signals("ok")
    async def wait_ok(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.stop("refused")


@gd.job(queue="lines", max_attempts=4)
async def line(args: Any, ctx: gd.Context) -> Any:
    return args


@gd.workflow(name="attempts.fanout", backoff=BACKOFF)
class Fanout:
    @gd.step(start=True, max_attempts=1)
    async def split(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.spawn([line.new({"n": 1})], then=self.join)

    @gd.step(max_attempts=3)
    async def join(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.settle)

    @gd.step
    async def settle(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done(len(ctx.children))


async def limits(db: asyncpg.Connection, schema: str, id: int) -> tuple[str, int, int, str]:
    row = await db.fetchrow(
        f'SELECT step, attempt, max_attempts, status::text FROM "{schema}".instances WHERE id = $1',
        id,
    )
    assert row is not None
    return row["step"], row["attempt"], row["max_attempts"], row["status"]


async def test_step_attempts_a_goto_writes_the_target_steps_own_limit(
    make_engine: MakeEngine, manual_clock: gd.ManualClock, db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:  # fmt: skip
    engine = await make_engine(workflows=[Order])
    handle = await Order.start(key="o-1")
    assert await limits(db, gendurable_schema, handle.id) == ("take", 0, 5, "available")

    await engine.drain()
    assert await limits(db, gendurable_schema, handle.id) == ("charge", 1, 2, "available")
    manual_clock.advance(timedelta(seconds=2))
    await engine.drain()

    assert await limits(db, gendurable_schema, handle.id) == ("charge", 1, 2, "failed")
    info = await Order.get(handle.id)
    assert info.error is not None
    assert (info.error["step"], info.error["attempt"], info.error["max_attempts"]) == (
        "charge",
        1,
        2,
    )


async def test_step_attempts_a_start_and_a_park_write_their_steps_limit_and_stop_names_it(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Approval])
    handle = await Approval.start(key="a-1")
    assert await limits(db, gendurable_schema, handle.id) == ("submit", 0, 3, "available")

    await engine.drain()
    assert await limits(db, gendurable_schema, handle.id) == ("wait_ok", 0, 2, "awaiting")
    await Approval.signal("a-1", "ok")
    await engine.drain()

    assert await limits(db, gendurable_schema, handle.id) == ("wait_ok", 0, 2, "failed")
    info = await Approval.get(handle.id)
    assert info.error == {
        "type": "stop",
        "message": "refused",
        "step": "wait_ok",
        "attempt": 0,
        "max_attempts": 2,
    }


async def test_step_attempts_a_spawn_writes_the_limit_of_its_then_step(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Fanout, line], queues={"default": 1, "lines": 1})
    handle = await Fanout.start(key="f-1")
    assert await limits(db, gendurable_schema, handle.id) == ("split", 0, 1, "available")

    await engine.drain()

    assert await limits(db, gendurable_schema, handle.id) == ("settle", 0, 5, "done")
    child = await db.fetchval(
        f'SELECT max_attempts FROM "{gendurable_schema}".instances WHERE parent_id = $1',
        handle.id,
    )
    assert child == 4  # the job's own limit


async def test_step_attempts_the_spawning_parent_waits_with_its_then_steps_limit(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    # The `lines` queue is not run here: the child stays available, the parent waits at
    # `join`.
    engine = await make_engine(workflows=[Fanout, line], queues={"default": 1})
    handle = await Fanout.start(key="f-2")
    await engine.drain()

    assert await limits(db, gendurable_schema, handle.id) == ("join", 0, 3, "waiting")


async def fake_claim(engine: gd.Engine, locked_by: str, workflow: Any) -> list[int]:
    """Claim due rows as a worker that will never commit (it crashed)."""
    spec = workflow.spec
    rows = await engine.store.instance_claim(
        queue=spec.queue,
        limit=10,
        locked_by=locked_by,
        leases=[LEASE] * len(spec.steps),
        now=engine.clock.now(),
        workflows=[spec.name] * len(spec.steps),
        steps=list(spec.steps),
    )
    return sorted(r.id for r in rows)


async def test_step_attempts_the_reaper_fails_after_the_steps_own_limit_of_crashes(
    make_engine: MakeEngine, manual_clock: gd.ManualClock, db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:  # fmt: skip
    engine = await make_engine(workflows=[Approval], queues=None)
    handle = await Approval.start(key="a-2")  # `submit` allows 3 attempts, the workflow 5
    assert engine.reaper is not None

    statuses = []
    for crash in range(3):
        assert await fake_claim(engine, f"w:default@host-{crash}-dead", Approval) == [handle.id]
        manual_clock.advance(LEASE + timedelta(seconds=1))
        await engine.reaper.run_once()
        statuses.append((await limits(db, gendurable_schema, handle.id))[3])

    assert statuses == ["available", "available", "failed"]
    info = await Approval.get(handle.id)
    assert info.error is not None
    assert info.error["type"] == "crashed"
    assert "every one of 3 attempts" in info.error["message"]
    assert (info.error["attempt"], info.error["max_attempts"]) == (2, 3)


def test_step_attempts_the_spec_says_each_steps_limit() -> None:
    assert [Order.spec.max_attempts(s) for s in ("take", "charge")] == [5, 2]
    assert [Approval.spec.max_attempts(s) for s in ("submit", "wait_ok")] == [3, 2]
    with pytest.raises(KeyError):
        Order.spec.max_attempts("nowhere")
