"""Statement timeouts: a statement held by a lock longer than `Engine(statement_timeout=)`.

The call is given up after the timeout and the statement is cancelled on the server (its
transaction rolled back). A statement safe to repeat (a commit guarded by ownership) is
sent again until it gets through, and commits once; a start or a signal raises
`TimeoutError` to its caller, having written nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from fault_support import (
    Backends,
    Engines,
    Rows,
    commits_blocked,
    eventually,
    holding,
    store_warnings,
)

import gendurable as gd
from gendurable.sql import statements
from recordings import Gate, recorded

TIMEOUT = timedelta(seconds=0.5)
RUNS: list[tuple[str, str]] = recorded([])
HELD: list[str] = recorded([])
GATE = Gate()


class Tally(msgspec.Struct):
    n: int = 0


@gd.workflow(name="timeouts.steps")
class Steps:
    State = Tally

    @gd.step(start=True)
    async def one(self, state: Tally, ctx: gd.Context) -> gd.Outcome:
        assert ctx.key is not None
        HELD.append(ctx.key)
        await GATE.wait()
        RUNS.append((ctx.key, "one"))
        state.n += 1
        return gd.goto(self.two)

    @gd.step
    async def two(self, state: Tally, ctx: gd.Context) -> gd.Outcome:
        assert ctx.key is not None
        RUNS.append((ctx.key, "two"))
        state.n += 1
        return gd.done(state.n)


@gd.workflow(name="timeouts.waiter")
class Waiter:
    @gd.step(start=True)
    @gd.await_signals("go")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done([s.payload for s in ctx.awaited])


async def test_fault_statement_timeout_on_a_held_commit_retries_until_it_commits_once(
    engines: Engines,
    gendurable_dsn: str,
    gendurable_schema: str,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = await engines(workflows=[Steps], queues={"default": 4}, statement_timeout=TIMEOUT)
    keys = ["a", "b", "c"]
    await Steps.start_many([Steps.new(key=k) for k in keys], engine=worker)

    async def all_held() -> bool:
        return len(HELD) == len(keys)

    await eventually(all_held, what="the first steps at the gate")
    async with holding(gendurable_dsn, commits_blocked(gendurable_schema)):
        GATE.set()

        async def timed_out_twice() -> bool:
            return sum("TimeoutError" in m for m in store_warnings(caplog)) >= 2

        await eventually(timed_out_twice, what="the held commit timing out twice")

    results = [await Steps.result(k, timeout=15, engine=worker) for k in keys]
    assert results == [2, 2, 2]
    found = await Rows(db, gendurable_schema).all()
    assert {(r["status"], r["attempt"], r["rescued"], r["locked_by"]) for r in found} == {
        ("done", 0, 0, None)
    }
    assert sorted(RUNS) == sorted([(k, "one") for k in keys] + [(k, "two") for k in keys])


async def wait_cancelled(backends: Backends, sql: str) -> None:
    """Wait until no backend runs `sql` any more: the timeout cancelled it on the server."""

    async def gone() -> bool:
        return await backends.running(sql, waiting=False) == []

    await eventually(gone, what="the timed-out statement cancelled on the server")


async def test_fault_statement_timeout_on_a_start_raises_and_writes_nothing(
    engines: Engines,
    gendurable_dsn: str,
    gendurable_schema: str,
    backends: Backends,
    db: asyncpg.Connection,
) -> None:
    client = await engines(workflows=[Steps], statement_timeout=TIMEOUT)
    sql = statements(gendurable_schema)
    async with holding(
        gendurable_dsn, f'LOCK TABLE "{gendurable_schema}".instances IN EXCLUSIVE MODE'
    ):
        with pytest.raises(TimeoutError):
            await Steps.start(key="k", engine=client)
        with pytest.raises(TimeoutError):
            await Steps.start_many([Steps.new(key="m")], engine=client)
        await wait_cancelled(backends, sql["instance_insert"].sql)
        await wait_cancelled(backends, sql["instance_insert_many"].sql)
    assert await Rows(db, gendurable_schema).count() == 0

    handle = await Steps.start(key="k", engine=client)

    assert handle.created is True
    assert await Rows(db, gendurable_schema).count() == 1


async def test_fault_statement_timeout_on_a_signal_raises_and_stores_nothing(
    engines: Engines,
    gendurable_dsn: str,
    gendurable_schema: str,
    backends: Backends,
    db: asyncpg.Connection,
) -> None:
    await engines(workflows=[Waiter], queues={"default": 2})
    client = await engines(workflows=[Waiter], statement_timeout=TIMEOUT)
    handle = await Waiter.start(key="w", engine=client)

    async def parked() -> bool:
        return (await Waiter.get("w", engine=client)).status == "awaiting"

    await eventually(parked, what="the instance parked")
    row = f'SELECT id FROM "{gendurable_schema}".instances WHERE id = $1 FOR UPDATE'
    async with holding(gendurable_dsn, row, args=(handle.id,)):
        with pytest.raises(TimeoutError):
            await Waiter.signal("w", "go", "lost", engine=client)
        await wait_cancelled(backends, statements(gendurable_schema)["signal_deliver"].sql)
    assert await Rows(db, gendurable_schema).signals() == []
    assert (await Waiter.get("w", engine=client)).status == "awaiting"

    await Waiter.signal("w", "go", "kept", engine=client)

    assert await Waiter.result("w", timeout=15, engine=client) == ["kept"]
