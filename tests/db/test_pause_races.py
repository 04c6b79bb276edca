"""A queue pause is exact: once `queue_pause` has returned, no statement starts a new step.

Every statement that starts steps (the claim, a start or a signal's wake claimed by a local
scheduler, a kept-claim move in a group commit) asks `queue_paused` inside itself, and the
poller's `queues_due` reports the queue paused instead of due. The hard part is a statement
already running when the pause commits, whose snapshot is older than the pause: the pause
waits for it (the shared advisory lock it holds), and one that asks after the pause
committed reads a fresh snapshot. Both are pinned by interleavings played by hand: a blocker
transaction holds a row the statement will wait for, so that it is caught mid-way, after its
snapshot, at a chosen side of its question. Then real concurrency: claimers and local
starts race a pause many times, and nothing starts after it.

The engine is client-only (nothing claims but the test), on the manual clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import pytest

import gendurable as gd
from commit_support import GROUP_COMMITS, commit, move
from gendurable.db.queue_store import QueueStore
from gendurable.entries import new_row
from gendurable.testing import MakeEngine
from raw_rows import Blocker, Leaf, insert, lock_waiter, row

T = TypeVar("T")
LEASE = timedelta(seconds=30)
RACES = 40
CLAIMERS = 3


@pytest.fixture
async def engine(make_engine: MakeEngine) -> gd.Engine:
    return await make_engine(workflows=[Leaf], queues=None, pool_size=8)


def now_of(engine: gd.Engine) -> datetime:
    now = engine.clock.now()
    assert now is not None
    return now


async def claim(engine: gd.Engine, worker: str, limit: int = 10) -> list[int]:
    """Claim due `raw.leaf` rows of the default queue as `worker`; the ids it took."""
    rows = await engine.store.instance_claim(
        queue="default",
        limit=limit,
        locked_by=worker,
        leases=[LEASE],
        now=now_of(engine),
        workflows=["raw.leaf"],
        steps=["work"],
    )
    return [r.id for r in rows if r.go]


async def executing(db: asyncpg.Connection, schema: str) -> set[int]:
    rows = await db.fetch(f"SELECT id FROM \"{schema}\".instances WHERE status = 'executing'")
    return {r["id"] for r in rows}


async def pause(engine: gd.Engine) -> Any:
    return await QueueStore(engine.store.db).queue_pause(
        queue="default", by="test", now=now_of(engine)
    )


async def advisory_waiter(db: asyncpg.Connection) -> bool:
    waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    return bool(await db.fetchval(waiting))


@pytest.fixture
async def limited(engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str) -> str:
    """A rate limit `api` and its bucket: a claim of a row under it upserts the bucket row,
    which a blocker can hold to catch the claim mid-way (after its pause check)."""
    s = gendurable_schema
    await db.execute(
        f"INSERT INTO \"{s}\".rate_configs (name, allowed, per_ms, burst) VALUES ('api', 10, "
        "1000, 10)"
    )
    await db.execute(
        f'INSERT INTO "{s}".rate_buckets (name, partition, tokens, refreshed_at) '
        "VALUES ('api', 'p', 10, $1)",
        now_of(engine),
    )
    return f"SELECT 1 FROM \"{s}\".rate_buckets WHERE name = 'api' FOR UPDATE"


@pytest.fixture
async def blocker(gendurable_dsn: str) -> AsyncIterator[Blocker]:
    held = await Blocker.open(gendurable_dsn)
    yield held
    await held.release()


# -- each statement that starts steps asks -------------------------------------------------


async def test_a_claim_of_a_paused_queue_takes_nothing(
    engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    s = gendurable_schema
    ids = [await insert(db, s, now_of(engine)) for _ in range(3)]
    assert (await pause(engine)).paused is True

    assert await claim(engine, "w#1") == []
    assert await QueueStore(engine.store.db).queue_resume(queue="default") is not None
    assert sorted(await claim(engine, "w#2")) == ids


@pytest.mark.parametrize("keyed", [True, False], ids=["keyed", "unkeyed"])
async def test_a_local_start_in_a_paused_queue_goes_in_unclaimed(
    keyed: bool, engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await pause(engine)
    entry = new_row(Leaf.spec, Leaf.new(key="paused" if keyed else None))
    paused = await engine.store.instance_insert(
        row=entry, now=now_of(engine), locked_by="w#1", lease=LEASE
    )
    await QueueStore(engine.store.db).queue_resume(queue="default")
    entry = new_row(Leaf.spec, Leaf.new(key="running" if keyed else None))
    running = await engine.store.instance_insert(
        row=entry, now=now_of(engine), locked_by="w#2", lease=LEASE
    )

    assert (paused.created, paused.locked_by) == (True, None)
    assert dict(await row(db, gendurable_schema, paused.id)) | {"timed_out": None} == {
        "status": "available", "locked_by": None, "attempt": 0, "pending_children": 0,
        "timed_out": None,
    }  # fmt: skip
    assert running.locked_by == "w#2"
    assert (await row(db, gendurable_schema, running.id))["status"] == "executing"


async def test_a_signal_does_not_claim_what_it_wakes_in_a_paused_queue(
    engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    s = gendurable_schema
    asleep = [await insert(db, s, now_of(engine), status="awaiting", step="wait") for _ in "ab"]
    await pause(engine)
    woken = await deliver(engine, asleep[0], locked_by="w#1")
    await QueueStore(engine.store.db).queue_resume(queue="default")
    claimed = await deliver(engine, asleep[1], locked_by="w#2")

    assert (woken.woke, woken.claimed) == (True, False)
    assert (await row(db, s, asleep[0]))["status"] == "available"
    assert (claimed.woke, claimed.claimed) == (True, True)
    assert (await row(db, s, asleep[1]))["locked_by"] == "w#2"


@pytest.mark.parametrize("statement", GROUP_COMMITS)
async def test_a_kept_claim_move_in_a_paused_queue_is_committed_as_a_plain_goto(
    engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str, statement: str
) -> None:
    s, now = gendurable_schema, now_of(engine)
    held = [await insert(db, s, now, status="executing", locked_by="w#1") for _ in "abc"]
    await pause(engine)

    done, busy = await commit(
        engine,
        [
            move(held[0], "w#1", "work", lease=LEASE),  # paused: released
            move(held[1], "w#1", "work", lease=LEASE, queue="elsewhere"),  # not paused: kept
            move(held[2], "w#1", "work"),  # a plain goto stays one
        ],
        statement=statement,
    )

    assert busy == set()
    assert done == {held[0]: "released", held[1]: None, held[2]: None}
    assert [(await row(db, s, id))["status"] for id in held] == [
        "available", "executing", "available",
    ]  # fmt: skip
    assert (await row(db, s, held[0]))["locked_by"] is None


async def test_the_poller_sees_a_paused_queue_as_paused_and_never_as_due(
    engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await insert(db, gendurable_schema, now_of(engine))
    store, now = engine.store, now_of(engine)
    assert await store.queues_due(queues=["default", "idle"], now=now) == (["default"], set())

    await pause(engine)
    assert await store.queues_due(queues=["default", "idle"], now=now) == ([], {"default"})
    await QueueStore(engine.store.db).queue_pause(queue="idle", by="test", now=now)
    assert await store.queues_due(queues=["default", "idle"], now=now) == ([], {"default", "idle"})


# -- statements in flight when the pause commits -------------------------------------------


async def test_a_pause_waits_for_a_claim_in_flight_and_nothing_is_claimed_once_it_returns(
    engine: gd.Engine,
    db: asyncpg.Connection,
    gendurable_schema: str,
    limited: str,
    blocker: Blocker,
) -> None:
    # The claim has checked the pause (not paused) and waits for its rate bucket; the pause
    # commits meanwhile. Had it not waited for the claim, the claim would take its row after
    # the pause returned.
    s = gendurable_schema
    limited_row = await insert(db, s, now_of(engine), rate_partition="p")
    await blocker.hold(limited)
    claiming = asyncio.create_task(claim(engine, "w#1"))
    await lock_waiter(db)
    pausing = asyncio.create_task(pause(engine))
    async with asyncio.timeout(10):
        while not pausing.done() and not await advisory_waiter(db):  # noqa: ASYNC110 (no event for a lock wait)
            await asyncio.sleep(0.01)
    at_pause = None
    if pausing.done():  # it did not wait: what is claimed now is all it allows
        at_pause = await executing(db, s)

    await blocker.release()
    assert await claiming == [limited_row]
    await pausing
    if at_pause is None:
        at_pause = await executing(db, s)
    await insert(db, s, now_of(engine))
    assert await claim(engine, "w#2") == []
    assert await executing(db, s) == at_pause == {limited_row}


async def test_while_a_pause_waits_for_a_claim_other_claims_take_nothing_without_waiting(
    engine: gd.Engine,
    db: asyncpg.Connection,
    gendurable_schema: str,
    limited: str,
    blocker: Blocker,
) -> None:
    # The queue is about to be paused (the pause waits for the first claim): a second claim
    # neither waits for the pause nor starts anything.
    s = gendurable_schema
    await insert(db, s, now_of(engine), rate_partition="p")
    plain = await insert(db, s, now_of(engine))
    await blocker.hold(limited)
    claiming = asyncio.create_task(claim(engine, "w#1", limit=1))
    await lock_waiter(db)
    pausing = asyncio.create_task(pause(engine))
    await asyncio.wait_for(_advisory_waiter_seen(db), 10)

    assert await without_waiting_more(db, claim(engine, "w#2")) == []
    assert (await row(db, s, plain))["status"] == "available"
    await blocker.release()
    await claiming
    await pausing


async def without_waiting_more(db: asyncpg.Connection, statement: Awaitable[T]) -> T:
    """Like `raw_rows.without_waiting`, with backends waiting already: fails as soon as one
    more waits while `statement` runs."""
    waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted"
    before = await db.fetchval(waiting)
    task = asyncio.ensure_future(statement)
    try:
        async with asyncio.timeout(10):
            while not task.done():
                if await db.fetchval(waiting) > before:
                    raise AssertionError("the statement waited for a lock")
                await asyncio.sleep(0.01)
        return task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, asyncpg.QueryCanceledError):
                await task


async def _advisory_waiter_seen(db: asyncpg.Connection) -> None:
    while not await advisory_waiter(db):  # noqa: ASYNC110 (no event for a lock wait)
        await asyncio.sleep(0.01)


async def test_a_signal_waiting_for_its_row_when_the_pause_commits_sees_the_pause(
    engine: gd.Engine,
    db: asyncpg.Connection,
    gendurable_schema: str,
    blocker: Blocker,
) -> None:
    # The delivery's snapshot predates the pause; it asks about the pause only once it has
    # its row, after the pause committed: the answer must come from a fresh snapshot.
    s = gendurable_schema
    asleep = await insert(db, s, now_of(engine), status="awaiting", step="wait")
    await blocker.hold(f'SELECT 1 FROM "{s}".instances WHERE id = $1 FOR UPDATE', asleep)
    delivering = asyncio.create_task(deliver(engine, asleep, locked_by="w#1"))
    await lock_waiter(db)

    await pause(engine)  # nothing holds the queue's lock: it commits at once
    at_pause = await executing(db, s)
    await blocker.release()
    delivered = await delivering

    assert (delivered.woke, delivered.claimed) == (True, False)
    assert await executing(db, s) == at_pause == set()
    assert (await row(db, s, asleep))["status"] == "available"


async def deliver(engine: gd.Engine, id: int, *, locked_by: str) -> Any:
    """Deliver `go` to `id`, as a local scheduler of the default queue with a free slot."""
    delivered = await engine.store.signal_deliver(
        workflow="raw.leaf", id=id, key=None, name="go", payload=b"null", now=now_of(engine),
        locked_by=locked_by, lease=LEASE, queue="default",
    )  # fmt: skip
    assert delivered is not None
    return delivered


# -- real concurrency -------------------------------------------------------------------------


class Race:
    """One race: what its claimers and starter took, and whether the pause has returned."""

    def __init__(self, engine: gd.Engine, n: int) -> None:
        self.engine = engine
        self.n = n
        self.taken: list[int] = []
        self.paused = asyncio.Event()
        self.rng = random.Random()

    async def claimer(self, worker: int) -> None:
        """Claim flat out, until three claims began after the pause returned."""
        after = 0
        while after < 3:
            self.taken += await claim(self.engine, f"c{worker}#{self.n}", self.rng.randint(1, 3))
            after += self.paused.is_set()
            await asyncio.sleep(0)

    async def starter(self) -> None:
        """Insert rows claimed by a local scheduler, until three began after the pause."""
        after, count = 0, 0
        while after < 3:
            count += 1
            entry = new_row(Leaf.spec, Leaf.new(key=f"s{self.n}-{count}"))
            made = await self.engine.store.instance_insert(
                row=entry, now=now_of(self.engine), locked_by=f"s#{self.n}", lease=LEASE
            )
            if made.locked_by is not None:
                self.taken.append(made.id)
            after += self.paused.is_set()


@pytest.mark.race
async def test_claims_and_local_starts_racing_a_pause_start_nothing_once_it_has_returned(
    engine: gd.Engine, gendurable_dsn: str, gendurable_schema: str, db: asyncpg.Connection
) -> None:
    # Claimers and a local starter run flat out on their own connections while the pause
    # runs at a random moment, in a transaction the test keeps open one statement longer:
    # right after the pause statement, that statement reads what executes. Nothing may
    # start from then on, neither before the commit nor after it.
    s = gendurable_schema
    pauser = await asyncpg.connect(gendurable_dsn)
    grew = []
    try:
        for n in range(RACES):
            race = Race(engine, n)
            await QueueStore(engine.store.db).queue_resume(queue="default")
            for _ in range(60):
                await insert(db, s, now_of(engine))
            racers = [asyncio.create_task(race.claimer(w)) for w in range(CLAIMERS)]
            racers.append(asyncio.create_task(race.starter()))
            for _ in range(race.rng.randint(0, 40)):
                await asyncio.sleep(0)
            async with pauser.transaction():
                statement = engine.store.db.sql["queue_pause"]
                await pauser.fetchrow(
                    statement.sql,
                    *statement.args(queue="default", by="race", now=now_of(engine)),
                )
                at_pause = {
                    r["id"]
                    for r in await pauser.fetch(
                        f"SELECT id FROM \"{s}\".instances WHERE status = 'executing'"
                    )
                }
            race.paused.set()
            await asyncio.gather(*racers)
            after = await executing(db, s)
            if after != at_pause or not set(race.taken) <= at_pause:
                grew.append((n, sorted(after - at_pause), sorted(set(race.taken) - at_pause)))
            await db.execute(f"UPDATE \"{s}\".instances SET status = 'done', locked_by = NULL")
    finally:
        await pauser.close()

    assert grew == [], f"steps started after the pause in {len(grew)} of {RACES} races"


async def test_a_pause_by_name_is_one_row_and_a_resume_of_nothing_is_none(
    engine: gd.Engine,
) -> None:
    first = await pause(engine)
    again = await QueueStore(engine.store.db).queue_pause(
        queue="default", by="someone else", now=now_of(engine)
    )

    assert (first.paused, again.paused) == (True, False)
    assert (again.paused_at, again.paused_by) == (first.paused_at, "test")
    assert [r.queue for r in await QueueStore(engine.store.db).queue_pauses()] == ["default"]
    assert await QueueStore(engine.store.db).queue_resume(queue="default") is not None
    assert await QueueStore(engine.store.db).queue_resume(queue="default") is None
