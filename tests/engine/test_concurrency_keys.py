"""Concurrency keys: instances sharing a key never execute at the same time.

Each guard of the claim has a test of its own that fails when the guard is deleted: the
unique index `instances_concurrency_active`, the NOT EXISTS on executing keys, the per-key
advisory try-lock, one row per key per batch; plus no head-of-line blocking behind a key
with a long backlog, the `concurrency.contended` event, and a race of several engines
recording when each step enters and exits.

The deterministic tests play the workers by hand: their rows sit on a queue no engine
serves, and `Store.instance_claim` is called directly with chosen worker ids. The module
runs on the system clock (the race needs real time).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import defaultdict
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import pytest

import gendurable as gd
from commit_support import finish_batch
from gendurable.db.rows import PickedRow
from gendurable.testing import MakeEngine, RecorderFactory

LEASE = timedelta(seconds=30)
SIDE = "ck-side"


@pytest.fixture
def gendurable_clock() -> None:
    """The system clock: the race below runs in real time."""
    return None


@gd.workflow(name="ck.side", queue=SIDE)
class Side:
    """Rows for the hand-played workers (nobody serves the queue)."""

    @gd.step(start=True)
    async def run(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


class Hand:
    """A client engine, SQL access, and workers played by hand on the side queue."""

    def __init__(self, engine: gd.Engine, db: asyncpg.Connection, schema: str) -> None:
        self.engine = engine
        self.db = db
        self.schema = schema

    async def start(self, key: str, ckey: str | None, priority: int = 0) -> int:
        handle = await Side.start(key=key, concurrency_key=ckey, priority=priority)
        return handle.id

    async def start_many(self, keys: list[tuple[str, str | None]]) -> list[int]:
        handles = await Side.start_many(Side.new(key=k, concurrency_key=c) for k, c in keys)
        return [h.id for h in handles]

    async def claim(self, locked_by: str, limit: int = 10) -> list[PickedRow]:
        """Claim on the side queue as worker `locked_by`; the claimed rows, by id."""
        rows = await self.engine.store.instance_claim(
            queue=SIDE,
            limit=limit,
            locked_by=locked_by,
            leases=[LEASE],
            now=None,
            workflows=[Side.spec.name],
            steps=["run"],
        )
        return sorted((r for r in rows if r.go), key=lambda r: r.id)

    async def claim_keys(self, locked_by: str, limit: int = 10) -> list[str]:
        return [r.key for r in await self.claim(locked_by, limit)]

    async def finish(self, ids: list[int], locked_by: str) -> set[int]:
        """Commit `done` for claimed rows (one group commit)."""
        return await finish_batch(self.engine, [(id, locked_by, "done") for id in ids], now=None)

    async def set_executing(self, conn: asyncpg.Connection, id: int, by: str = "elsewhere") -> str:
        """What another worker's claim writes: the row executing under its worker id."""
        return str(
            await conn.execute(
                f"UPDATE \"{self.schema}\".instances SET status = 'executing', locked_by = $2, "
                "locked_until = now() + interval '1 minute' WHERE id = $1",
                id,
                by,
            )
        )

    async def executing(self) -> list[tuple[str, str]]:
        rows = await self.db.fetch(
            f'SELECT key, concurrency_key FROM "{self.schema}".instances '
            "WHERE status = 'executing' ORDER BY key"
        )
        return [(r["key"], r["concurrency_key"]) for r in rows]


@pytest.fixture
async def hand(make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str) -> Hand:
    engine = await make_engine(workflows=[Side], queues=None)
    return Hand(engine, db, gendurable_schema)


async def other_connection(engine: gd.Engine) -> asyncpg.Connection:
    return await asyncpg.connect(engine.dsn or "")


async def lock_waiter(db: asyncpg.Connection) -> None:
    """Return once some backend waits for a lock (no event tells it; poll the server)."""
    async with asyncio.timeout(10):
        while not await db.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"):  # noqa: ASYNC110 (no event for a lock wait)
            await asyncio.sleep(0.01)


# --- the guards, one by one --------------------------------------------------------------


