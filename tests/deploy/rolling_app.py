"""The application of the rolling-deploy test, run by every engine of it: the previous
release's (in its own virtualenv), the new code's, and the test's client.

It uses only what gendurable 0.1.0 offers. Each step records who ran it (`ROLLING_ROLE`, the
gendurable version and where that gendurable was imported from), so the test can tell the
old code from the new. The engine is built from the environment: `GENDURABLE_DSN`,
`ROLLING_SCHEMA`, and `ROLLING_ROLE` (`old...` engines also run queue `old`, `new...` ones
queue `new`).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import msgspec

import gendurable as gd


def who() -> str:
    """Which engine runs this: role, gendurable version, and the gendurable it imported."""
    return f"{os.environ.get('ROLLING_ROLE', 'client')} {gd.__version__} {gd.__file__}"


@gd.job(name="rolling.leg")
async def leg(args: dict[str, Any], ctx: gd.Context) -> int:
    return int(args["n"]) * 2


@gd.workflow(name="rolling.trip")
class Trip:
    """Spawns its legs, sums what they return, then waits for a `confirm` signal."""

    class State(msgspec.Struct):
        legs: int
        total: int = 0
        ran: list[str] = []

    class Result(msgspec.Struct):
        total: int
        confirmed_by: str

    @gd.step(start=True)
    async def plan(self, state: State, ctx: gd.Context) -> gd.Outcome:
        state.ran.append(who())
        children = [leg.new({"n": i}, key=f"{ctx.key}/{i}") for i in range(state.legs)]
        return gd.spawn(children, then=self.booked)

    @gd.step
    async def booked(self, state: State, ctx: gd.Context) -> gd.Outcome:
        state.ran.append(who())
        state.total = sum(int(c.result) for c in ctx.children if c.status == "done")
        return gd.goto(self.confirm)

    @gd.step
    @gd.await_signals("confirm", timeout=timedelta(minutes=10))
    async def confirm(self, state: State, ctx: gd.Context) -> gd.Outcome:
        state.ran.append(who())
        if ctx.timed_out:
            return gd.stop("never confirmed")
        return gd.done(Trip.Result(total=state.total, confirmed_by=ctx.awaited[0].payload["by"]))


@gd.workflow(name="rolling.nap")
class Nap:
    """Waits for a signal nobody sends: its timer ends it."""

    class State(msgspec.Struct):
        pass

    @gd.step(start=True)
    async def begin(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.doze)

    @gd.step
    @gd.await_signals("never", timeout=timedelta(seconds=1))
    async def doze(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done("timed out" if ctx.timed_out else "woken")


@gd.job(name="rolling.old_probe", queue="old")
async def old_probe(args: Any, ctx: gd.Context) -> str:
    return who()


@gd.job(name="rolling.new_probe", queue="new")
async def new_probe(args: Any, ctx: gd.Context) -> str:
    return who()


WORKFLOWS = [leg, Trip, Nap, old_probe, new_probe]


def engine() -> gd.Engine:
    """The engine of this process's `ROLLING_ROLE`."""
    role = os.environ["ROLLING_ROLE"]
    own = "old" if role.startswith("old") else "new"
    return gd.Engine(
        os.environ["GENDURABLE_DSN"],
        workflows=WORKFLOWS,
        schema=os.environ["ROLLING_SCHEMA"],
        queues={"default": 4, own: 1},
        name=role,
        poll_interval=timedelta(milliseconds=200),
    )
