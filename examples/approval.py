"""Expense approval: approve and reject signals, and a two-day deadline.

    python examples/approval.py                  # a throwaway embedded PostgreSQL
    GENDURABLE_DSN=postgresql://user@host/db python examples/approval.py --schema approval

Three expenses go through one workflow: the first is approved (the `approved` signal carries
a typed `Approved` payload), the second is rejected (the `rejected` signal carries plain
JSON), and nobody decides on the third, so its await times out after two days.

The engine runs on a `ManualClock` here, only so that the two days pass in an instant:
`clock.advance(...)` moves time and `engine.drain()` runs whatever became due, including the
reaper that wakes an expired await. In production leave `clock=` out: PostgreSQL's time then
decides, and every engine's reaper wakes expired awaits within `reap_interval`.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta

import msgspec

import gendurable as gd

DECISION_TIMEOUT = timedelta(days=2)


class Approved(msgspec.Struct):
    """The payload of an `approved` signal: validated when sent, decoded for the step."""

    by: str
    comment: str = ""


@gd.workflow(name="expense", queue="expenses")
class Expense:
    """submit -> decide (awaits approved / rejected, two days) -> pay."""

    class State(msgspec.Struct):
        amount: int
        submitter: str
        approver: str | None = None

    class Result(msgspec.Struct):
        paid: bool
        by: str
        note: str = ""

    @gd.step(start=True)
    async def submit(self, state: State, ctx: gd.Context) -> gd.Outcome:
        # Here a real application would notify the manager (idempotently: a step may run
        # again after a crash, and `ctx.key` identifies the expense).
        return gd.goto(self.decide)

    @gd.step
    @gd.await_signals(approved=Approved, rejected=None, timeout=DECISION_TIMEOUT)
    async def decide(self, state: State, ctx: gd.Context) -> gd.Outcome:
        # Entering this step parks the instance; the code runs once a decision arrived
        # (ctx.awaited, in arrival order) or the deadline passed (ctx.timed_out).
        if ctx.timed_out:
            return gd.stop(f"no decision within {DECISION_TIMEOUT.days} days")
        decision = ctx.awaited[0]
        if decision.name == "rejected":
            # An untyped signal: its payload is plain JSON.
            reason = decision.payload.get("reason", "") if decision.payload else ""
            by = decision.payload.get("by", "?") if decision.payload else "?"
            return gd.done(Expense.Result(paid=False, by=by, note=reason))
        state.approver = decision.payload.by  # a typed signal: an Approved instance
        return gd.goto(self.pay)

    @gd.step(max_attempts=10)
    async def pay(self, state: State, ctx: gd.Context) -> gd.Outcome:
        # A real application would call its bank here, with `ctx.key` as idempotency key.
        assert state.approver is not None
        return gd.done(Expense.Result(paid=True, by=state.approver, note=f"{state.amount} EUR"))


def describe(key: str, outcome: Expense.Result | gd.WorkflowFailed) -> str:
    """One line per expense: how it ended."""
    if isinstance(outcome, gd.WorkflowFailed):
        return f"{key}: {outcome.status}: {outcome.error['message']}"
    if outcome.paid:
        return f"{key}: paid {outcome.note}, approved by {outcome.by}"
    return f"{key}: rejected by {outcome.by} ({outcome.note})"


async def outcome(key: str) -> Expense.Result | gd.WorkflowFailed:
    """The result of a finished expense, or the failure it ended with."""
    try:
        result: Expense.Result = await Expense.result(key, timeout=30)
    except gd.WorkflowFailed as failed:
        return failed
    return result


async def main(dsn: str | None = None, schema: str = "gendurable") -> dict[str, str]:
    """Run the three expenses; returns (and prints) one line per expense."""
    clock = gd.ManualClock()  # for this demo only: see the module docstring
    engine = gd.Engine(
        dsn,
        workflows=[Expense],
        schema=schema,
        queues={"expenses": 4},
        clock=clock,
        gc_retention=timedelta(days=30),  # ended expenses stay queryable (the default is a day)
    )
    lines: dict[str, str] = {}
    async with engine:
        for key, amount, submitter in [("exp-1", 120, "ann"), ("exp-2", 900, "bo"),
                                       ("exp-3", 45, "cy")]:  # fmt: skip
            await Expense.start(key=key, state=Expense.State(amount=amount, submitter=submitter))
        await engine.drain()  # each expense now waits in `decide`
        for key in ("exp-1", "exp-2", "exp-3"):
            info = await Expense.get(key)
            print(f"{key}: {info.status} at step {info.step!r}")

        await Expense.signal("exp-1", "approved", Approved(by="dee", comment="fine"))
        await Expense.signal("exp-2", "rejected", {"by": "dee", "reason": "no receipt"})
        for key in ("exp-1", "exp-2"):
            lines[key] = describe(key, await outcome(key))
            print(lines[key])

        clock.advance(DECISION_TIMEOUT + timedelta(seconds=1))  # two days pass at once
        await engine.drain()  # the reaper wakes exp-3's expired await; its step runs
        lines["exp-3"] = describe("exp-3", await outcome("exp-3"))
        print(lines["exp-3"])
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--schema", default="gendurable", help="PostgreSQL schema to use")
    args = parser.parse_args()
    asyncio.run(main(schema=args.schema))
