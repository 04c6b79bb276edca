"""Workflows the dashboard tests run; `web_app:engine` is what `--app` loads.

An expense approval (awaits a typed signal), an order that fans out to shipments which
wait for a delivery signal (a parent `waiting` on live children), and a receipt job that
fails with a traceback when the address is bad.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec

import gendurable as gd


class Approved(msgspec.Struct):
    """Who approved an expense."""

    by: str


@gd.workflow(name="expense", queue="expenses")
class Expense:
    """An expense waits up to two days for a decision, then is paid."""

    class State(msgspec.Struct):
        amount: int
        approver: str | None = None

    @gd.step(start=True)
    async def submit(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.decide)

    @gd.step
    @gd.await_signals(approved=Approved, rejected=None, timeout=timedelta(days=2))
    async def decide(self, state: State, ctx: gd.Context) -> gd.Outcome:
        if ctx.timed_out:
            return gd.stop("no decision in time")
        signal = ctx.awaited[0]
        if signal.name == "rejected":
            return gd.done({"paid": False})
        state.approver = signal.payload.by
        return gd.goto(self.pay)

    @gd.step
    async def pay(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done({"paid": True, "amount": state.amount, "by": state.approver})


@gd.workflow(name="shipment", queue="orders")
class Shipment:
    """One parcel of an order: waits until the carrier says it was delivered."""

    class State(msgspec.Struct):
        parcel: int

    @gd.step(start=True)
    @gd.await_signals("delivered")
    async def in_transit(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done({"parcel": state.parcel})


@gd.workflow(name="order", queue="orders")
class Order:
    """An order ships its parcels in parallel and settles when all are delivered."""

    class State(msgspec.Struct):
        parcels: int = 2

    @gd.step(start=True)
    async def ship(self, state: State, ctx: gd.Context) -> gd.Outcome:
        parcels: list[Any] = [
            Shipment.new(key=f"{ctx.key}-parcel-{n}", state=Shipment.State(parcel=n))
            for n in range(1, state.parcels + 1)
        ]
        return gd.spawn(parcels, then=self.settle)

    @gd.step
    async def settle(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done({"delivered": len(ctx.children)})


class Receipt(msgspec.Struct):
    """Where a receipt goes."""

    email: str


@gd.job(name="send_receipt", queue="mail", max_attempts=1)
async def send_receipt(args: Receipt, ctx: gd.Context) -> None:
    """Mail a receipt (fails on an address without an @)."""
    if "@" not in args.email:
        raise ValueError(f"cannot deliver to {args.email!r}: no @ in the address")


WORKFLOWS: list[Any] = [Expense, Order, Shipment, send_receipt]

engine = gd.Engine("postgresql://unused@localhost/unused", workflows=WORKFLOWS)
"""Only loaded by `--app` (never started): its workflows' code draws and checks."""
