"""Connections dropped server-side (`pg_terminate_backend`) in the middle of each write.

Each test holds the statement with a lock taken from another connection, so that it is
running (blocked) on the server when its backend is terminated; the transaction is then
rolled back. The engine must retry what is safe to repeat and end every instance exactly as
if nothing had happened: each outcome committed once, each step run once, no row left
executing, no signal or child lost or doubled. A signal is not safe to repeat: its caller
gets the connection error, nothing is stored, and sending again delivers it once.
"""

from __future__ import annotations

import asyncio
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
    plain_commits_blocked,
    store_warnings,
)

import gendurable as gd
from gendurable.sql import statements
from recordings import Gate, recorded

pytestmark = pytest.mark.crash

RUNS: list[tuple[str, str]] = recorded([])
"""(key, step) of every step body that ran to its end."""
HELD: list[str] = recorded([])
"""Keys whose step waits at the gate."""
GATE = Gate()


async def at_gate(key: str | None) -> None:
    assert key is not None
    HELD.append(key)
    await GATE.wait()


@gd.workflow(name="drops.limited")
class Limited:
    """One rate-limited step: its claim takes the rate bucket lock."""

    @gd.step(start=True, rate_limit="drops.generous")
    async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        assert ctx.key is not None
        RUNS.append((ctx.key, "only"))
        return gd.done(ctx.key)


class Tally(msgspec.Struct):
    n: int = 0


@gd.workflow(name="drops.two_steps")
class TwoSteps:
    State = Tally

    @gd.step(start=True)
    async def one(self, state: Tally, ctx: gd.Context) -> gd.Outcome:
        await at_gate(ctx.key)
        assert ctx.key is not None
        RUNS.append((ctx.key, "one"))
        state.n += 1
        return gd.goto(self.two)

    @gd.step
    async def two(self, state: Tally, ctx: gd.Context) -> gd.Outcome:
        assert ctx.key is not None
        RUNS.append((ctx.key, "two"))
        state.n += 1
        return gd.done(state.n)


@gd.workflow(name="drops.parker")
class Parker:
    State = Tally

    @gd.step(start=True)
    async def one(self, state: Tally, ctx: gd.Context) -> gd.Outcome:
        await at_gate(ctx.key)
        assert ctx.key is not None
        RUNS.append((ctx.key, "one"))
        state.n += 1
        return gd.goto(self.wait)

    @gd.step
    @gd.await_signals("go")
    async def wait(self, state: Tally, ctx: gd.Context) -> gd.Outcome:
        assert ctx.key is not None
        RUNS.append((ctx.key, "wait"))
        return gd.done({"n": state.n, "got": [s.payload for s in ctx.awaited]})


@gd.workflow(name="drops.child")
class Child:
    class State(msgspec.Struct):
        n: int

    @gd.step(start=True)
    async def work(self, state: State, ctx: gd.Context) -> gd.Outcome:
        RUNS.append((ctx.key or f"#{ctx.id}", "work"))
        return gd.done(state.n * 10)


