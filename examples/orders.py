"""Orders: one child per line item reserves stock under a per-SKU concurrency key; the
order then joins.

    python examples/orders.py                  # a throwaway embedded PostgreSQL
    GENDURABLE_DSN=postgresql://user@host/db python examples/orders.py --schema orders

Three orders arrive at once and compete for the same apples. Each order spawns one
`Reserve` child per line item (`gd.spawn`) and waits. Each child reserves its SKU under
`concurrency_key="sku:<sku>"`: two reservations of one SKU never run at the same time, on
any number of workers, although the stock queue runs eight steps at once. When every child
has ended, the order's `confirm` step sees them all in `ctx.children`, in line order: all
reserved, the order is confirmed; a line out of stock (a failed child does not fail its
parent), the lines already reserved are released by a second fan-out under the same keys,
and the order is rejected.

The warehouse is a dict in this process, read and then written after a pause, as a remote
stock service would be: without the concurrency key, reservations of one SKU would read the
same count at once and sell the same apples twice.
"""

from __future__ import annotations

import argparse
import asyncio

import msgspec

import gendurable as gd


class Warehouse:
    """Stock per SKU and who holds what, behind a slow read-then-write API."""

    def __init__(self, stock: dict[str, int]) -> None:
        self.stock = dict(stock)
        self.held: dict[str, tuple[str, int]] = {}  # holder -> (sku, qty)
        self.busy: set[str] = set()  # SKUs being read and written right now
        self.overlaps = 0  # times two calls worked on one SKU at once (keys prevent it)

    async def reserve(self, holder: str, sku: str, qty: int) -> int | None:
        """Take `qty` of `sku` for `holder`; None when short (the stock left otherwise).

        Idempotent per holder: a step that runs again after a crash takes nothing twice.
        """
        async with self._working(sku):
            if holder in self.held:
                return self.stock[sku]
            left = self.stock[sku]
            await asyncio.sleep(0.01)  # the round trip to the stock service
            if left < qty:
                return None
            self.stock[sku] = left - qty
            self.held[holder] = (sku, qty)
            return left - qty

    async def release(self, holder: str) -> None:
        """Give back what `holder` took (nothing if it took nothing, or gave it back)."""
        if holder not in self.held:
            return
        sku, qty = self.held[holder]
        async with self._working(sku):
            left = self.stock[sku]
            await asyncio.sleep(0.01)
            self.stock[sku] = left + qty
            del self.held[holder]

    def _working(self, sku: str) -> _Working:
        return _Working(self, sku)


class _Working:
    """Marks a SKU busy while a call works on it, counting calls that overlap."""

    def __init__(self, warehouse: Warehouse, sku: str) -> None:
        self.warehouse = warehouse
        self.sku = sku

    async def __aenter__(self) -> None:
        if self.sku in self.warehouse.busy:
            self.warehouse.overlaps += 1
        self.warehouse.busy.add(self.sku)

    async def __aexit__(self, *exc: object) -> None:
        self.warehouse.busy.discard(self.sku)


STOCK = {"apple": 6, "pear": 3, "fig": 5, "plum": 0}
WAREHOUSE = Warehouse(STOCK)


class Line(msgspec.Struct):
    sku: str
    qty: int


# --8<-- [start:order]
@gd.workflow(name="orders.reserve", queue="stock", result=Line)
class Reserve:
    """Reserve one line item; fails (`stop`) when the SKU is short."""

    class State(msgspec.Struct):
        sku: str
        qty: int

    @gd.step(start=True)
    async def reserve(self, state: State, ctx: gd.Context) -> gd.Outcome:
        assert ctx.key is not None
        if await WAREHOUSE.reserve(ctx.key, state.sku, state.qty) is None:
            return gd.stop(f"{state.sku} out of stock")
        return gd.done(Line(state.sku, state.qty))


@gd.workflow(name="orders.release", queue="stock")
class Release:
    """Give back the stock a `Reserve` child took (its key is the holder)."""

    class State(msgspec.Struct):
        holder: str

    @gd.step(start=True)
    async def release(self, state: State, ctx: gd.Context) -> gd.Outcome:
        await WAREHOUSE.release(state.holder)
        return gd.done()


@gd.workflow(name="orders.order", queue="orders")
class Order:
    """place (one Reserve child per line) -> confirm -> done, or -> rejected after releasing."""

    class State(msgspec.Struct):
        lines: list[Line]
        missing: list[str] = msgspec.field(default_factory=list)
        released: list[Line] = msgspec.field(default_factory=list)

    class Result(msgspec.Struct):
        status: str
        lines: list[Line]
        note: str = ""

    @gd.step(start=True)
    async def place(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.spawn(
            [
                Reserve.new(
                    key=f"{ctx.key}/{i}",
                    state=Reserve.State(sku=line.sku, qty=line.qty),
                    concurrency_key=f"sku:{line.sku}",
                )
                for i, line in enumerate(state.lines)
            ],
            then=self.confirm,
        )

    @gd.step
    async def confirm(self, state: State, ctx: gd.Context) -> gd.Outcome:
        # One ChildResult per line, in spawn (line) order, whatever order they ended in.
        if all(child.status == "done" for child in ctx.children):
            return gd.done(Order.Result("confirmed", [c.result for c in ctx.children]))
        state.missing = [c.error["message"] for c in ctx.children if c.status != "done"]
        state.released = [c.result for c in ctx.children if c.status == "done"]
        return gd.spawn(
            [
                Release.new(
                    key=f"{child.key}/release",
                    state=Release.State(holder=child.key),
                    concurrency_key=f"sku:{child.result.sku}",
                )
                for child in ctx.children
                if child.status == "done" and child.key is not None
            ],
            then=self.rejected,
        )

    @gd.step
    async def rejected(self, state: State, ctx: gd.Context) -> gd.Outcome:
        released = ", ".join(f"{line.qty} {line.sku}" for line in state.released)
        note = "; ".join(state.missing) + (f" (released {released})" if released else "")
        return gd.done(Order.Result("rejected", [], note))


# --8<-- [end:order]


ORDERS = {
    "o-1": [Line("apple", 2), Line("pear", 1)],
    "o-2": [Line("apple", 2), Line("fig", 1)],
    "o-3": [Line("apple", 2), Line("plum", 1)],
}


def describe(key: str, result: Order.Result) -> str:
    """One line per order: how it ended."""
    if result.status == "confirmed":
        return f"{key}: confirmed: " + ", ".join(f"{li.qty} {li.sku}" for li in result.lines)
    return f"{key}: rejected: {result.note}"


async def main(dsn: str | None = None, schema: str = "gendurable") -> list[str]:
    """Place the three orders at once; returns (and prints) one line per order, then the
    stock left."""
    global WAREHOUSE
    WAREHOUSE = Warehouse(STOCK)
    engine = gd.Engine(
        dsn,
        workflows=[Order, Reserve, Release],
        schema=schema,
        queues={"orders": 4, "stock": 8},
    )
    lines = []
    async with engine:
        await Order.start_many(
            Order.new(key=key, state=Order.State(lines=order)) for key, order in ORDERS.items()
        )
        for key in ORDERS:
            lines.append(describe(key, await Order.result(key, timeout=60)))
            print(lines[-1])
    lines.append("stock left: " + ", ".join(f"{n} {sku}" for sku, n in WAREHOUSE.stock.items()))
    print(lines[-1])
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--schema", default="gendurable", help="PostgreSQL schema to use")
    args = parser.parse_args()
    asyncio.run(main(schema=args.schema))
