"""Two versions of the same workflows: the code running now (v1) and the code to deploy (v2).

v2 removes the step `legacy`, stops declaring the signal `rejected`, makes `amount` an int
only and adds a required `currency`, and no longer serves `report`. v3 makes the same State
change, but as state version 3 with upgrades that carry version-1 rows there (`ExpenseV3`),
or without the first upgrade (`ExpenseV3From2`), or with a first upgrade that breaks on a
string amount (`ExpenseV3Buggy`). `engine_v1`, `engine_v2`, `engine_v3`... are what
`gendurable check deploy_flows:engine_v2` loads; they read their schema from `$CHECK_SCHEMA`.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import msgspec

import gendurable as gd

DAYS = timedelta(days=2)


@gd.workflow(name="expense")
class ExpenseV1:
    class State(msgspec.Struct):
        amount: int | str
        note: str = ""

    @gd.step(start=True)
    async def submit(self, state: State, ctx: gd.Context) -> gd.Outcome:
        if isinstance(state.amount, int) and state.amount > 1000:
            return gd.goto(self.legacy)
        return gd.goto(self.decide)

    @gd.step
    @gd.await_signals("approved", "rejected", timeout=DAYS)
    async def decide(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done()

    @gd.step
    @gd.await_signals("manual", timeout=DAYS)
    async def legacy(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


@gd.workflow(name="expense")
class ExpenseV2:
    class State(msgspec.Struct):
        amount: int
        currency: str
        note: str = ""

    @gd.step(start=True)
    async def submit(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.decide)

    @gd.step
    @gd.await_signals("approved", timeout=DAYS)
    async def decide(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


def expense_v3(**upgrades: Any) -> Any:
    """Version 3 of the expense with the given `@gd.upgrade` methods: v1's steps, v2's State."""

    class ExpenseV3:
        class State(msgspec.Struct):
            amount: int
            currency: str
            note: str = ""

        @gd.step(start=True)
        async def submit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.goto(self.legacy if state.amount > 1000 else self.decide)

        @gd.step
        @gd.await_signals("approved", "rejected", timeout=DAYS)
        async def decide(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

        @gd.step
        @gd.await_signals("manual", timeout=DAYS)
        async def legacy(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

    for name, fn in upgrades.items():
        setattr(ExpenseV3, name, fn)
    return gd.workflow(name="expense", version=3)(ExpenseV3)


@gd.upgrade(from_version=1)
def add_currency(self: Any, state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "currency": "EUR"}


@gd.upgrade(from_version=2)
def amount_to_int(self: Any, state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "amount": int(state["amount"])}


@gd.upgrade(from_version=1)
def add_currency_buggy(self: Any, state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "currency": "EUR", "amount": state["amount"] + 0}


ExpenseV3 = expense_v3(add_currency=add_currency, amount_to_int=amount_to_int)
ExpenseV3From2 = expense_v3(amount_to_int=amount_to_int)
ExpenseV3Buggy = expense_v3(add_currency=add_currency_buggy, amount_to_int=amount_to_int)


@gd.workflow(name="report")
class Report:
    @gd.step
    async def build(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        if state and state.get("wait"):
            return gd.goto(self.publish, delay=DAYS)
        return gd.done()

    @gd.step
    async def publish(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


_schema = os.environ.get("CHECK_SCHEMA", "gendurable")
engine_v1 = gd.Engine(workflows=[ExpenseV1, Report], schema=_schema, queues={"default": 2})
engine_v2 = gd.Engine(workflows=[ExpenseV2], schema=_schema, queues={"default": 2})
engine_same = gd.Engine(workflows=[ExpenseV1, Report], schema=_schema, queues={"default": 2})
engine_v3 = gd.Engine(workflows=[ExpenseV3, Report], schema=_schema, queues={"default": 2})
engine_v3_from2 = gd.Engine(
    workflows=[ExpenseV3From2, Report], schema=_schema, queues={"default": 2}
)
