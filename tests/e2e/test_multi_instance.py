"""Several engines in one process: names, schemas, NOTIFY channels and class-API routing."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from e2e_support import eventually

import gendurable as gd
from gendurable.testing import MakeEngine
from recordings import recorded

RUNS: list[tuple[str | None, str]] = recorded([])


@gd.workflow(name="e2e.multi.echo")
class Echo:
    @gd.step
    async def echo(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        RUNS.append((ctx.key, ctx.engine.name))
        return gd.done({"engine": ctx.engine.name})


async def count(db: asyncpg.Connection, schema: str) -> int:
    return int(await db.fetchval(f'SELECT count(*) FROM "{schema}".instances'))


async def test_multi_instance_engines_run_only_their_own_schema(
    make_engine: MakeEngine,
    manual_clock: gd.ManualClock,
    gendurable_schema: str,
    other_schema: str,
    db: asyncpg.Connection,
) -> None:
    a = await make_engine(workflows=[Echo], name="multi-a", clock=manual_clock)
    b = await make_engine(workflows=[Echo], name="multi-b", schema=other_schema, clock=manual_clock)
    for i in range(3):
        await Echo.start(key=f"a{i}", engine=a)
    await Echo.start(key="b0", engine=b)
    await a.drain()
    await b.drain()

    assert sorted(RUNS) == [
        ("a0", "multi-a"),
        ("a1", "multi-a"),
        ("a2", "multi-a"),
        ("b0", "multi-b"),
    ]
    assert await count(db, gendurable_schema) == 3
    assert await count(db, other_schema) == 1
    assert await Echo.result("b0", timeout=5, engine=b) == {"engine": "multi-b"}
    # The same key lives independently in each schema.
    with pytest.raises(gd.NoTarget):
        await Echo.get("a0", engine=b)
    again = await Echo.start(key="a0", engine=b)
    assert again.created


async def test_multi_instance_duplicate_name_raises_and_leaves_the_first_running(
    make_engine: MakeEngine, manual_clock: gd.ManualClock, other_schema: str
) -> None:
    first = await make_engine(workflows=[Echo], name="twin", clock=manual_clock)

    with pytest.raises(gd.EngineError, match="twin"):
        await make_engine(workflows=[Echo], name="twin", schema=other_schema, clock=manual_clock)

    # Routing by name still reaches the first engine, which still works.
    handle = await Echo.start(key="k", engine="twin")
    await first.drain()
    assert await Echo.result(handle.id, timeout=5, engine="twin") == {"engine": "twin"}
    # Once the first is stopped, the name is free again.
    await first.stop()
    second = await make_engine(workflows=[Echo], name="twin", clock=manual_clock)
    assert await Echo.result(handle.id, timeout=5, engine="twin") == {"engine": "twin"}
    assert second is not first


async def test_multi_instance_notify_in_one_schema_does_not_wake_the_other(
    make_engine: MakeEngine,
    manual_clock: gd.ManualClock,
    other_schema: str,
    db: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Polling only every hour: a scheduler claims only when a notification wakes it.
    hour = timedelta(hours=1)
    a = await make_engine(workflows=[Echo], clock=manual_clock, poll_interval=hour)
    b = await make_engine(
        workflows=[Echo], schema=other_schema, clock=manual_clock, poll_interval=hour
    )
    assert a.store.db.channel != b.store.db.channel
    woken: list[str] = []
    scheduler_b = b.schedulers["default"]
    wake_b = scheduler_b.wake

    def record_wake() -> None:
        woken.append("b")
        wake_b()

    monkeypatch.setattr(scheduler_b, "wake", record_wake)

    # A start in A's schema wakes A (which then runs it without any poll or drain)...
    await Echo.start(key="for-a", engine=a)
    assert await Echo.result("for-a", timeout=10, engine=a) == {"engine": a.name}

    # ...and not B: a sentinel sent on B's channel after A's start commits is delivered after
    # anything A's start sent there (notifications arrive in commit order).
    await db.execute("SELECT pg_notify($1, 'q:default')", b.store.db.channel)

    async def sentinel_arrived() -> bool:
        return bool(woken)

    await eventually(sentinel_arrived, what="B woken by the sentinel")
    assert woken == ["b"]
    assert [("for-a", a.name)] == RUNS


async def test_multi_instance_class_api_routes_by_engine(
    make_engine: MakeEngine,
    manual_clock: gd.ManualClock,
    other_schema: str,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    a = await make_engine(workflows=[Echo], name="route-a", clock=manual_clock)
    b = await make_engine(workflows=[Echo], name="route-b", schema=other_schema, clock=manual_clock)

    with pytest.raises(gd.NoEngine, match="several running engines"):
        await Echo.start(key="ambiguous")

    by_object = await Echo.start(key="x", engine=a)
    by_name = await Echo.start(key="y", engine="route-b")
    await asyncio.gather(a.drain(), b.drain())

    assert await Echo.result("x", timeout=5, engine="route-a") == {"engine": "route-a"}
    assert await Echo.result("y", timeout=5, engine=b) == {"engine": "route-b"}
    assert (await Echo.get(by_object.id, engine=a)).status == "done"
    assert (await Echo.get("y", engine=b)).id == by_name.id
    with pytest.raises(gd.NoTarget):
        await Echo.get("y", engine=a)
    with pytest.raises(gd.NoEngine, match="route-c"):
        await Echo.get("x", engine="route-c")
    keys_a = await db.fetch(f'SELECT key FROM "{gendurable_schema}".instances')
    keys_b = await db.fetch(f'SELECT key FROM "{other_schema}".instances')
    assert [r["key"] for r in keys_a] == ["x"]
    assert [r["key"] for r in keys_b] == ["y"]
