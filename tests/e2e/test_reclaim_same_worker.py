"""A worker that lost a claim and then claimed the same instance again (guarantee 2).

Found by the chaos run: a worker process stopped past its lease resumed its step while its
own scheduler had already claimed the rescued instance again. When `locked_by` named the
scheduler rather than the claim, the old execution's late commit passed the ownership
check (same `locked_by`, status `executing`) and overwrote the claim that now owned the
row; the owner's commit was then dropped as stale. Each claim now has an identity of its
own, so the late commit is the stale one.

Deterministic: one engine with two slots; the step waits at a gate per attempt; the manual
clock moves past the lease, a second engine's reaper rescues the instance, and the first
engine claims it again while its first execution still waits.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import msgspec
from e2e_support import row

import gendurable as gd
from gendurable.testing import MakeEngine, RecorderFactory
from recordings import Gate

LEASE = timedelta(minutes=10)
ENTERED = {attempt: Gate() for attempt in (0, 1)}
GATES = {attempt: Gate() for attempt in (0, 1)}


@gd.workflow(name="e2e.reclaim.twice")
class Twice:
    class State(msgspec.Struct):
        trail: list[str] = msgspec.field(default_factory=list)

    @gd.step(start=True)
    async def first(self, state: State, ctx: gd.Context) -> gd.Outcome:
        state.trail.append(f"first#{ctx.attempt}")
        ENTERED[ctx.attempt].set()
        await GATES[ctx.attempt].wait()
        return gd.goto(self.second)

    @gd.step
    async def second(self, state: State, ctx: gd.Context) -> gd.Outcome:
        state.trail.append("second")
        return gd.done(state.trail)


async def test_reclaim_late_commit_of_a_lost_claim_is_stale_when_the_same_worker_reclaimed(
    make_engine: MakeEngine,
    recorder: RecorderFactory,
    manual_clock: gd.ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    worker = await make_engine(
        workflows=[Twice], queues={"default": 2}, clock=manual_clock, lease=LEASE
    )
    events = recorder(worker)
    handle = await Twice.start(key="twice", engine=worker)
    async with asyncio.timeout(10):
        await ENTERED[0].wait()
    lost = (await row(db, gendurable_schema, handle.id))["locked_by"]

    # The lease runs out (the worker was stopped, say); another engine's reaper rescues.
    manual_clock.advance(LEASE + timedelta(seconds=1))
    rescuer = await make_engine(
        workflows=[Twice], queues={"elsewhere": 1}, clock=manual_clock, lease=LEASE
    )
    await rescuer.drain()
    # The same worker claims the instance again (the rescue was announced) and runs it.
    async with asyncio.timeout(10):
        await ENTERED[1].wait()
    owner = (await row(db, gendurable_schema, handle.id))["locked_by"]
    assert owner != lost  # one identity per claim, not per scheduler

    GATES[0].set()  # the first execution ends: its claim was lost
    [stale] = await events.wait(("outcome", "stale"), id=handle.id)
    assert (stale["locked_by"], stale["step"]) == (lost, "first")
    taken = await row(db, gendurable_schema, handle.id)
    assert (taken["status"], taken["step"], taken["locked_by"]) == ("executing", "first", owner)

    GATES[1].set()
    assert await Twice.result(handle.id, timeout=10, engine=worker) == ["first#1", "second"]
    assert len(events.of(("outcome", "stale"))) == 1
    final = await row(db, gendurable_schema, handle.id)
    assert (final["status"], final["rescued"], final["locked_by"]) == ("done", 1, None)
