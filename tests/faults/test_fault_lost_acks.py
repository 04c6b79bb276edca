"""Connections lost after the server committed: the work is durable, the answer is lost.

The engine connects through a `FaultProxy` that lets a statement's transaction commit on the
server and then drops the answer and the connection. The engine retries what is safe to
repeat; a repeat must find the work already done and change nothing (the guards), and
nothing the lost answer would have told may be stranded: a claim whose rows nobody runs
expires after its lease and the reaper hands them out again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from fault_proxy import FaultProxy
from fault_support import Engines, Rows, eventually

import gendurable as gd
from gendurable.sql import statements
from gendurable.testing import TelemetryRecorder
from recordings import Gate, recorded

pytestmark = pytest.mark.crash

RUNS: list[tuple[str, str, int]] = recorded([])
"""(key, step, attempt) of every step body that ran."""
HELD: list[str] = recorded([])
GATE = Gate()
HANDLED: list[str] = recorded([])


def ran(ctx: gd.Context, step: str) -> None:
    RUNS.append((ctx.key or f"#{ctx.id}", step, ctx.attempt))


@gd.workflow(name="acks.long")
class Long:
    """Runs until the test opens the gate: keeps the scheduler's heartbeat busy."""

    @gd.step(start=True)
    async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        assert ctx.key is not None
        HELD.append(ctx.key)
        await GATE.wait()
        ran(ctx, "only")
        return gd.done()


@gd.workflow(name="acks.quick")
class Quick:
    @gd.step(start=True)
    async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        ran(ctx, "only")
        return gd.done(ctx.key)


class Tally(msgspec.Struct):
    n: int = 0


@gd.workflow(name="acks.steps")
class Steps:
    """`one` chains into `two` on its claim (a continue), `two` finishes."""

    State = Tally

    @gd.step(start=True)
    async def one(self, state: Tally, ctx: gd.Context) -> gd.Outcome:
        ran(ctx, "one")
        state.n += 1
        return gd.goto(self.two)

    @gd.step
    async def two(self, state: Tally, ctx: gd.Context) -> gd.Outcome:
        ran(ctx, "two")
        state.n += 1
        return gd.done(state.n)


