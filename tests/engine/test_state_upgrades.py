"""State upgrades on real PostgreSQL: rows written by version 1 of a workflow, read and run
by a deploy of version 3 (and the other way round), moved by the manual clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import pytest

import gendurable as gd
from gendurable.testing import MakeEngine, RecorderFactory
from recordings import recorded

NAME = "upgrades.order"
LATER = timedelta(hours=1)
seen: list[Any] = recorded([])


@gd.workflow(name=NAME, max_attempts=1)
class OrderV1(gd.Workflow):
    """The code running now: a name in one field, an amount in euros."""

    class State(msgspec.Struct):
        name: str
        euros: int
        later: bool = False

    @gd.step(start=True)
    async def submit(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.approve, delay=LATER if state.later else None)

    @gd.step
    @gd.await_signals("approved")
    async def approve(self, state: State, ctx: gd.Context) -> gd.Outcome:
        seen.append(state)
        return gd.goto(self.ship)

    @gd.step
    async def ship(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


@gd.workflow(name=NAME, version=3, max_attempts=1)
class OrderV3(gd.Workflow):
    """The code to deploy: version 2 split the name, version 3 counts cents."""

    class State(msgspec.Struct):
        first: str
        last: str
        cents: int
        later: bool = False

    @gd.step(start=True)
    async def submit(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.approve, delay=LATER if state.later else None)

    @gd.step
    @gd.await_signals("approved")
    async def approve(self, state: State, ctx: gd.Context) -> gd.Outcome:
        seen.append(state)
        return gd.goto(self.ship)

    @gd.step
    async def ship(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done()

    @gd.upgrade(from_version=1)
    def split_name(self, state: dict[str, Any]) -> dict[str, Any]:
        first, _, last = state.pop("name").partition(" ")
        return {**state, "first": first, "last": last}

    @gd.upgrade(from_version=2)
    def to_cents(self, state: dict[str, Any]) -> dict[str, Any]:
        euros = state.pop("euros")
        return {**state, "cents": euros * 100}


@gd.workflow(name=NAME, version=3, max_attempts=1)
class OrderV3NoV1(gd.Workflow):
    """Version 3 that dropped the upgrade from version 1: version 1 rows have no way up."""

    State = OrderV3.State

    @gd.step(start=True)
    async def submit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.approve)

    @gd.step
    @gd.await_signals("approved")
    async def approve(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        seen.append(state)
        return gd.goto(self.ship)

    @gd.step
    async def ship(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()

    @gd.upgrade(from_version=2)
    def to_cents(self, state: dict[str, Any]) -> dict[str, Any]:
        euros = state.pop("euros")
        return {**state, "cents": euros * 100}


async def stored(db: asyncpg.Connection, schema: str, id: int) -> tuple[Any, int, str]:
    """(state as stored JSON, state_version, status) of one row."""
    row = await db.fetchrow(
        f'SELECT state, state_version, status::text FROM "{schema}".instances WHERE id = $1', id
    )
    assert row is not None
    return msgspec.json.decode(row["state"]), row["state_version"], row["status"]


async def v1_rows(make_engine: MakeEngine, **later: bool) -> dict[str, int]:
    """Rows the version-1 code leaves: 'parked' awaits approval, 'delayed' goes there later."""
    old = await make_engine(workflows=[OrderV1])
    ids = {}
    for key in ("parked", "delayed"):
        state = OrderV1.State(name="Ada Lovelace", euros=12, later=key == "delayed")
        ids[key] = (await OrderV1.start(key, state, engine=old)).id
    await old.drain()
    await old.stop()
    return ids


async def test_a_step_sees_the_upgraded_state_and_the_row_is_rewritten_at_the_new_version(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    ids = await v1_rows(make_engine)
    assert await stored(db, gendurable_schema, ids["parked"]) == (
        {"name": "Ada Lovelace", "euros": 12, "later": False},
        1,
        "awaiting",
    )
    new = await make_engine(workflows=[OrderV3])

    await OrderV3.signal("parked", "approved", engine=new)
    await new.drain()

    assert seen == [OrderV3.State(first="Ada", last="Lovelace", cents=1200)]
    assert await stored(db, gendurable_schema, ids["parked"]) == (
        {"first": "Ada", "last": "Lovelace", "cents": 1200, "later": False},
        3,
        "done",
    )


async def test_get_shows_the_upgraded_state_and_leaves_the_row_as_stored(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    ids = await v1_rows(make_engine)
    new = await make_engine(workflows=[OrderV3])

    info = await OrderV3.get("parked", engine=new)

    assert info.state == OrderV3.State(first="Ada", last="Lovelace", cents=1200)
    assert info.blocked_by is not None
    assert info.blocked_by.reason == "awaiting"
    by_id = await OrderV3.get(ids["delayed"], engine=new)  # read without blocked_by
    assert by_id.state == OrderV3.State(first="Ada", last="Lovelace", cents=1200, later=True)
    assert (await stored(db, gendurable_schema, ids["parked"]))[:2] == (
        {"name": "Ada Lovelace", "euros": 12, "later": False},
        1,
    )


async def test_a_row_that_parks_is_written_upgraded(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    ids = await v1_rows(make_engine)
    new = await make_engine(workflows=[OrderV3])

    new.clock.advance(LATER)  # type: ignore[attr-defined]
    await new.drain()  # the delayed row enters `approve` with no signal yet: it parks

    assert await stored(db, gendurable_schema, ids["delayed"]) == (
        {"first": "Ada", "last": "Lovelace", "cents": 1200, "later": True},
        3,
        "awaiting",
    )
    await OrderV3.signal("delayed", "approved", engine=new)
    await new.drain()
    assert seen == [OrderV3.State(first="Ada", last="Lovelace", cents=1200, later=True)]


async def test_a_version_no_upgrade_covers_goes_to_the_error_path(
    make_engine: MakeEngine,
    db: asyncpg.Connection,
    gendurable_schema: str,
    recorder: RecorderFactory,
) -> None:
    ids = await v1_rows(make_engine)
    new = await make_engine(workflows=[OrderV3NoV1], start=False)
    events = recorder(new)
    await new.start()

    await OrderV3NoV1.signal("parked", "approved", engine=new)
    await new.drain()  # the woken step is over before the clock passes its lease
    new.clock.advance(LATER)  # type: ignore[attr-defined]
    await new.drain()  # the delayed row would park: it must not, with a state it cannot read

    assert seen == []
    for key in ("parked", "delayed"):
        assert await stored(db, gendurable_schema, ids[key]) == (
            {"name": "Ada Lovelace", "euros": 12, "later": key == "delayed"},
            1,
            "failed",
        )
        error = msgspec.json.decode(
            await db.fetchval(
                f'SELECT error FROM "{gendurable_schema}".instances WHERE id = $1', ids[key]
            )
        )
        assert error["type"] == "gendurable.errors.StateUpgradeError"
        assert error["message"] == (
            f"{NAME} instance {ids[key]}: its state is of version 1 and this code's is 3, but "
            "its oldest upgrade starts from version 2: add @gd.upgrade(from_version=1)"
        )
        with pytest.raises(gd.StateUpgradeError, match=r"add @gd\.upgrade\(from_version=1\)"):
            await OrderV3NoV1.get(ids[key], engine=new)
    assert len(events.of(("step", "exception"), workflow=NAME)) == 2
    assert events.of(("reaper", "rescued")) == []


async def test_a_state_newer_than_this_code_goes_to_the_error_path_without_running_the_step(
    make_engine: MakeEngine,
    db: asyncpg.Connection,
    gendurable_schema: str,
    recorder: RecorderFactory,
) -> None:
    new = await make_engine(workflows=[OrderV3])
    state = OrderV3.State(first="Ada", last="Lovelace", cents=1200)
    id = (await OrderV3.start("newer", state, engine=new)).id
    await new.drain()
    await new.stop()
    old = await make_engine(workflows=[OrderV1], start=False)  # a node not yet redeployed
    events = recorder(old)
    await old.start()

    with pytest.raises(gd.StateUpgradeError, match="newer than this code's version 1"):
        await OrderV1.get("newer", engine=old)
    await OrderV1.signal("newer", "approved", engine=old)
    await old.drain()

    assert seen == []
    assert await stored(db, gendurable_schema, id) == (
        {"first": "Ada", "last": "Lovelace", "cents": 1200, "later": False},
        3,
        "failed",
    )
    (failure,) = events.of(("step", "exception"), id=id)
    assert str(failure["error"]) == (
        f"{NAME} instance {id}: its state was written by version 3 of the workflow, newer "
        "than this code's version 1: run it with the newer code"
    )


handled: list[str] = []


@gd.workflow(name=NAME, version=3, max_attempts=1)
class OrderV3Recovers(gd.Workflow):
    """Version 3 without the upgrades, whose handler starts an unreadable row afresh."""

    State = OrderV3.State

    @gd.step(start=True)
    async def submit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.approve)

    @gd.step
    @gd.await_signals("approved")
    async def approve(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.ship)

    @gd.step
    async def ship(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        seen.append(state)
        return gd.done()

    def handle(self, error: Exception, state: Any, ctx: gd.Context) -> gd.Outcome:
        handled.append(type(error).__name__)
        assert state is None  # the stored state could not be read
        return gd.goto(self.ship, state=OrderV3.State(first="?", last="?", cents=0))


async def test_a_handler_may_replace_a_state_no_upgrade_covers(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    handled.clear()
    ids = await v1_rows(make_engine)
    new = await make_engine(workflows=[OrderV3Recovers])

    await OrderV3Recovers.signal("parked", "approved", engine=new)
    await new.drain()

    # Once: the fresh state the handler chose runs on at version 3, never "upgraded" again.
    assert handled == ["StateUpgradeError"]
    assert seen == [OrderV3.State(first="?", last="?", cents=0)]
    assert await stored(db, gendurable_schema, ids["parked"]) == (
        {"first": "?", "last": "?", "cents": 0, "later": False},
        3,
        "done",
    )


@gd.workflow(name="upgrades.child", version=3)
class Child(gd.Workflow):
    @gd.step
    async def run(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()

    @gd.upgrade(from_version=2)
    def two(self, state: Any) -> Any:
        return state


@gd.workflow(name="upgrades.parent", version=2)
class Parent(gd.Workflow):
    @gd.step
    async def fan_out(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.spawn([Child.new(key=f"{ctx.key}-kid", state={})], then=self.join)

    @gd.step
    async def join(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()

    @gd.upgrade(from_version=1)
    def one(self, state: Any) -> Any:
        return state


@gd.job(name="upgrades.job")
async def plain_job(args: Any, ctx: gd.Context) -> None:
    return None


async def test_every_insert_writes_its_own_workflows_version(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Parent, Child, plain_job])

    await Parent.start("p", {})
    await Parent.start_many([Parent.new("many", {}), Child.new("many", {}), plain_job.new({})])
    await engine.drain()

    rows = await db.fetch(
        f'SELECT workflow, key, state_version FROM "{gendurable_schema}".instances ORDER BY id'
    )
    assert sorted((r["workflow"], r["key"], r["state_version"]) for r in rows) == [
        ("upgrades.child", "many", 3),
        ("upgrades.child", "many-kid", 3),
        ("upgrades.child", "p-kid", 3),
        ("upgrades.job", None, 1),
        ("upgrades.parent", "many", 2),
        ("upgrades.parent", "p", 2),
    ]