@gd.workflow(name="drops.parent")
class Parent:
    @gd.step(start=True)
    async def fan_out(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        await at_gate(ctx.key)
        assert ctx.key is not None
        RUNS.append((ctx.key, "fan_out"))
        keyed = [Child.new(key=f"{ctx.key}-c{n}", state=Child.State(n=n)) for n in range(3)]
        unkeyed = [Child.new(state=Child.State(n=n)) for n in (3, 4)]
        return gd.spawn(keyed + unkeyed, then=self.join)

    @gd.step
    async def join(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        assert ctx.key is not None
        RUNS.append((ctx.key, "join"))
        return gd.done(sorted(c.result for c in ctx.children))


async def kill_while_blocked(backends: Backends, sql: str, *, count: int = 1) -> None:
    """Terminate the backends blocked in `sql`, then wait until the engine sent it again
    (blocked once more, since the lock is still held)."""
    pids = await backends.wait_running(sql, count=count)
    await backends.terminate(*pids)

    async def again() -> bool:
        return bool(set(await backends.running(sql)) - set(pids))

    await eventually(again, what="the statement sent again after its backend was killed")


def assert_settled(rows: list[asyncpg.Record]) -> None:
    """Every instance ended done, with no claim left and no attempt or rescue used."""
    assert {r["status"] for r in rows} == {"done"}, rows
    assert {r["locked_by"] for r in rows} == {None}
    assert {(r["attempt"], r["rescued"]) for r in rows} == {(0, 0)}


async def test_fault_drop_during_a_claim_retries_the_claim_and_runs_each_step_once(
    engines: Engines,
    gendurable_dsn: str,
    gendurable_schema: str,
    backends: Backends,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    limits = {"drops.generous": gd.Limit(1000, per=timedelta(seconds=1))}
    worker = await engines(workflows=[Limited], queues={"default": 8}, rate_limits=limits)
    sql = statements(gendurable_schema)
    # The claim locks the rate bucket rows after picking its instances: holding the bucket
    # table keeps it running on the server, its instances locked.
    async with holding(gendurable_dsn, f'LOCK TABLE "{gendurable_schema}".rate_buckets'):
        await Limited.start_many([Limited.new(key=f"k{i}") for i in range(6)], engine=worker)
        await kill_while_blocked(backends, sql["instance_claim"].sql)
        assert await Rows(db, gendurable_schema).count("status = 'executing'") == 0

    async def all_done() -> bool:
        return await Rows(db, gendurable_schema).count("status = 'done'") == 6

    await eventually(all_done, what="every instance done")
    assert_settled(await Rows(db, gendurable_schema).all())
    assert sorted(RUNS) == sorted((f"k{i}", "only") for i in range(6))
    warnings = store_warnings(caplog)
    assert any("administrator command" in m for m in warnings), warnings


async def test_fault_drop_during_a_group_commit_commits_every_outcome_of_the_batch_once(
    engines: Engines,
    gendurable_dsn: str,
    gendurable_schema: str,
    backends: Backends,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = await engines(workflows=[TwoSteps], queues={"default": 8})
    sql = statements(gendurable_schema)
    keys = [f"k{i}" for i in range(6)]
    await TwoSteps.start_many([TwoSteps.new(key=k) for k in keys], engine=worker)

    async def all_held() -> bool:
        return len(HELD) == len(keys)

    await eventually(all_held, what="every first step at the gate")
    # Group commits skip locked rows (and send those outcomes again), so what holds them is
    # a table lock: these steps go on, so their batches are plain ones (`outcome_plain`),
    # which write `instances` only.
    async with holding(gendurable_dsn, plain_commits_blocked(gendurable_schema)):
        GATE.set()  # the steps end; their outcomes meet the lock in one or two batches
        await kill_while_blocked(backends, sql["outcome_plain"].sql)
    await asyncio.gather(*(TwoSteps.result(k, timeout=15, engine=worker) for k in keys))

    found = await Rows(db, gendurable_schema).all()
    assert_settled(found)
    assert [r["result"] for r in found] == ["2"] * len(keys)  # each step's effect once
    assert sorted(RUNS) == sorted([(k, "one") for k in keys] + [(k, "two") for k in keys])
    warnings = store_warnings(caplog)
    assert any("administrator command" in m for m in warnings), warnings


async def test_fault_drop_during_a_park_parks_once_and_a_racing_signal_still_wakes_it(
    engines: Engines,
    gendurable_dsn: str,
    gendurable_schema: str,
    backends: Backends,
    db: asyncpg.Connection,
) -> None:
    worker = await engines(workflows=[Parker], queues={"default": 4})
    client = await engines(workflows=[Parker])
    sql = statements(gendurable_schema)
    await Parker.start_many([Parker.new(key=k) for k in ("racing", "later")], engine=worker)

    async def both_held() -> bool:
        return len(HELD) == 2

    await eventually(both_held, what="both first steps at the gate")
    async with holding(gendurable_dsn, commits_blocked(gendurable_schema)):
        GATE.set()
        # Parks are group-committed: both may ride in one batch, or in two.
        await kill_while_blocked(backends, sql["outcome_batch"].sql, count=1)
        # A signal sent now waits for the same lock as the park sent again.
        racing = asyncio.create_task(Parker.signal("racing", "go", "early", engine=client))
        await backends.wait_running(sql["signal_deliver"].sql)
    await racing

    async def later_parked() -> bool:
        info = await Parker.get("later", engine=client)
        return info.status == "awaiting"

    await eventually(later_parked, what="the other instance parked")
    await Parker.signal("later", "go", "late", engine=client)
    results = [await Parker.result(k, timeout=15, engine=client) for k in ("racing", "later")]

    assert results == [{"n": 1, "got": ["early"]}, {"n": 1, "got": ["late"]}]
    assert_settled(await Rows(db, gendurable_schema).all())
    assert await Rows(db, gendurable_schema).signals() == []
    assert sorted(RUNS) == sorted(
        [("racing", "one"), ("racing", "wait"), ("later", "one"), ("later", "wait")]
    )


async def test_fault_drop_during_a_signal_raises_stores_nothing_and_a_resend_lands_once(
    engines: Engines,
    gendurable_dsn: str,
    gendurable_schema: str,
    backends: Backends,
    db: asyncpg.Connection,
) -> None:
    worker = await engines(workflows=[Parker], queues={"default": 4})
    client = await engines(workflows=[Parker])
    sql = statements(gendurable_schema)
    GATE.set()
    await Parker.start(key="p", engine=worker)

    async def parked() -> bool:
        return (await Parker.get("p", engine=client)).status == "awaiting"

    await eventually(parked, what="the instance parked")
    rows = f'SELECT id FROM "{gendurable_schema}".instances ORDER BY id FOR UPDATE'
    async with holding(gendurable_dsn, rows):
        sending = asyncio.create_task(Parker.signal("p", "go", "first", engine=client))
        pids = await backends.wait_running(sql["signal_deliver"].sql)
        await backends.terminate(*pids)
        # Sent and then cut: it may have been stored, so it is not sent again blindly.
        with pytest.raises(asyncpg.ConnectionDoesNotExistError, match="administrator command"):
            await sending
    assert await Rows(db, gendurable_schema).signals() == []
    assert (await Parker.get("p", engine=client)).status == "awaiting"

    await Parker.signal("p", "go", "again", engine=client)

    assert await Parker.result("p", timeout=15, engine=client) == {"n": 1, "got": ["again"]}
    assert await Rows(db, gendurable_schema).signals() == []
    assert RUNS == [("p", "one"), ("p", "wait")]


async def test_fault_drop_during_a_spawn_inserts_every_child_once(
    engines: Engines,
    gendurable_dsn: str,
    gendurable_schema: str,
    backends: Backends,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = await engines(workflows=[Parent, Child], queues={"default": 8})
    sql = statements(gendurable_schema)
    handle = await Parent.start(key="p", engine=worker)

    async def held() -> bool:
        return HELD == ["p"]

    await eventually(held, what="the parent at the gate")
    parent = f'SELECT id FROM "{gendurable_schema}".instances WHERE id = $1 FOR UPDATE'
    async with holding(gendurable_dsn, parent, args=(handle.id,)):
        GATE.set()
        # The children are inserted first (key locks), then the parent's update waits.
        await kill_while_blocked(backends, sql["outcome_spawn"].sql)

    assert await Parent.result("p", timeout=15, engine=worker) == [0, 10, 20, 30, 40]
    found = await Rows(db, gendurable_schema).all()
    assert_settled(found)
    children = [r for r in found if r["parent_id"] == handle.id]
    assert sorted(r["key"] or "" for r in children) == ["", "", "p-c0", "p-c1", "p-c2"]
    assert sorted(RUNS) == sorted(
        [("p", "fan_out"), ("p", "join")] + [(r["key"] or f"#{r['id']}", "work") for r in children]
    )
    warnings = store_warnings(caplog)
    assert any("administrator command" in m for m in warnings), warnings