async def test_concurrency_keys_unique_index_refuses_a_second_executing_row_of_a_key(
    hand: Hand,
) -> None:
    first = await hand.start("a1", "A")
    second = await hand.start("a2", "A")
    other = await hand.start("b1", "B")
    assert await hand.set_executing(hand.db, first) == "UPDATE 1"

    with pytest.raises(asyncpg.UniqueViolationError, match="instances_concurrency_active"):
        await hand.set_executing(hand.db, second)
    assert await hand.set_executing(hand.db, other) == "UPDATE 1"
    assert await hand.executing() == [("a1", "A"), ("b1", "B")]


async def test_concurrency_keys_a_claim_racing_an_uncommitted_executor_of_its_key_backs_off(
    hand: Hand,
) -> None:
    """A writer setting a row of key A executing (here on another queue), not committed yet,
    is invisible to the claim's NOT EXISTS and holds no advisory lock: only the unique index
    stops the claim. It waits for the writer, gets a unique violation, and the retry passes
    over A."""
    elsewhere = (await Side.start(key="x1", concurrency_key="A", queue="ck-elsewhere")).id
    await hand.start("a1", "A")
    await hand.start("b1", "B")
    other = await other_connection(hand.engine)
    try:
        tx = other.transaction()
        await tx.start()
        await hand.set_executing(other, elsewhere)
        claim = asyncio.create_task(hand.claim_keys("w1"))
        await lock_waiter(hand.db)
        await tx.commit()
        async with asyncio.timeout(10):
            claimed = await claim
    finally:
        await other.close()

    assert claimed == ["b1"]
    assert await hand.executing() == [("b1", "B"), ("x1", "A")]


async def test_concurrency_keys_a_claim_passes_over_a_key_executing_elsewhere(
    hand: Hand,
) -> None:
    a1 = await hand.start("a1", "A")
    await hand.start("a2", "A")
    await hand.start("b1", "B")
    await hand.start("n1", None)
    await hand.set_executing(hand.db, a1)

    assert await hand.claim_keys("w1") == ["b1", "n1"]
    assert await hand.claim_keys("w2") == []
    assert await hand.executing() == [("a1", "A"), ("b1", "B"), ("n1", None)]


async def test_concurrency_keys_a_claim_passes_over_a_key_another_claim_holds(
    hand: Hand, gendurable_schema: str
) -> None:
    """The advisory lock of a key (what a claim in flight holds) makes claims pass it over."""
    await hand.start("a1", "A")
    await hand.start("b1", "B")
    other = await other_connection(hand.engine)
    try:
        async with other.transaction():
            await other.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1 || $2, 0))",
                f"gendurable:ck:{gendurable_schema}:",
                "A",
            )
            assert await hand.claim_keys("w1") == ["b1"]
        assert await hand.claim_keys("w2") == ["a1"]
    finally:
        await other.close()


async def test_concurrency_keys_a_batch_takes_the_most_urgent_row_of_each_key(
    hand: Hand,
) -> None:
    await hand.start("a1", "A")
    await hand.start("a2", "A", priority=5)
    await hand.start("a3", "A")
    await hand.start("b1", "B")
    await hand.start("b2", "B")
    await hand.start("n1", None)
    await hand.start("n2", None)

    rows = await hand.claim("w1")

    assert sorted(r.key for r in rows) == ["a2", "b1", "n1", "n2"]
    assert {r.contended for r in rows} == {2}  # A and B have rows waiting behind
    assert await hand.claim_keys("w2") == []


