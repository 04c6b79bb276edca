"""The workflows of the upgrade fixture: what `make_fixture.py` runs with 0.1.0 to leave
instances in every status, and what the upgrade test's current engine finishes.

The fixture's rows name these workflows and steps: keep them as they are (a change here is
a deploy the fixture did not see; regenerate the fixture with `make_fixture.py` if one is
ever needed). It uses only what gendurable 0.1.0 offers.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from typing import Any

import msgspec

import gendurable as gd

BROKEN = False
"""The bug of the fixture's deploy: `make_fixture.py` sets it, so `upgrade.fragile` fails."""

HANG: asyncio.Event | None = None
"""Set by `make_fixture.py`: `upgrade.slow` waits on it, so its claim dies with the process."""


@gd.workflow(name="upgrade.approval")
class Approval:
    """Waits a day for `approve`; a timeout approves by default."""

    class State(msgspec.Struct):
        item: str

    class Result(msgspec.Struct):
        item: str
        approved_by: str

    @gd.step(start=True)
    async def receive(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.approve)

    @gd.step
    @gd.await_signals("approve", timeout=timedelta(days=1))
    async def approve(self, state: State, ctx: gd.Context) -> gd.Outcome:
        by = "nobody" if ctx.timed_out else str(ctx.awaited[0].payload["by"])
        return gd.done(Approval.Result(item=state.item, approved_by=by))


@gd.workflow(name="upgrade.part")
class Part:
    """A child that waits for `go`."""

    class State(msgspec.Struct):
        n: int

    @gd.step(start=True)
    @gd.await_signals("go", timeout=timedelta(days=30))
    async def wait(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done(state.n * 10)


@gd.workflow(name="upgrade.batch")
class Batch:
    """Spawns two parts and adds up what they return."""

    class State(msgspec.Struct):
        parts: int

    @gd.step(start=True)
    async def split(self, state: State, ctx: gd.Context) -> gd.Outcome:
        children = [Part.new(key=f"{ctx.key}/{n}", state=Part.State(n=n)) for n in range(2)]
        return gd.spawn(children, then=self.join)

    @gd.step
    async def join(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done(sum(int(c.result) for c in ctx.children))


@gd.workflow(name="upgrade.limited")
class Limited:
    """One call an hour, whoever starts it."""

    class State(msgspec.Struct):
        n: int

    @gd.step(start=True, rate_limit=gd.Limit(1, per=timedelta(hours=1)))
    async def call(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done(f"called {state.n}")


@gd.workflow(name="upgrade.fragile", max_attempts=1)
class Fragile:
    """Fails while `BROKEN`: 0.1.0 had the bug, the deploy fixes it."""

    class State(msgspec.Struct):
        n: int

    @gd.step(start=True)
    async def work(self, state: State, ctx: gd.Context) -> gd.Outcome:
        if BROKEN:
            raise RuntimeError("the bug of the old deploy")
        return gd.done(state.n + 1)


@gd.job(name="upgrade.simple")
async def simple(args: dict[str, Any], ctx: gd.Context) -> int:
    return int(args["n"]) * 3


@gd.job(name="upgrade.slow", lease=timedelta(minutes=5))
async def slow(args: Any, ctx: gd.Context) -> str:
    if HANG is not None:
        await HANG.wait()
    return "finished after its claim expired"


WORKFLOWS = [Approval, Part, Batch, Limited, Fragile, simple, slow]


def engine() -> gd.Engine:
    """The engine `gendurable check upgrade_flows:engine` checks (`UPGRADE_SCHEMA`)."""
    return gd.Engine(
        os.environ.get("GENDURABLE_DSN"),
        workflows=WORKFLOWS,
        schema=os.environ["UPGRADE_SCHEMA"],
        queues={"default": 4},
    )