@gd.workflow(name="acks.parker")
class Parker:
    @gd.step(start=True)
    async def one(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        ran(ctx, "one")
        return gd.goto(self.wait)

    @gd.step
    @gd.await_signals("go")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        ran(ctx, "wait")
        return gd.done([s.payload for s in ctx.awaited])


@gd.workflow(name="acks.child")
class Child:
    @gd.step(start=True)
    async def work(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        ran(ctx, "work")
        return gd.done(ctx.key)


@gd.workflow(name="acks.parent")
class Parent:
    @gd.step(start=True)
    async def fan_out(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        ran(ctx, "fan_out")
        keyed = [Child.new(key=f"{ctx.key}-c{n}") for n in range(3)]
        return gd.spawn([*keyed, Child.new()], then=self.join)

    @gd.step
    async def join(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        ran(ctx, "join")
        return gd.done(len(ctx.children))

    async def handle(self, error: Exception, state: Any, ctx: gd.Context) -> gd.Outcome:
        HANDLED.append(f"{type(error).__name__}: {error}")
        return gd.retry()


def fast(**options: Any) -> dict[str, Any]:
    """Engine options for quick leases and polls."""
    return {
        "lease": timedelta(seconds=2),
        "reap_interval": timedelta(seconds=0.2),
        "poll_interval": timedelta(seconds=0.2),
        **options,
    }


async def test_fault_lost_claim_answer_rows_expire_and_are_rescued_while_others_run(
    engines: Engines, proxy: FaultProxy, gendurable_schema: str, db: asyncpg.Connection
) -> None:
    worker = await engines(workflows=[Long, Quick], queues={"default": 4}, dsn=proxy.dsn, **fast())
    client = await engines(workflows=[Long, Quick])
    await Long.start(key="long", engine=client)

    async def long_runs() -> bool:
        return HELD == ["long"]

    await eventually(long_runs, what="the long step running")
    # plain rows: claimed by the lean claim
    cut = proxy.cut(statements(gendurable_schema)["instance_claim_lean"].sql)
    await Quick.start_many([Quick.new(key=k) for k in ("a", "b")], engine=client)
    await cut.event.wait()

    # The claim committed (a and b are executing, claimed by this worker) but the worker
    # never heard of it: nobody runs them. The heartbeat, which keeps the long step's claim,
    # must not keep theirs: they expire and are rescued while the long step still runs.
    results = [await Quick.result(k, timeout=15, engine=client) for k in ("a", "b")]
    assert results == ["a", "b"]
    assert HELD == ["long"]
    assert ("long", "only", 0) not in RUNS  # the long step still runs
    rows = {r["key"]: r for r in await Rows(db, gendurable_schema).all()}
    assert [(rows[k]["attempt"], rows[k]["rescued"]) for k in ("a", "b")] == [(1, 1), (1, 1)]
    assert sorted(RUNS) == [("a", "only", 1), ("b", "only", 1)]  # never run by the lost claim
    GATE.set()
    await Long.result("long", timeout=15, engine=client)
    assert worker.schedulers["default"].claimed_total >= 3


async def test_fault_lost_group_commit_answer_is_retried_and_applied_once(
    engines: Engines, proxy: FaultProxy, gendurable_schema: str, db: asyncpg.Connection
) -> None:
    worker = await engines(workflows=[Steps], queues={"default": 4}, dsn=proxy.dsn, start=False)
    events = TelemetryRecorder().attach(worker)
    await worker.start()
    client = await engines(workflows=[Steps])
    # The first cut hits `one`'s continue (the claim is kept, so the repeat matches and
    # writes the same values again); the second lets that repeat through and hits `two`'s
    # finish (its repeat finds the row done: nothing changes, and it is reported stale).
    # Both are plain outcomes: their batches go through `outcome_plain`.
    sql = statements(gendurable_schema)["outcome_plain"].sql
    cuts = [proxy.cut(sql), proxy.cut(sql, skip=1)]
    await Steps.start(key="s", engine=client)

    assert await Steps.result("s", timeout=15, engine=client) == 2
    await events.wait(("outcome", "stale"))  # the repeat of the finish, after the result
    assert [len(c.fired) for c in cuts] == [1, 1]
    assert RUNS == [("s", "one", 0), ("s", "two", 0)]
    [row] = await Rows(db, gendurable_schema).all()
    assert (row["status"], row["attempt"], row["rescued"], row["locked_by"]) == ("done", 0, 0, None)
    assert row["state"] == '{"n": 2}'
    assert [e["decision"] for e in events.of(("outcome", "stale"))] == ["Finish"]


async def test_fault_lost_park_answer_parks_once_and_a_signal_wakes_it(
    engines: Engines, proxy: FaultProxy, gendurable_schema: str, db: asyncpg.Connection
) -> None:
    await engines(workflows=[Parker], queues={"default": 4}, dsn=proxy.dsn)
    client = await engines(workflows=[Parker])
    cut = proxy.cut(statements(gendurable_schema)["outcome_batch"].sql)  # the park's commit
    await Parker.start(key="p", engine=client)
    await cut.event.wait()

    async def parked() -> bool:
        return (await Parker.get("p", engine=client)).status == "awaiting"

    await eventually(parked, what="the instance parked")
    await Parker.signal("p", "go", 1, engine=client)

    assert await Parker.result("p", timeout=15, engine=client) == [1]
    assert RUNS == [("p", "one", 0), ("p", "wait", 0)]
    assert await Rows(db, gendurable_schema).signals() == []


async def test_fault_lost_spawn_answer_is_stale_not_a_duplicate_key(
    engines: Engines, proxy: FaultProxy, gendurable_schema: str, db: asyncpg.Connection
) -> None:
    worker = await engines(
        workflows=[Parent, Child], queues={"default": 4}, dsn=proxy.dsn, start=False
    )
    events = TelemetryRecorder().attach(worker)
    await worker.start()
    client = await engines(workflows=[Parent, Child])
    cut = proxy.cut(statements(gendurable_schema)["outcome_spawn"].sql)
    handle = await Parent.start(key="p", engine=client)

    assert await Parent.result("p", timeout=15, engine=client) == 4
    await events.wait(("outcome", "stale"))  # the repeat may come after the result
    assert len(cut.fired) == 1
    # The repeat met the children its own first attempt inserted: that is a lost answer,
    # not a key held by someone else; the workflow's handler never hears of it.
    assert HANDLED == []
    assert [e["decision"] for e in events.of(("outcome", "stale"))] == ["SpawnChildren"]
    rows = await Rows(db, gendurable_schema).all()
    children = [r for r in rows if r["parent_id"] == handle.id]
    assert sorted(r["key"] or "" for r in children) == ["", "p-c0", "p-c1", "p-c2"]
    assert sorted(s for _, s, _ in RUNS) == ["fan_out", "join", "work", "work", "work", "work"]


async def test_fault_lost_signal_answer_raises_although_the_signal_was_stored(
    engines: Engines, proxy: FaultProxy, gendurable_schema: str, db: asyncpg.Connection
) -> None:
    await engines(workflows=[Parker], queues={"default": 4})
    client = await engines(workflows=[Parker], dsn=proxy.dsn)
    await Parker.start(key="p", engine=client)

    async def parked() -> bool:
        return (await Parker.get("p", engine=client)).status == "awaiting"

    await eventually(parked, what="the instance parked")
    proxy.cut(statements(gendurable_schema)["signal_deliver"].sql)

    # A signal is not repeated once sent (a repeat could deliver it twice): the caller
    # gets the connection error, and the signal may have been stored, as here.
    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        await Parker.signal("p", "go", "once", engine=client)

    assert await Parker.result("p", timeout=15, engine=client) == ["once"]


async def test_fault_lost_answer_of_a_signal_with_an_idempotency_key_is_asked_again(
    engines: Engines, proxy: FaultProxy, gendurable_schema: str, db: asyncpg.Connection
) -> None:
    # With an idempotency key a delivery is safe to repeat: the store sends it again after
    # the lost answer, the repeat finds the key, and the caller gets the stored signal's id.
    await engines(workflows=[Parker], queues={"default": 4})
    client = await engines(workflows=[Parker], dsn=proxy.dsn)
    await Parker.start(key="p", engine=client)

    async def parked() -> bool:
        return (await Parker.get("p", engine=client)).status == "awaiting"

    await eventually(parked, what="the instance parked")
    fault = proxy.cut(statements(gendurable_schema)["signal_deliver"].sql)

    sent = await Parker.signal("p", "go", "once", idempotency_key="k", engine=client)

    assert fault.event.is_set()
    assert await Parker.result("p", timeout=15, engine=client) == ["once"]
    stored = await db.fetchval(
        f'SELECT signal_id FROM "{gendurable_schema}".signal_keys WHERE idempotency_key = $1',
        "k",
    )
    assert sent == stored


async def test_fault_lost_start_answer_raises_and_starting_the_key_again_returns_it(
    engines: Engines, proxy: FaultProxy, gendurable_schema: str, db: asyncpg.Connection
) -> None:
    client = await engines(workflows=[Quick], dsn=proxy.dsn)
    proxy.cut(statements(gendurable_schema)["instance_insert"].sql)

    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        await Quick.start(key="k", engine=client)
    again = await Quick.start(key="k", engine=client)

    assert again.created is False
    assert await Rows(db, gendurable_schema).count() == 1


async def test_fault_lost_before_sending_a_signal_stores_nothing(
    engines: Engines, proxy: FaultProxy, gendurable_schema: str, db: asyncpg.Connection
) -> None:
    await engines(workflows=[Parker], queues={"default": 4})
    client = await engines(workflows=[Parker], dsn=proxy.dsn)
    await Parker.start(key="p", engine=client)

    async def parked() -> bool:
        return (await Parker.get("p", engine=client)).status == "awaiting"

    await eventually(parked, what="the instance parked")
    proxy.cut(statements(gendurable_schema)["signal_deliver"].sql, after_commit=False)

    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        await Parker.signal("p", "go", "lost", engine=client)
    assert await Rows(db, gendurable_schema).signals() == []
    await Parker.signal("p", "go", "resent", engine=client)

    assert await Parker.result("p", timeout=15, engine=client) == ["resent"]


CHILD_GATE = Gate()


@gd.workflow(name="acks.slow_child")
class SlowChild:
    @gd.step(start=True)
    async def work(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        await CHILD_GATE.wait()
        ran(ctx, "work")
        return gd.done(ctx.key)


@gd.workflow(name="acks.slow_parent")
class SlowParent:
    @gd.step(start=True)
    async def fan_out(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        ran(ctx, "fan_out")
        return gd.spawn([SlowChild.new(key=f"{ctx.key}-c{n}") for n in range(2)], then=self.join)

    @gd.step
    async def join(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        ran(ctx, "join")
        return gd.done(sorted(c.result for c in ctx.children))

    async def handle(self, error: Exception, state: Any, ctx: gd.Context) -> gd.Outcome:
        HANDLED.append(f"{type(error).__name__}: {error}")
        return gd.retry()


async def test_fault_lost_spawn_answer_with_children_still_live_is_stale_not_a_duplicate(
    engines: Engines, proxy: FaultProxy, gendurable_schema: str, db: asyncpg.Connection
) -> None:
    worker = await engines(
        workflows=[SlowParent, SlowChild], queues={"default": 4}, dsn=proxy.dsn, start=False
    )
    events = TelemetryRecorder().attach(worker)
    await worker.start()
    client = await engines(workflows=[SlowParent, SlowChild])
    cut = proxy.cut(statements(gendurable_schema)["outcome_spawn"].sql)
    await SlowParent.start(key="p", engine=client)
    await cut.event.wait()
    # The repeat finds the children of its own first attempt holding their keys: the claim
    # is gone, so that is a stale outcome, not a key conflict for the workflow's handler.
    await events.wait(("outcome", "stale"), timeout=15)
    CHILD_GATE.set()

    assert await SlowParent.result("p", timeout=15, engine=client) == ["p-c0", "p-c1"]
    assert HANDLED == []
    assert [e["decision"] for e in events.of(("outcome", "stale"))] == ["SpawnChildren"]
    assert sorted(s for _, s, _ in RUNS) == ["fan_out", "join", "work", "work"]
    assert await Rows(db, gendurable_schema).count() == 3


@gd.workflow(name="acks.retrier")
class Retrier:
    """Asks for a retry at once on its first attempt; the second waits at the gate."""

    @gd.step(start=True)
    async def one(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        ran(ctx, "one")
        if ctx.attempt == 0:
            return gd.retry(delay=timedelta(0))
        assert ctx.key is not None
        HELD.append(ctx.key)
        await GATE.wait()
        return gd.done(ctx.attempt)


async def test_fault_lost_commit_answer_repeated_after_the_same_worker_claimed_again_is_stale(
    engines: Engines, proxy: FaultProxy, gendurable_schema: str, db: asyncpg.Connection
) -> None:
    worker = await engines(
        workflows=[Retrier], queues={"default": 4}, dsn=proxy.dsn, start=False, **fast()
    )
    events = TelemetryRecorder().attach(worker)
    await worker.start()
    client = await engines(workflows=[Retrier])
    sql = statements(gendurable_schema)["outcome_batch"].sql
    cut = proxy.cut(sql)
    repeat = proxy.pause(sql, skip=1)  # the repeat of the cut commit waits here
    await Retrier.start(key="r", engine=client)
    await repeat.reached.wait()

    # The retry committed (attempt 1, available); the same scheduler claims it again and
    # runs attempt 1, while the repeat of the first commit is still on its way.
    async def claimed_again() -> bool:
        return HELD == ["r"]

    await eventually(claimed_again, what="attempt 1 running on the same worker")
    repeat.released.set()
    await events.wait(("outcome", "stale"), timeout=15)  # the repeat belongs to a past claim
    GATE.set()

    assert await Retrier.result("r", timeout=15, engine=client) == 1
    assert len(cut.fired) == 1
    assert RUNS == [("r", "one", 0), ("r", "one", 1)]
    [row] = await Rows(db, gendurable_schema).all()
    assert (row["attempt"], row["rescued"]) == (1, 0)
