"""Work that runs where it is made: local starts, signals that claim what they wake, the poller.

A start made by an engine that runs the queue (with a free slot, while the queue is drained)
inserts its row already claimed and runs it with no claim statement; a signal that wakes an
instance of a local queue claims it in the delivery statement. Both are counted here by
wrapping the store's claim, and their limits (delays, awaits, rate limits, concurrency keys,
a queue with due rows waiting) send the row through the queue instead.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec

import gendurable as gd
from gendurable.engine.poller import Poller
from gendurable.sql import Statement
from gendurable.testing import MakeEngine, RecorderFactory
from recordings import recorded

ran: list[tuple[str, str, int]] = recorded([])
inboxes: list[list[Any]] = recorded([])


@gd.workflow(name="local.plain")
class Plain:
    class State(msgspec.Struct):
        n: int = 0

    @gd.step(start=True)
    async def first(self, state: State, ctx: gd.Context) -> gd.Outcome:
        ran.append(("first", ctx.key or "", ctx.attempt))
        return gd.goto(self.second)

    @gd.step
    async def second(self, state: State, ctx: gd.Context) -> gd.Outcome:
        ran.append(("second", ctx.key or "", ctx.attempt))
        return gd.done(state.n)


@gd.workflow(name="local.waiter")
class Waiter:
    @gd.step(start=True)
    @gd.await_signals("go", "note")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        inboxes.append([(s.name, s.payload) for s in ctx.inbox])
        if not any(s.name == "go" for s in ctx.awaited):
            return gd.reawait()
        return gd.goto(self.after)

    @gd.step
    async def after(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done("went")


class Claims:
    """Counts the rows the engine's claims took."""

    def __init__(self, engine: gd.Engine) -> None:
        self.rows = 0
        self.calls = 0
        self.taken: list[tuple[str, str]] = []
        store = engine.store
        claim = store.instance_claim

        async def counted(*args: Any, **kwargs: Any) -> Any:
            rows = await claim(*args, **kwargs)
            self.calls += 1
            self.rows += sum(1 for r in rows if r.go)
            self.taken += [(r.key, r.step) for r in rows if r.go]
            return rows

        store.instance_claim = counted  # type: ignore[method-assign]


async def settled(engine: gd.Engine) -> None:
    # The loop's first claim (it plans the statement) is over before counting starts.
    await engine.drain()


async def test_a_local_start_runs_without_a_claim(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Plain], local_starts=True)
    await settled(engine)
    claims = Claims(engine)

    handle = await Plain.start(key="p", state=Plain.State(n=7))
    assert await Plain.result(handle.id, timeout=10) == 7

    assert claims.rows == 0
    assert ran == [("first", "p", 0), ("second", "p", 0)]
    row = await db.fetchrow(
        f'SELECT status::text AS status, locked_by FROM "{gendurable_schema}".instances '
        "WHERE id = $1",
        handle.id,
    )
    assert dict(row) == {"status": "done", "locked_by": None}


async def test_a_start_goes_through_the_queue_when_it_cannot_run_at_once(
    make_engine: MakeEngine, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=[Plain, Waiter], local_starts=True)
    await settled(engine)
    claims = Claims(engine)

    delayed = await Plain.start(key="later", delay=timedelta(minutes=1))
    await Waiter.start(key="awaits")  # an awaiting start step parks through the claim
    await engine.drain()  # parked before the clock moves past its claim's lease
    manual_clock.advance(timedelta(minutes=1))
    await engine.drain()

    assert (await Plain.get(delayed.id)).status == "done"
    assert (await Waiter.get("awaits")).status == "awaiting"
    assert sorted(claims.taken) == [("awaits", "wait"), ("later", "first")], claims.taken


async def test_local_starts_wait_behind_due_rows_of_a_busy_queue(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[Plain], queues={"default": 1}, local_starts=True)
    scheduler = engine.schedulers["default"]
    await settled(engine)
    scheduler.stop_claiming()
    await Plain.start_many([Plain.new(key=f"queued-{i}") for i in range(3)])
    scheduler.claiming = True
    # One claim fills the one slot and leaves two due rows: the queue is not drained, so a
    # new start must not overtake them.
    assert await scheduler.run_once() == 1
    assert scheduler.drained is False
    await Plain.start(key="newcomer")
    scheduler.resume_claiming()
    await engine.drain()

    firsts = [key for step, key, _ in ran if step == "first"]
    assert firsts.index("newcomer") == 3


async def test_local_starts_are_off_under_a_manual_clock_unless_asked(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[Plain])
    await settled(engine)
    claims = Claims(engine)

    handle = await Plain.start(key="p")
    await engine.drain()

    assert (await Plain.get(handle.id)).status == "done"
    assert claims.rows == 1


async def test_a_signal_claims_what_it_wakes_and_brings_the_whole_inbox(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[Waiter], local_starts=True)
    handle = await Waiter.start(key="w")
    await engine.drain()
    claims = Claims(engine)

    await Waiter.signal("w", "note", {"n": 1})  # wakes it: note is awaited, no go yet
    await engine.drain()
    await Waiter.signal("w", "go", {"n": 2})

    assert await Waiter.result(handle.id, timeout=10) == "went"
    assert claims.rows == 0
    # The first wake saw the note; the second saw the note (kept by reawait) and go.
    assert inboxes == [[("note", {"n": 1})], [("note", {"n": 1}), ("go", {"n": 2})]]


@gd.workflow(name="local.keyed")
class Keyed:
    @gd.step(start=True)
    @gd.await_signals("go")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done(ctx.key)


async def test_a_signal_to_a_keyed_instance_leaves_it_to_the_claim(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[Keyed], local_starts=True)
    handle = await Keyed.start(key="k", concurrency_key="one-at-a-time")
    await engine.drain()
    claims = Claims(engine)

    await Keyed.signal("k", "go")
    await engine.drain()

    assert await Keyed.result(handle.id, timeout=10) == "k"
    assert claims.rows == 1


async def test_the_poller_wakes_only_queues_with_due_rows(
    make_engine: MakeEngine, manual_clock: gd.ManualClock, recorder: RecorderFactory
) -> None:
    engine = await make_engine(
        workflows=[Plain], queues={"default": 2, "other": 2}, local_starts=False
    )
    await settled(engine)
    poller = Poller(engine.store, manual_clock, engine.schedulers)
    await Plain.start(key="soon", delay=timedelta(seconds=30))

    assert await poller.run_once() == []
    manual_clock.advance(timedelta(seconds=30))
    rec = recorder(engine)
    assert await poller.run_once() == ["default"]
    await rec.wait(("step", "stop"), count=2)
    assert [key for _, key, _ in ran] == ["soon", "soon"]


async def test_an_idle_engine_polls_once_per_interval_for_all_its_queues(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(
        workflows=[Plain],
        queues={"a": 1, "b": 1, "c": 1, "d": 1},
        poll_interval=timedelta(milliseconds=50),
    )
    counts: dict[str, int] = {}
    db = engine.store.db
    run = db._run

    async def counted(method: str, statement: Statement, args: tuple[Any, ...]) -> Any:
        counts[statement.name] = counts.get(statement.name, 0) + 1
        return await run(method, statement, args)

    db._run = counted  # type: ignore[method-assign]
    async with asyncio.timeout(10):
        while counts.get("queues_due", 0) < 6:  # noqa: ASYNC110 (counting what a loop sends)
            await asyncio.sleep(0.05)

    assert counts.get("instance_claim", 0) == counts.get("instance_claim_lean", 0) == 0
