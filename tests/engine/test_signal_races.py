"""Signal races with real concurrency on real PostgreSQL (DESIGN §8, guarantees 3 and 4).

A worker engine runs steps on its own pool while client-only engines deliver signals on
theirs, all at once through `asyncio.gather`: the database sees truly concurrent
transactions, and which statement wins is left to it. Signals are only aimed at the windows
they should race (a step running, a park committing, a run that just started) by waiting on
in-process events a step sets, then spread with `asyncio.sleep(0)` jitter; no statement is
ordered by hand and nothing sleeps to synchronise. Afterwards the worker drains, and every
instance must have ended with every signal consumed exactly once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from typing import Any

import msgspec
import pytest

import gendurable as gd
from gendurable.testing import MakeEngine

pytestmark = pytest.mark.race

PARK_RACES = 1000
PACKS = 5
SIGNALS_PER_PACK = 200  # PACKS * SIGNALS_PER_PACK signals race one another, per pattern
WAKE_TIMEOUT = 10.0  # seconds a delivered signal may take to start its step (a bound, no sync)
SENDERS = 4  # concurrent senders per instance, each sending its share one after another

RNG = random.Random()
RUNNING: dict[str, asyncio.Event] = {}
RETURNING: dict[str, asyncio.Event] = {}
RUNS: Counter[str] = Counter()  # executions of the collecting step, by key
RAN: dict[str, asyncio.Condition] = {}


async def _ran(key: str | None) -> None:
    assert key is not None
    async with RAN[key]:
        RUNS[key] += 1
        RAN[key].notify_all()


async def _jitter(most: int) -> None:
    for _ in range(RNG.randint(0, most)):
        await asyncio.sleep(0)


@gd.workflow(name="races.park", queue="races")
class ParkRace:
    """`first` goes to an await of "go"; the test's signal races that park."""

    @gd.step(start=True)
    async def first(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        assert ctx.key is not None
        RUNNING[ctx.key].set()
        await _jitter(3)
        RETURNING[ctx.key].set()
        return gd.goto(self.wait)

    @gd.step
    @gd.await_signals("go")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done([s.id for s in ctx.awaited])


@gd.workflow(name="races.collect", queue="races")
class Collect:
    """Consume signals as they come: each run consumes exactly what it saw.

    Runs alternate between going straight back to the await (the park consumes) and going
    through a plain step first (the outcome commit consumes), so both consuming paths race
    the deliveries.
    """

    class State(msgspec.Struct):
        want: int
        consumed: list[list[int]] = []

    @gd.step(start=True)
    @gd.await_signals("item")
    async def collect(self, state: State, ctx: gd.Context) -> gd.Outcome:
        await _ran(ctx.key)
        state.consumed.append([s.id for s in ctx.awaited])
        await _jitter(2)
        if sum(map(len, state.consumed)) >= state.want:
            return gd.done(state.consumed)
        if len(state.consumed) % 2:
            return gd.goto(self.relay)
        return gd.goto(self.collect)

    @gd.step
    async def relay(self, state: State, ctx: gd.Context) -> gd.Outcome:
        await _jitter(2)
        return gd.goto(self.collect)


@gd.workflow(name="races.pack", queue="races")
class Pack:
    """Accumulate signals with reawait until `want` were seen, then consume them at once.

    `sizes` records how many matches each run saw: a run woken without a new signal (a
    reawait spin) would see no more than the run before it.
    """

    class State(msgspec.Struct):
        want: int
        sizes: list[int] = []

    @gd.step(start=True)
    @gd.await_signals("item")
    async def collect(self, state: State, ctx: gd.Context) -> gd.Outcome:
        await _ran(ctx.key)
        state.sizes.append(len(ctx.awaited))
        if len(state.sizes) > 1 and state.sizes[-1] <= state.sizes[-2]:
            return gd.stop(f"reawait spin: woken without a new signal ({state.sizes})")
        await _jitter(2)
        if len(ctx.awaited) >= state.want:
            return gd.goto(self.report)
        return gd.reawait()

    @gd.step
    async def report(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done(state.sizes)


def _spy_woke(client: gd.Engine, woke: list[bool]) -> None:
    """Record, for each delivery of `client`, whether it flipped a parked instance.

    Instrumentation only: the delivery itself is unchanged.
    """
    store = client.store
    deliver = store.signal_deliver

    async def spy(*args: Any, **kwargs: Any) -> Any:
        row = await deliver(*args, **kwargs)
        if row is not None:
            woke.append(row.woke)
        return row

    store.signal_deliver = spy  # type: ignore[method-assign]


async def _send_all(flow: Any, keys: list[str], clients: list[gd.Engine]) -> dict[str, list[int]]:
    """Send SIGNALS_PER_PACK "item" signals to each key, all keys and senders at once.

    Each key gets SENDERS concurrent senders (spread over the client engines' pools), each
    sending its share one after another with jitter. After a signal a sender may hold on
    until the instance's step has started again, so later signals land while a step runs
    and while its park commits: deliveries race one another and the consumption. (That
    wait needs the signal to wake the instance: a lost wake-up shows as a timeout.)
    """
    per_sender = SIGNALS_PER_PACK // SENDERS
    for key in keys:
        RAN[key] = asyncio.Condition()

    async def sender(key: str, s: int) -> list[int]:
        ids = []
        for n in range(per_sender):
            await _jitter(6)
            before = RUNS[key]
            engine = clients[(s + n) % len(clients)]
            ids.append(await flow.signal(key, "item", s * per_sender + n, engine=engine))
            if RNG.random() < 0.75:
                try:
                    async with asyncio.timeout(WAKE_TIMEOUT), RAN[key]:
                        await RAN[key].wait_for(lambda before=before: RUNS[key] > before)
                except TimeoutError:
                    unanswered.append((key, ids[-1]))
        return ids

    unanswered: list[tuple[str, int]] = []
    pairs = [(k, s) for k in keys for s in range(SENDERS)]
    batches = await asyncio.gather(*(sender(k, s) for k, s in pairs))
    assert unanswered == [], f"signals that woke no step within {WAKE_TIMEOUT}s: {unanswered}"
    sent: dict[str, list[int]] = {k: [] for k in keys}
    for (key, _), ids in zip(pairs, batches, strict=True):
        sent[key].extend(ids)
    return sent


async def _stranded(rows: Any) -> list[Any]:
    """Instances parked with a matching signal in their inbox: lost wake-ups."""
    return list(
        await rows.db.fetch(
            f'SELECT i.id, i.key, i.step FROM "{rows.schema}".instances i '
            f"WHERE i.status = 'awaiting' AND EXISTS ("
            f'  SELECT 1 FROM "{rows.schema}".signals s '
            f"  WHERE s.instance_id = i.id AND s.name = ANY (i.await_names)"
            f"    AND s.id > i.await_seen)"
        )
    )


@pytest.mark.slow
async def test_signal_race_with_park_never_strands_an_instance(
    make_engine: MakeEngine, rows: Any
) -> None:
    worker = await make_engine(workflows=[ParkRace], queues={"races": 16})
    client = await make_engine(workflows=[ParkRace], queues=None, pool_size=10)
    woke: list[bool] = []
    _spy_woke(client, woke)
    phases = ["at-start", "while-running", "while-parking"]
    keys = [f"park-{i}" for i in range(PARK_RACES)]
    for key in keys:
        RUNNING[key], RETURNING[key] = asyncio.Event(), asyncio.Event()

    async def race(i: int, key: str) -> int:
        await ParkRace.start(key=key, engine=worker)
        phase = phases[i % len(phases)]
        if phase == "while-running":
            await RUNNING[key].wait()
        elif phase == "while-parking":
            await RETURNING[key].wait()  # the step has returned: its park is committing
        await _jitter(8)
        signal_id: int = await ParkRace.signal(key, "go", engine=client)
        return signal_id

    started = time.perf_counter()
    async with asyncio.timeout(60):
        sent = await asyncio.gather(*(race(i, key) for i, key in enumerate(keys)))
        await worker.drain()
    elapsed = time.perf_counter() - started

    stranded = await _stranded(rows)
    assert not stranded, f"{len(stranded)} stranded: {[r['key'] for r in stranded]}"
    statuses = Counter(r["status"] for r in await rows.instances())
    assert statuses == {"done": PARK_RACES}
    for key, signal_id in zip(keys, sent, strict=True):
        assert await ParkRace.result(key, timeout=5, engine=worker) == [signal_id]
    assert await rows.signal_count() == 0
    # Both sides of the race ran: signals stored before the park (found by its recheck)
    # and signals that found the instance parked (and flipped it).
    flips = Counter(woke)
    assert flips[True] > 0
    assert flips[False] > 0
    print(f"\npark race: {PARK_RACES} instances in {elapsed:.2f}s, woke by delivery {flips}")


async def test_signal_race_many_signals_to_one_instance_are_each_consumed_once(
    make_engine: MakeEngine, rows: Any
) -> None:
    worker = await make_engine(workflows=[Collect], queues={"races": 8})
    clients = [await make_engine(workflows=[Collect], queues=None, pool_size=8) for _ in range(2)]
    keys = [f"collect-{n}" for n in range(PACKS)]
    for key in keys:
        await Collect.start(key=key, state=Collect.State(want=SIGNALS_PER_PACK), engine=worker)

    started = time.perf_counter()
    async with asyncio.timeout(60):
        sent = await _send_all(Collect, keys, clients)
        await worker.drain()
    elapsed = time.perf_counter() - started

    stranded = await _stranded(rows)
    assert not stranded, f"{len(stranded)} stranded: {[r['key'] for r in stranded]}"
    assert Counter(r["status"] for r in await rows.instances()) == {"done": PACKS}
    runs = 0
    for key in keys:
        consumed = await Collect.result(key, timeout=5, engine=worker)
        flat = [id for batch in consumed for id in batch]
        assert len(flat) == len(set(flat)), f"{key}: a signal was consumed twice"
        assert sorted(flat) == sorted(sent[key]), f"{key}: a signal was lost"
        assert all(batch for batch in consumed), f"{key}: a run woke without a new signal"
        assert flat == sorted(flat)  # each run saw the oldest pending signals, in order
        runs += len(consumed)
    assert await rows.signal_count() == 0
    print(f"\ncollect race: {PACKS * SIGNALS_PER_PACK} signals, {runs} runs in {elapsed:.2f}s")


async def test_signal_race_many_signals_accumulate_with_reawait_without_spinning(
    make_engine: MakeEngine, rows: Any
) -> None:
    worker = await make_engine(workflows=[Pack], queues={"races": 8})
    clients = [await make_engine(workflows=[Pack], queues=None, pool_size=8) for _ in range(2)]
    keys = [f"pack-{n}" for n in range(PACKS)]
    handles = [
        await Pack.start(key=key, state=Pack.State(want=SIGNALS_PER_PACK), engine=worker)
        for key in keys
    ]

    started = time.perf_counter()
    async with asyncio.timeout(60):
        sent = await _send_all(Pack, keys, clients)
        await worker.drain()
    elapsed = time.perf_counter() - started

    stranded = await _stranded(rows)
    assert not stranded, f"{len(stranded)} stranded: {[r['key'] for r in stranded]}"
    assert Counter(r["status"] for r in await rows.instances()) == {"done": PACKS}
    runs = []
    for key in keys:
        sizes = await Pack.result(key, timeout=5, engine=worker)
        assert sizes == sorted(set(sizes)), f"{key}: a run saw no new signal: {sizes}"
        assert sizes[-1] == SIGNALS_PER_PACK
        assert len(sizes) <= SIGNALS_PER_PACK + 1
        runs.append(len(sizes))
    assert await rows.signal_count() == 0  # all consumed by the goto out of the pack
    assert sum(map(len, sent.values())) == PACKS * SIGNALS_PER_PACK
    assert all(h.created for h in handles)
    print(
        f"\npack race: {PACKS * SIGNALS_PER_PACK} signals, runs per pack {runs} in {elapsed:.2f}s"
    )
