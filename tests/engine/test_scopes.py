"""Correlation scopes: in which statuses an instance keeps its key reserved.

With the default scope (the live statuses) a key can be used again once its instance is
terminal, by `start`, `start_many` or a spawn. A scope that includes `done` keeps the key
after the instance is done: a second start returns it (or raises `DuplicateKey`), and a
spawn of that key goes to the error path. Concurrent starts, batches and spawns of one key
from many connections create exactly one instance.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import asyncpg
import msgspec
import pytest

import gendurable as gd
from gendurable.testing import MakeEngine

LIVE = ["available", "executing", "awaiting", "waiting"]
KEEP_DONE = [*LIVE, "done"]


@gd.job(name="scopes.quick", max_attempts=1)
async def quick(args: Any, ctx: gd.Context) -> str:
    if args == "fail":
        raise RuntimeError("asked to fail")
    return f"quick {ctx.key}"


@gd.workflow(name="scopes.parent", max_attempts=1)
class Parent:
    """Spawns one `quick` child with the key (and scope) of its state; returns its result."""

    class State(msgspec.Struct):
        child: str
        scope: list[str] | None = None

    @gd.step(start=True)
    async def fan_out(self, state: State, ctx: gd.Context) -> gd.Outcome:
        scope = tuple(state.scope) if state.scope is not None else None
        return gd.spawn([quick.new(None, key=state.child, scope=scope)], then=self.join)

    @gd.step
    async def join(self, state: State, ctx: gd.Context) -> gd.Outcome:
        (child,) = ctx.children
        return gd.done([child.id, child.status, child.result])


async def keyed_rows(db: asyncpg.Connection, schema: str, key: str) -> list[tuple[int, str]]:
    rows = await db.fetch(
        f'SELECT id, status::text AS status FROM "{schema}".instances WHERE key = $1 ORDER BY id',
        key,
    )
    return [(r["id"], r["status"]) for r in rows]


# --- the default scope: the key is free again once the instance is terminal ----------------


async def test_scopes_default_scope_start_again_after_the_end_creates_a_new_instance(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[quick])
    first = await quick.enqueue(None, key="k")
    again_live = await quick.enqueue(None, key="k")
    assert (again_live.id, again_live.created) == (first.id, False)
    await engine.drain()

    second = await quick.enqueue(None, key="k")

    assert second.created is True
    assert second.id != first.id
    assert (await quick.get("k")).id == second.id  # the live one first
    assert (await quick.get(first.id)).status == "done"


async def test_scopes_default_scope_start_many_after_the_end_creates_a_new_instance(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[quick])
    (first,) = await engine.start_many([quick.new(None, key="k")])
    await engine.drain()

    (second, other) = await engine.start_many([quick.new(None, key="k"), quick.new(None, key="o")])

    assert (second.created, other.created) == (True, True)
    assert second.id != first.id


async def test_scopes_default_scope_a_child_key_is_spawned_again_after_the_end(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Parent, quick])
    one = await Parent.start(key="p1", state=Parent.State(child="c"))
    await engine.drain()
    two = await Parent.start(key="p2", state=Parent.State(child="c"))
    await engine.drain()

    first_child, *_ = await Parent.result(one.id)
    second_child, status, result = await Parent.result(two.id)

    assert (status, result) == ("done", "quick c")
    assert second_child != first_child
    assert await keyed_rows(db, gendurable_schema, "c") == [
        (first_child, "done"),
        (second_child, "done"),
    ]


# --- a scope that includes `done`: the key stays taken -----------------------------------


async def test_scopes_done_in_scope_a_second_start_returns_the_finished_instance(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[quick])
    first = await quick.enqueue(None, key="once", scope=KEEP_DONE)
    await engine.drain()
    assert (await quick.get(first.id)).status == "done"

    again = await quick.enqueue(None, key="once")
    (batched,) = await engine.start_many([quick.new(None, key="once")])
    with pytest.raises(gd.DuplicateKey) as raised:
        await quick.enqueue(None, key="once", on_conflict="raise")

    assert (again.id, again.created) == (first.id, False)
    assert (batched.id, batched.created) == (first.id, False)
    assert raised.value.existing_id == first.id
    assert await keyed_rows(db, gendurable_schema, "once") == [(first.id, "done")]


async def test_scopes_done_in_scope_a_spawn_of_the_key_goes_to_the_error_path(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Parent, quick])
    holder = await quick.enqueue(None, key="c", scope=KEEP_DONE)
    await engine.drain()

    parent = await Parent.start(key="p", state=Parent.State(child="c"))
    await engine.drain()

    with pytest.raises(gd.WorkflowFailed) as failed:
        await Parent.result(parent.id)
    assert failed.value.error["type"] == "gendurable.errors.DuplicateKey"
    assert "'c'" in failed.value.error["message"]
    assert f"instance {holder.id}" in failed.value.error["message"]
    assert await keyed_rows(db, gendurable_schema, "c") == [(holder.id, "done")]


async def test_scopes_done_in_scope_a_spawned_child_keeps_its_key_after_it_is_done(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[Parent, quick])
    one = await Parent.start(key="p1", state=Parent.State(child="c", scope=KEEP_DONE))
    await engine.drain()
    child, status, _ = await Parent.result(one.id)
    assert status == "done"

    again = await quick.enqueue(None, key="c")

    assert (again.id, again.created) == (child, False)


async def test_scopes_done_in_scope_a_failed_instance_frees_its_key(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[quick])
    first = await quick.enqueue("fail", key="k", scope=KEEP_DONE)
    await engine.drain()
    assert (await quick.get(first.id)).status == "failed"

    second = await quick.enqueue(None, key="k", scope=KEEP_DONE)

    assert second.created is True
    assert second.id != first.id


async def test_scopes_are_stored_per_instance(make_engine: MakeEngine) -> None:
    """An instance that ended under the default scope does not hold its key for a later
    start that asks for `done` in its own scope: each row keeps the scope it was started
    with."""
    engine = await make_engine(workflows=[quick])
    first = await quick.enqueue(None, key="k")
    await engine.drain()

    second = await quick.enqueue(None, key="k", scope=KEEP_DONE)
    await engine.drain()
    third = await quick.enqueue(None, key="k")

    assert second.created is True
    assert (third.id, third.created) == (second.id, False)
    assert len({first.id, second.id}) == 2


async def test_scopes_a_scope_without_every_live_status_is_refused(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[quick], queues=None)
    with pytest.raises(gd.ValidationError, match="every live status"):
        await quick.enqueue(None, key="k", scope=["done"])
    with pytest.raises(gd.ValidationError, match="every live status"):
        await engine.start_many([quick.new(None, key="k", scope=("available", "done"))])
    with pytest.raises(gd.ValidationError, match="unknown statuses"):
        await quick.enqueue(None, key="k", scope=[*LIVE, "finished"])


# --- one key, many writers at once ---------------------------------------------------------


@gd.workflow(name="scopes.waiter")
class Waiter:
    """A child that stays live until signalled."""

    @gd.step(start=True)
    @gd.await_signals("go")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done(ctx.key)


@gd.workflow(name="scopes.racer", max_attempts=1)
class Racer:
    """Spawns one child of the key in its state: `waiter` (live) or `quick` (done-scoped)."""

    class State(msgspec.Struct):
        child: str
        quick: bool = False

    @gd.step(start=True)
    async def fan_out(self, state: State, ctx: gd.Context) -> gd.Outcome:
        child = (
            quick.new(None, key=state.child, scope=tuple(KEEP_DONE))
            if state.quick
            else Waiter.new(key=state.child)
        )
        return gd.spawn([child], then=self.join)

    @gd.step
    async def join(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done(ctx.children[0].id)


ROUNDS = 20


@pytest.mark.race
async def test_scopes_concurrent_starts_batches_and_spawns_of_one_key_create_one_instance(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    """Each round, from three engines (three pools): four starts, two batches and two
    spawning parents race for one key. Even rounds race for a live `Waiter`; odd rounds for
    a `quick` job scoped to keep its key once done (it may finish mid-race)."""
    engines = [
        await make_engine(workflows=[Racer, Waiter, quick], queues={"default": 4}) for _ in range(3)
    ]
    rng = random.Random(5)
    for round in range(ROUNDS):
        key = f"x{round}"
        use_quick = round % 2 == 1
        flow: Any = quick if use_quick else Waiter

        def entry(flow: Any = flow, key: str = key) -> Any:
            if flow is quick:
                return quick.new(None, key=key, scope=tuple(KEEP_DONE))
            return Waiter.new(key=key)

        async def start(i: int, flow: Any = flow, key: str = key) -> gd.Handle:
            engine = engines[i % 3]
            await asyncio.sleep(rng.uniform(0, 0.04))  # jitter: spawns win some rounds
            if flow is quick:
                return await quick.enqueue(None, key=key, scope=KEEP_DONE, engine=engine)
            return await Waiter.start(key=key, engine=engine)

        async def batch(i: int, round: int = round, entry: Any = entry) -> gd.Handle:
            await asyncio.sleep(rng.uniform(0, 0.04))
            handles = await Waiter.start_many(
                [quick.new(None, key=f"solo-{round}-{i}"), entry()], engine=engines[i % 3]
            )
            return handles[1]

        async def parent(i: int, round: int = round, key: str = key, q: bool = use_quick) -> int:
            handle = await Racer.start(
                key=f"p{round}-{i}", state=Racer.State(child=key, quick=q), engine=engines[i % 3]
            )
            return handle.id

        results = await asyncio.gather(
            *(start(i) for i in range(4)),
            *(batch(i) for i in range(2)),
            *(parent(i) for i in range(2)),
        )
        starts: list[gd.Handle] = list(results[:6])
        parents: list[int] = list(results[6:])

        # The parents may not have spawned yet: wait until each spawned or failed.
        outcomes = [await settled(db, gendurable_schema, p) for p in parents]
        rows = await keyed_rows(db, gendurable_schema, key)
        assert len(rows) == 1, f"round {round}: {rows}"
        (winner, _), *_ = rows
        assert {h.id for h in starts} <= {winner}, f"round {round}"
        spawned = [p for p, status in zip(parents, outcomes, strict=True) if status != "failed"]
        created = [h for h in starts if h.created]
        assert len(created) + len(spawned) == 1, f"round {round}: {created} {spawned}"
        for p, status in zip(parents, outcomes, strict=True):
            if status == "failed":
                info = await Racer.get(p, engine=engines[0])
                assert info.error["type"] == "gendurable.errors.DuplicateKey", info.error
        if not use_quick:
            await Waiter.signal(key, "go", engine=engines[0])
        for p in spawned:
            assert await Racer.result(p, timeout=10, engine=engines[0]) == winner


async def settled(db: asyncpg.Connection, schema: str, id: int) -> str:
    """Wait until parent `id` has spawned (waiting, or past it) or failed; its status.

    No event tells that a spawn committed, so the row is polled.
    """
    async with asyncio.timeout(10):
        while True:
            status = await db.fetchval(
                f'SELECT status::text FROM "{schema}".instances WHERE id = $1', id
            )
            if status in ("waiting", "done", "failed"):
                return str(status)
            await asyncio.sleep(0.005)