async def test_concurrency_keys_a_long_backlog_of_one_key_blocks_nothing_behind_it(
    hand: Hand,
) -> None:
    """1,000 due rows of key A ahead of everything else: the others still flow, claim after
    claim, while A runs one at a time."""
    backlog = await hand.start_many([(f"a{i:04d}", "A") for i in range(1000)])
    others = await hand.start_many(
        [(f"o{i:02d}", f"K{i % 5}" if i % 2 else None) for i in range(40)]
    )

    claimed_a: list[int] = []
    flowed: list[int] = []
    for round in range(10):
        rows = await hand.claim(f"w{round}", limit=5)
        ids = [r.id for r in rows]
        # A's next row and four others: A's backlog never fills the batch.
        assert len([i for i in ids if i in backlog]) == 1, f"round {round}: {ids}"
        claimed_a += [i for i in ids if i in backlog]
        flowed += [i for i in ids if i in others]
        assert len(flowed) == 4 * (round + 1), f"round {round}: {ids}"
        # Every row finishes before the next claim: A is free again at each claim.
        assert await hand.finish(ids, f"w{round}") == set(ids)

    assert sorted(flowed) == others
    assert claimed_a == backlog[:10]  # A in order, one at a time


# --- telemetry ----------------------------------------------------------------------------


@gd.workflow(name="ck.quick")
class Quick:
    @gd.step(start=True)
    async def run(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done(ctx.key)


async def test_concurrency_keys_contended_counts_the_keys_with_rows_waiting(
    make_engine: MakeEngine, recorder: RecorderFactory
) -> None:
    engine = await make_engine(workflows=[Quick], queues={"default": 8}, start=False)
    rec = recorder(engine)
    await engine.start()

    # One statement inserts all three: the first claim after it sees them together.
    await Quick.start_many(Quick.new(key=f"q{i}", concurrency_key="Q") for i in range(3))

    first, *_ = await rec.wait(("concurrency", "contended"))
    assert first == {"queue": "default", "count": 1}  # one key, with rows waiting behind
    assert [await Quick.result(f"q{i}", timeout=10) for i in range(3)] == ["q0", "q1", "q2"]
    # q0's claim and q1's had rows of the key waiting; q2's, the last, had none.
    assert rec.of(("concurrency", "contended")) == [first, first]


# --- the race: several engines, keyed steps in flight at once ------------------------------

spans: dict[str, list[tuple[float, float, str]]] = defaultdict(list)


async def record(ckey: str, pause: float, ctx: gd.Context) -> None:
    """Note when this step entered and left, for its key (`time.monotonic`)."""
    entered = time.monotonic()
    await asyncio.sleep(pause)  # the step's work: a window another run of the key could hit
    spans[ckey].append((entered, time.monotonic(), ctx.engine.name))


@gd.workflow(name="ck.serial")
class Serial:
    class State(msgspec.Struct):
        ckey: str
        pause: float = 0.0

    @gd.step(start=True)
    async def first(self, state: State, ctx: gd.Context) -> gd.Outcome:
        await record(state.ckey, state.pause, ctx)
        return gd.goto(self.second)

    @gd.step
    async def second(self, state: State, ctx: gd.Context) -> gd.Outcome:
        await record(state.ckey, state.pause, ctx)
        return gd.done()


def overlaps(runs: list[tuple[float, float, str]]) -> list[tuple[Any, Any]]:
    ordered = sorted(runs)
    return [(a, b) for a, b in itertools.pairwise(ordered) if b[0] < a[1]]


@pytest.mark.slow
@pytest.mark.race
async def test_concurrency_keys_never_overlap_across_engines_over_many_rounds(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    spans.clear()
    engines = [await make_engine(workflows=[Serial], queues={"default": 4}) for _ in range(3)]
    rng = random.Random(8)
    keys = ["K0", "K1", "K2"]
    for round in range(8):
        entries = [
            Serial.new(
                key=f"r{round}-{i}",
                state=Serial.State(ckey=keys[i % 3], pause=rng.uniform(0, 0.002)),
                concurrency_key=f"{keys[i % 3]}",
            )
            for i in range(24)
        ]
        await Serial.start_many(entries, engine=engines[round % 3])
        for entry in entries:
            assert entry.key is not None
            await Serial.result(entry.key, timeout=30, engine=engines[0])

    for key in keys:
        assert len(spans[key]) == 8 * 8 * 2
        assert overlaps(spans[key]) == [], f"two runs of {key} overlapped"
    ran_on = {name for runs in spans.values() for _, _, name in runs}
    assert len(ran_on) > 1, "one engine ran everything: the race did not happen"
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
