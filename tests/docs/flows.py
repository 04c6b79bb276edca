"""Orders: the workflows `gendurable docs` is tested on.

    gendurable docs flows -o out

A paragraph after the code block.
"""

from datetime import timedelta
from typing import Literal

import msgspec
from flows_elsewhere import Elsewhere

import gendurable as gd

__all__ = ["Elsewhere", "Item", "Order", "notify"]


class Line(msgspec.Struct):
    sku: str
    quantity: int = 1


class Paid(msgspec.Struct):
    """The payload of `paid`."""

    amount: int
    currency: Literal["EUR", "USD"] = "EUR"


@gd.workflow(name="order", queue="orders", priority=2, max_attempts=4, lease=timedelta(minutes=5))
class Order:
    """Take an order, wait for payment, ship every line.

    Lines ship as child workflows, one per line.
    """

    class State(msgspec.Struct):
        customer: str
        lines: list[Line] = msgspec.field(default_factory=list)
        paid: int | None = None
        tags: dict[str, str] = {}

    class Result(msgspec.Struct):
        shipped: int

    @gd.step(start=True, timeout=timedelta(seconds=30))
    async def take(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.wait_payment)

    @gd.step
    @gd.await_signals("cancel", paid=Paid, timeout=timedelta(days=3))
    async def wait_payment(self, state: State, ctx: gd.Context) -> gd.Outcome:
        if ctx.timed_out or ctx.awaited[0].name == "cancel":
            return gd.stop("not paid")
        return gd.goto(self.ship)

    @gd.step(rate_limit="carrier", weight=2, max_attempts=9)
    async def ship(self, state: State, ctx: gd.Context) -> gd.Outcome:
        shipments = [
            Item.new(key=f"{ctx.key}-{i}", state=line) for i, line in enumerate(state.lines)
        ]
        shipments.append(notify.new({"to": state.customer}))
        return gd.spawn(shipments, then=self.close)

    @gd.step(rate_limit=gd.Limit(10, per=timedelta(minutes=1), burst=20))
    async def close(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done(Order.Result(shipped=len(ctx.children)))


@gd.workflow(name="item", queue="orders", state=Line)
class Item:
    @gd.step
    async def pack(self, state: Line, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


@gd.job(name="notify", queue="mail", timeout=timedelta(minutes=2))
def notify(args: dict[str, str], ctx: gd.Context) -> None:
    """Tell the customer the order shipped."""
