"""Workflows the rewind tests restart at other steps; `cli_rewind_app:engine` is their `--app`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec

import gendurable as gd


@gd.workflow(name="cli.ledger", max_attempts=1, version=2)
class Ledger:
    """reserve -> charge (fails until `state.fixed`) -> confirm (its own attempts and a
    weighted rate limit, so that a move into it writes more than its name)."""

    class State(msgspec.Struct):
        amount: int = 0
        fixed: bool = False

    @gd.step(start=True)
    async def reserve(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.charge)

    @gd.step
    async def charge(self, state: State, ctx: gd.Context) -> gd.Outcome:
        if not state.fixed:
            raise RuntimeError("card declined")
        return gd.goto(self.confirm)

    @gd.step(max_attempts=4, rate_limit=gd.Limit(100, per=timedelta(seconds=1)), weight=2)
    async def confirm(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done(state.amount)

    @gd.upgrade(from_version=1)
    def add_fixed(self, state: Any) -> Any:
        return {**state, "fixed": False}


def _region(state: Any) -> str:
    return str(state.region)


@gd.workflow(name="cli.zoned", max_attempts=1)
class Zoned:
    """Fails at a step whose rate limit is partitioned by a function of the state."""

    class State(msgspec.Struct):
        region: str

    @gd.step(start=True, rate_limit=gd.Limit(10, per=timedelta(seconds=1)), partition=_region)
    async def call(self, state: State, ctx: gd.Context) -> gd.Outcome:
        raise RuntimeError("region down")


engine = gd.Engine("postgresql://unused@localhost/unused", workflows=[Ledger, Zoned])
"""Only loaded by `--app` (never started)."""
