"""The workflows the benchmarks run: the same shapes the peers' adapters run."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

import gendurable as gd

QUEUE = "bench"


@gd.workflow(name="bench.three_steps", queue=QUEUE)
class ThreeSteps:
    """w1: a -> b -> c -> done, each step a no-op on a small typed state."""

    class State(msgspec.Struct):
        n: int = 0

    @gd.step(start=True)
    async def a(self, state: State, ctx: gd.Context) -> gd.Outcome:
        state.n += 1
        return gd.goto(self.b)

    @gd.step
    async def b(self, state: State, ctx: gd.Context) -> gd.Outcome:
        state.n += 1
        return gd.goto(self.c)

    @gd.step
    async def c(self, state: State, ctx: gd.Context) -> gd.Outcome:
        state.n += 1
        return gd.done(state.n)


@gd.job(name="bench.job", queue=QUEUE)
async def bench_job(args: Any, ctx: gd.Context) -> None:
    """w2: a job that does nothing with its small JSON args."""


WOKEN_AT: dict[str, float] = {}
"""w3: when each instance's step after the signal began (so the woken step had committed)."""

WAITERS: dict[str, asyncio.Future[None]] = {}
"""w3: futures the benchmark waits on, resolved when that instance's `after` step begins."""


@gd.workflow(name="bench.await_then_next", queue=QUEUE)
class AwaitThenNext:
    """w3: park until "go", then move on; `after` starts once the woken step has committed."""

    @gd.step(start=True)
    @gd.await_signals("go")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.after)

    @gd.step
    async def after(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        assert ctx.key is not None
        WOKEN_AT[ctx.key] = time.perf_counter()
        waiter = WAITERS.pop(ctx.key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return gd.done()


@gd.workflow(name="bench.idle", queue="idle-0")
class Idle:
    """idle: a workflow for the engine to serve; never started."""

    @gd.step(start=True)
    async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()
