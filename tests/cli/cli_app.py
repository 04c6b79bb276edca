"""Workflows the command-line tests act on; `cli_app:engine` is what `--app` loads."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import msgspec

import gendurable as gd


class Approved(msgspec.Struct):
    """The typed payload of `approved`."""

    by: str


@gd.workflow(name="cli.expense", queue="expenses")
class Expense:
    """submit -> decide (awaits approved / rejected for two days)."""

    class State(msgspec.Struct):
        amount: int = 0

    @gd.step(start=True)
    async def submit(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.decide)

    @gd.step
    @gd.await_signals(approved=Approved, rejected=None, timeout=timedelta(days=2))
    async def decide(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done({"decision": ctx.awaited[0].name if ctx.awaited else None})


@gd.workflow(name="cli.flaky", max_attempts=1)
class Flaky:
    """Fails its first step until `state.fixed` (set with SQL by a test)."""

    class State(msgspec.Struct):
        fixed: bool = False

    @gd.step(start=True)
    async def work(self, state: State, ctx: gd.Context) -> gd.Outcome:
        if not state.fixed:
            raise RuntimeError("the bank is down")
        return gd.done("paid")


@gd.workflow(name="cli.metered", queue="metered", priority=3, max_attempts=2, version=2)
class Metered:
    """Starts at a step that takes 2 tokens of an inline rate limit (for `start`)."""

    class State(msgspec.Struct):
        region: str
        units: int = 1

    @gd.step(start=True, rate_limit=gd.Limit(10, per=timedelta(seconds=1)), weight=2)
    async def call(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done()

    @gd.upgrade(from_version=1)
    def add_units(self, state: Any) -> Any:
        return {**state, "units": 1}


def _region(state: Any) -> str:
    return str(state.region)


@gd.workflow(name="cli.regional")
class Regional:
    """Starts at a step whose rate limit is partitioned by a function of the state."""

    class State(msgspec.Struct):
        region: str

    @gd.step(start=True, rate_limit=gd.Limit(10, per=timedelta(seconds=1)), partition=_region)
    async def call(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


WORKFLOWS: list[Any] = [Expense, Flaky]
"""What `engine` serves (`Metered` and `Regional` are started by the `start` tests' own
engines)."""

engine = gd.Engine("postgresql://unused@localhost/unused", workflows=WORKFLOWS)
"""Only loaded by `--app` (never started): its workflows' code checks signals."""

unreachable = gd.Engine(
    "postgresql://alice:s3cret-Pa55word@127.0.0.1:1/app", workflows=WORKFLOWS, queues={"x": 1}
)
"""`gendurable worker cli_app:unreachable` cannot connect: nothing listens on port 1."""


def served() -> gd.Engine:
    """The engine `gendurable worker cli_app:served` runs: `$GENDURABLE_DSN`, `$CLI_SCHEMA`."""
    return gd.Engine(
        workflows=WORKFLOWS,
        schema=os.environ["CLI_SCHEMA"],
        queues={"expenses": 2, "default": 1},
        name="cli-worker",
    )
