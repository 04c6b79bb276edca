"""Children: spawn, fan-in, ctx.children, cascading cancel, terminal effects exactly once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import pytest

import gendurable as gd
from gendurable.testing import MakeEngine, RecorderFactory
from recordings import recorded

seen_children: list[tuple[gd.ChildResult, ...]] = recorded([])


@gd.job(name="children.double", max_attempts=1)
async def double(args: dict[str, int], ctx: gd.Context) -> int:
    return args["n"] * 2


@gd.workflow(name="children.item", max_attempts=1)
class Item:
    class State(msgspec.Struct):
        n: int
        fail: bool = False
        stop: bool = False

    class Result(msgspec.Struct):
        squared: int

    @gd.step(start=True)
    async def work(self, state: State, ctx: gd.Context) -> gd.Outcome:
        if state.fail:
            raise RuntimeError(f"item {state.n} broke")
        if state.stop:
            return gd.stop(f"item {state.n} gave up")
        return gd.done(Item.Result(squared=state.n * state.n))


@gd.workflow(name="children.waiter")
class Waiter:
    """A child that waits for a signal: it stays live until told."""

    @gd.step(start=True)
    @gd.await_signals("go")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done("went")


@gd.workflow(name="children.order")
class Order:
    class State(msgspec.Struct):
        items: list[int] = msgspec.field(default_factory=list)
        fail: list[int] = msgspec.field(default_factory=list)
        seen: list[list[Any]] = msgspec.field(default_factory=list)

    @gd.step(start=True)
    async def fan_out(self, state: State, ctx: gd.Context) -> gd.Outcome:
        children: list[Any] = [
            Item.new(
                key=f"{ctx.key}-item-{n}",
                state=Item.State(n=n, fail=n in state.fail, stop=-n in state.fail),
            )
            for n in state.items
        ]
        children.append(double.new({"n": 21}, key=f"{ctx.key}-double"))
        return gd.spawn(children, then=self.join)

    @gd.step
    async def join(self, state: State, ctx: gd.Context) -> gd.Outcome:
        seen_children.append(ctx.children)
        state.seen = [[c.key, c.workflow, c.status] for c in ctx.children]
        return gd.done([c.status for c in ctx.children])


async def test_spawn_runs_children_and_then_sees_them_in_spawn_order(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Order, Item, double])
    # Keys sort differently from spawn order: ctx.children must follow the spawn.
    handle = await Order.start(key="o1", state=Order.State(items=[3, 1, 2]))

    await engine.drain()

    info = await Order.get(handle.id)
    assert info.status == "done"
    assert info.result == ["done", "done", "done", "done"]
    (children,) = seen_children
    assert [(c.key, c.workflow, c.status, c.result, c.error) for c in children] == [
        ("o1-item-3", "children.item", "done", Item.Result(squared=9), None),
        ("o1-item-1", "children.item", "done", Item.Result(squared=1), None),
        ("o1-item-2", "children.item", "done", Item.Result(squared=4), None),
        ("o1-double", "children.double", "done", 42, None),
    ]
    # Inserted in key order (the deadlock-free order), shown in spawn order.
    by_id = [c.key for c in sorted(children, key=lambda c: c.id)]
    assert by_id == sorted(c.key for c in children)
    parent = await db.fetchrow(
        f'SELECT pending_children FROM "{gendurable_schema}".instances WHERE id = $1', handle.id
    )
    assert parent is not None
    assert parent["pending_children"] == 0


async def test_a_failed_child_does_not_fail_its_parent(make_engine: MakeEngine) -> None:
    engine = await make_engine(workflows=[Order, Item, double])
    handle = await Order.start(key="o2", state=Order.State(items=[1, 2, 3], fail=[2, -3]))

    await engine.drain()

    info = await Order.get(handle.id)
    assert info.status == "done"
    assert info.result == ["done", "failed", "failed", "done"]
    (children,) = seen_children
    failed = {c.key: c.error["message"] for c in children if c.status == "failed"}
    assert failed == {"o2-item-2": "item 2 broke", "o2-item-3": "item 3 gave up"}


@gd.workflow(name="children.nested")
class Nested:
    class State(msgspec.Struct):
        depth: int
        width: int = 2
        total: int = 0

    @gd.step(start=True)
    async def split(self, state: State, ctx: gd.Context) -> gd.Outcome:
        if state.depth == 0:
            return gd.done(1)
        return gd.spawn(
            [
                Nested.new(key=f"{ctx.key}.{i}", state=Nested.State(depth=state.depth - 1))
                for i in range(state.width)
            ],
            then=self.add,
        )

    @gd.step
    async def add(self, state: State, ctx: gd.Context) -> gd.Outcome:
        assert all(c.status == "done" for c in ctx.children)
        return gd.done(sum(c.result for c in ctx.children))


async def test_children_spawn_children_to_any_depth(make_engine: MakeEngine) -> None:
    engine = await make_engine(workflows=[Nested])
    handle = await Nested.start(key="n", state=Nested.State(depth=4))

    await engine.drain()

    assert await Nested.result(handle.id) == 16  # 2**4 leaves


@gd.workflow(name="children.wide")
class Wide:
    class State(msgspec.Struct):
        n: int

    @gd.step(start=True)
    async def fan_out(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.spawn(
            [double.new({"n": i}, key=f"w-{i:05d}") for i in range(state.n)], then=self.join
        )

    @gd.step
    async def join(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done({"count": len(ctx.children), "sum": sum(c.result for c in ctx.children)})


@pytest.mark.slow
async def test_ten_thousand_children_in_one_spawn(make_engine: MakeEngine) -> None:
    engine = await make_engine(workflows=[Wide, double], queues={"default": 64})
    handle = await Wide.start(key="wide", state=Wide.State(n=10_000))

    await engine.drain()

    assert await Wide.result(handle.id) == {"count": 10_000, "sum": 2 * sum(range(10_000))}


async def test_spawn_with_a_live_child_key_goes_to_the_error_path_and_inserts_nothing(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Order, Item, double, Waiter])
    await Item.start(key="o3-item-2", state=Item.State(n=2, fail=False))
    # The squatter above finishes at once; a live one holds its key while it waits.
    await engine.drain()
    await double.enqueue({"n": 0}, key="o3-double", delay=timedelta(hours=1))

    handle = await Order.start(key="o3", state=Order.State(items=[1, 2]))
    await engine.drain()

    info = await Order.get(handle.id)
    assert info.status == "available"  # retrying with backoff
    assert info.attempt == 1
    assert info.error["type"] == "gendurable.errors.DuplicateKey"
    assert "o3-double" in info.error["message"]
    children = await db.fetchval(
        f'SELECT count(*) FROM "{gendurable_schema}".instances WHERE parent_id = $1', handle.id
    )
    assert children == 0


async def test_a_spawn_naming_one_key_twice_fails_before_writing(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    @gd.workflow(name="children.twice", max_attempts=1)
    class Twice:
        @gd.step
        async def go(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.spawn([double.new({"n": 1}, key="k"), double.new({"n": 2}, key="k")], "go")

    engine = await make_engine(workflows=[Twice, double])
    handle = await Twice.start(key="t")
    await engine.drain()

    info = await Twice.get(handle.id)
    assert info.status == "failed"
    assert "twice" in info.error["message"]
    total = await db.fetchval(f'SELECT count(*) FROM "{gendurable_schema}".instances')
    assert total == 1


@gd.workflow(name="children.holder")
class Holder:
    """Spawns waiting children; its `then` records what it saw."""

    class State(msgspec.Struct):
        n: int = 2

    @gd.step(start=True)
    async def fan_out(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.spawn(
            [Waiter.new(key=f"{ctx.key}-{i}") for i in range(state.n)]
            + [Holder.new(key=f"{ctx.key}-sub", state=Holder.State(n=1))]
            if state.n > 1
            else [Waiter.new(key=f"{ctx.key}-{i}") for i in range(state.n)],
            then=self.join,
        )

    @gd.step
    async def join(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done(sorted(c.status for c in ctx.children))


async def test_a_child_is_an_ordinary_instance_signalled_by_its_own_key(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[Holder, Waiter])
    handle = await Holder.start(key="h", state=Holder.State(n=1))
    await engine.drain()
    assert (await Holder.get(handle.id)).status == "waiting"

    await Waiter.signal("h-0", "go")
    await engine.drain()

    assert await Holder.result(handle.id) == ["done"]


async def test_cancelling_one_child_only_counts_its_parent_down(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[Holder, Waiter])
    handle = await Holder.start(key="h", state=Holder.State(n=2))
    await engine.drain()

    await Waiter.cancel("h-0")
    await engine.drain()
    assert (await Holder.get(handle.id)).status == "waiting"
    await Waiter.signal("h-1", "go")
    await Waiter.signal("h-sub-0", "go")
    await engine.drain()

    assert await Holder.result(handle.id) == ["cancelled", "done", "done"]


async def test_cancelling_a_parent_cancels_its_live_descendants(
    make_engine: MakeEngine, recorder: RecorderFactory
) -> None:
    engine = await make_engine(workflows=[Holder, Waiter])
    handle = await Holder.start(key="h", state=Holder.State(n=2))
    await engine.drain()

    await Holder.cancel(handle.id)

    for key in ("h-0", "h-1", "h-sub-0"):
        assert (await Waiter.get(key)).status == "cancelled"
    assert (await Holder.get("h-sub")).status == "cancelled"
    assert (await Holder.get(handle.id)).status == "cancelled"
    with pytest.raises(gd.NoTarget):
        await Waiter.signal("h-0", "go")
