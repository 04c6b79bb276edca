"""Durable queue pause, as engines see it: `engine.pause(queue)` and `resume(queue)`.

Engines on one schema run with the manual clock and `drain()`: a paused queue runs nothing,
whichever engine paused it and whether or not that engine runs the queue, across a restart;
what is written meanwhile (starts, signals, await timeouts) is stored and waits, saying
`paused`; a resume runs it all. The exactness of the pause against claims in flight is
tested statement by statement in `tests/db/test_pause_races.py`.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from gendurable.engine.poller import Poller
from gendurable.testing import MakeEngine, RecorderFactory
from recordings import recorded

ran: list[tuple[str, str]] = recorded([])
RUNNING: dict[str, asyncio.Event] = recorded({})
RELEASE: dict[str, asyncio.Event] = recorded({})


@gd.workflow(name="pause.mail", queue="mail")
class Mail:
    @gd.step(start=True)
    async def send(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        ran.append(("send", ctx.key or ""))
        return gd.done()


@gd.workflow(name="pause.other", queue="other")
class Other:
    @gd.step(start=True)
    async def work(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        ran.append(("work", ctx.key or ""))
        return gd.done()


@gd.workflow(name="pause.chain", queue="mail")
class Chain:
    """`first` waits for the test, then moves to `second` on the same queue."""

    @gd.step(start=True)
    async def first(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        assert ctx.key is not None
        ran.append(("first", ctx.key))
        RUNNING[ctx.key].set()
        await RELEASE[ctx.key].wait()
        return gd.goto(self.second)

    @gd.step
    async def second(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        ran.append(("second", ctx.key or ""))
        return gd.done()


@gd.workflow(name="pause.waiter", queue="mail")
class Waiter:
    @gd.step(start=True)
    @gd.await_signals("go", timeout=timedelta(hours=1))
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        ran.append(("wait", "timed out" if ctx.timed_out else ctx.awaited[0].name))
        return gd.done()


QUEUES = {"mail": 4, "other": 4}
FLOWS = [Mail, Other, Chain, Waiter]


async def statuses(db: asyncpg.Connection, schema: str) -> dict[str, str]:
    rows = await db.fetch(f'SELECT key, status::text AS status FROM "{schema}".instances')
    return {r["key"]: r["status"] for r in rows}


async def test_a_paused_queue_runs_nothing_until_resumed_and_other_queues_run_on(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=FLOWS, queues=QUEUES)
    assert await engine.pause("mail") is True
    for i in range(3):
        await Mail.start(key=f"m{i}")
    await Other.start(key="o")

    await engine.drain()

    assert ran == [("work", "o")]
    assert await statuses(db, gendurable_schema) == {
        "m0": "available", "m1": "available", "m2": "available", "o": "done",
    }  # fmt: skip
    assert await engine.resume("mail") is True
    await engine.drain()
    assert sorted(ran) == [("send", "m0"), ("send", "m1"), ("send", "m2"), ("work", "o")]


async def test_pause_and_resume_say_whether_they_changed_anything_and_keep_the_first_pause(
    make_engine: MakeEngine, recorder: RecorderFactory
) -> None:
    engine = await make_engine(workflows=FLOWS, queues=QUEUES)
    events = recorder(engine)
    assert engine.nodes is not None

    assert await engine.pause("mail") is True
    [first] = await engine.paused_queues()
    assert await engine.pause("mail", by="ops: incident 42") is False
    assert await engine.resume("other") is False

    assert await engine.paused_queues() == [first]
    assert first == gd.QueuePause("mail", engine.clock.now(), engine.nodes.id)
    assert await engine.resume("mail") is True
    assert await engine.resume("mail") is False
    assert await engine.paused_queues() == []
    await engine.pause("other", by="ops: incident 42")
    assert [(p.queue, p.paused_by) for p in await engine.paused_queues()] == [
        ("other", "ops: incident 42")
    ]
    assert events.of(("queue", "paused")) == [
        {"queue": "mail", "by": engine.nodes.id},
        {"queue": "other", "by": "ops: incident 42"},
    ]
    assert events.of(("queue", "resumed")) == [{"queue": "mail"}]


@pytest.mark.parametrize("queue", ["", None, 7, "a\x00b", "q" * 3000])
async def test_a_bad_queue_name_is_refused_and_nothing_is_written(
    make_engine: MakeEngine, queue: Any
) -> None:
    engine = await make_engine(workflows=FLOWS, queues=QUEUES)
    with pytest.raises(gd.ValidationError, match="queue"):
        await engine.pause(queue)
    with pytest.raises(gd.ValidationError, match="queue"):
        await engine.resume(queue)
    with pytest.raises(gd.ValidationError, match="by"):
        await engine.pause("mail", by="")
    assert await engine.paused_queues() == []


async def test_a_pause_outlives_the_engine_that_made_it(make_engine: MakeEngine) -> None:
    first = await make_engine(workflows=FLOWS, queues=QUEUES)
    await first.pause("mail")
    await Mail.start(key="m")
    await first.stop()

    second = await make_engine(workflows=FLOWS, queues=QUEUES)
    await second.drain()
    assert ran == []
    assert [p.queue for p in await second.paused_queues()] == ["mail"]

    await second.resume("mail")
    await second.drain()
    assert ran == [("send", "m")]


async def test_a_client_only_engine_pauses_a_queue_that_workers_then_leave_alone(
    make_engine: MakeEngine, manual_clock: gd.ManualClock
) -> None:
    worker = await make_engine(workflows=FLOWS, queues=QUEUES)
    client = await make_engine(workflows=FLOWS, queues=None)
    for i in range(2):  # due later: the worker's own loop cannot take them before the pause
        await Mail.start(key=f"m{i}", engine=client, delay=timedelta(minutes=1))

    await client.pause("mail")
    manual_clock.advance(timedelta(minutes=1))
    await worker.drain()
    assert ran == []

    await client.resume("mail")
    await worker.drain()
    assert sorted(ran) == [("send", "m0"), ("send", "m1")]


async def test_a_worker_hears_of_a_pause_at_once_and_of_the_resume_which_wakes_it(
    make_engine: MakeEngine,
) -> None:
    # Real time, and a poll an hour away: only notifications tell the worker anything.
    hour = timedelta(hours=1)
    worker = await make_engine(workflows=FLOWS, queues=QUEUES, clock=None, poll_interval=hour)
    pauser = await make_engine(workflows=FLOWS, queues=None, clock=None)
    scheduler = worker.schedulers["mail"]
    claims: list[str] = []
    claim = worker.store.instance_claim

    async def counted(**kwargs: Any) -> Any:
        claims.append(kwargs["queue"])
        return await claim(**kwargs)

    worker.store.instance_claim = counted  # type: ignore[method-assign]

    await pauser.pause("elsewhere")  # a queue it does not run: none of its business
    await pauser.pause("mail")
    async with asyncio.timeout(10):
        while "mail" not in scheduler.paused:  # noqa: ASYNC110 (no event for a notification)
            await asyncio.sleep(0.005)
    assert scheduler.paused == {"mail"}  # heard in order: "elsewhere" came first
    await Mail.start(key="m", engine=pauser)  # announced: the worker's loop wakes
    assert await scheduler.run_once() == 0
    assert "mail" not in claims  # it did not even try
    assert ran == []

    await pauser.resume("mail")
    assert await Mail.result("m", timeout=10, engine=pauser) is None
    assert ran == [("send", "m")]


async def test_an_engine_that_has_not_heard_of_a_pause_still_starts_nothing_locally(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    # Deaf (no LISTEN) and not polled: it believes the queue runs, tries to run a start and
    # a signal's wake at once, and the database says no to both.
    deaf = await make_engine(workflows=FLOWS, queues=QUEUES, listen=False, local_starts=True)
    other = await make_engine(workflows=FLOWS, queues=None)
    waiting = await Waiter.start(key="w", engine=other)
    await deaf.drain()

    await other.pause("mail")
    assert deaf.schedulers["mail"].paused == set()
    started = await Mail.start(key="m", engine=deaf)
    await Waiter.signal("w", "go", engine=deaf)
    await asyncio.gather(*(s.idle() for s in deaf.schedulers.values()))

    assert ran == []
    rows = await db.fetch(
        f'SELECT id, status::text AS status, locked_by FROM "{gendurable_schema}".instances '
        "ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [
        (waiting.id, "available", None), (started.id, "available", None),
    ]  # fmt: skip


async def test_an_engine_learns_the_pauses_at_start_and_drain_reads_them_again(
    make_engine: MakeEngine,
) -> None:
    other = await make_engine(workflows=FLOWS, queues=None)
    await other.pause("mail")
    await Mail.start(key="m", engine=other)
    deaf = await make_engine(workflows=FLOWS, queues=QUEUES, listen=False)
    assert deaf.schedulers["mail"].paused == {"mail"}

    await other.resume("mail")  # unheard: only drain() tells it
    await deaf.drain()
    assert ran == [("send", "m")]


async def test_the_poller_learns_of_a_pause_and_a_resume_no_notification_announced(
    make_engine: MakeEngine,
) -> None:
    deaf = await make_engine(workflows=FLOWS, queues=QUEUES, listen=False)
    other = await make_engine(workflows=FLOWS, queues=None)
    poller = Poller(deaf.store, deaf.clock, deaf.schedulers, deaf.telemetry, deaf._pauses)
    await Mail.start(key="m", engine=other)

    await other.pause("mail")
    assert deaf.schedulers["mail"].paused == set()
    assert await poller.run_once() == []  # paused: not woken, though due
    assert deaf.schedulers["mail"].paused == {"mail"}

    await other.resume("mail")
    assert await poller.run_once() == ["mail"]
    assert deaf.schedulers["mail"].paused == set()


async def test_a_step_running_when_its_queue_is_paused_finishes_and_its_next_step_waits(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=FLOWS, queues=QUEUES)
    sent: list[str] = []
    batch, plain = engine.store.outcome_batch, engine.store.outcome_plain

    async def spy(*, outcomes: bytes, **kwargs: Any) -> Any:
        sent.extend(o["kind"] for o in __import__("msgspec").json.decode(outcomes))
        return await batch(outcomes=outcomes, **kwargs)

    async def spy_plain(*, kinds: list[str], **kwargs: Any) -> Any:
        sent.extend(kinds)
        return await plain(kinds=kinds, **kwargs)

    engine.store.outcome_batch = spy  # type: ignore[method-assign]
    engine.store.outcome_plain = spy_plain  # type: ignore[method-assign]
    RUNNING["c"], RELEASE["c"] = asyncio.Event(), asyncio.Event()
    await Chain.start(key="c")
    draining = asyncio.create_task(engine.drain())
    await RUNNING["c"].wait()

    await engine.pause("mail")
    RELEASE["c"].set()
    await draining

    assert ran == [("first", "c")]
    assert sent == ["goto"]  # it knew: the claim was not even offered to be kept
    row = await db.fetchrow(
        f'SELECT status::text AS status, step, locked_by FROM "{gendurable_schema}".instances'
    )
    assert dict(row) == {"status": "available", "step": "second", "locked_by": None}
    info = await Chain.get("c")
    assert info.blocked_by is not None
    assert info.blocked_by.reason == "paused"

    await engine.resume("mail")
    await engine.drain()
    assert ran == [("first", "c"), ("second", "c")]


async def test_signals_and_await_timeouts_are_stored_in_a_paused_queue_and_run_on_resume(
    make_engine: MakeEngine, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=FLOWS, queues=QUEUES, local_starts=True)
    signalled = await Waiter.start(key="signalled")
    timing_out = await Waiter.start(key="timing out")
    await engine.drain()
    assert (await Waiter.get(signalled.id)).status == "awaiting"

    await engine.pause("mail")
    await Waiter.signal("signalled", "go")  # a local engine would claim what it wakes
    manual_clock.advance(timedelta(hours=2))
    await engine.drain()  # the reaper wakes the timed-out await; nothing runs

    assert ran == []
    for handle in (signalled, timing_out):
        info = await Waiter.get(handle.id)
        assert info.status == "available"
        assert info.blocked_by is not None
        assert info.blocked_by.reason == "paused"
    await engine.resume("mail")
    await engine.drain()
    assert sorted(ran) == [("wait", "go"), ("wait", "timed out")]


async def test_a_start_in_a_paused_queue_is_stored_unclaimed_by_a_local_scheduler(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=FLOWS, queues=QUEUES, local_starts=True)
    await engine.pause("mail")
    offered: list[str | None] = []
    insert = engine.store.instance_insert

    async def spy(**kwargs: Any) -> Any:
        offered.append(kwargs.get("locked_by"))
        return await insert(**kwargs)

    engine.store.instance_insert = spy  # type: ignore[method-assign]

    handle = await Mail.start(key="m")
    assert offered == [None]  # it knew: no slot was even reserved for it
    await asyncio.gather(*(s.idle() for s in engine.schedulers.values()))

    assert ran == []
    row = await db.fetchrow(
        f'SELECT status::text AS status, locked_by FROM "{gendurable_schema}".instances '
        "WHERE id = $1",
        handle.id,
    )
    assert dict(row) == {"status": "available", "locked_by": None}
    await engine.resume("mail")
    await engine.drain()
    assert ran == [("send", "m")]


async def test_blocked_by_says_since_when_and_by_whom_a_queue_is_paused(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=FLOWS, queues=QUEUES)
    await engine.pause("mail", by="ann")
    due = await Mail.start(key="due")
    later = await Mail.start(key="later", delay=timedelta(hours=1))

    for handle in (due, later):
        blocked = (await Mail.get(handle.id)).blocked_by
        assert blocked is not None
        assert (blocked.reason, blocked.until) == ("paused", None)
        assert str(blocked) == "paused: queue 'mail' since 2030-01-01 00:00:00 UTC by ann"
    await engine.resume("mail")
    blocked = (await Mail.get(later.id)).blocked_by
    assert blocked is not None
    assert blocked.reason == "scheduled"
