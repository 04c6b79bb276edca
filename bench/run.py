"""Benchmarks: `python bench/run.py w1 [--instances N] [--dsn DSN]`.

Each workload prints JSON lines: the PostgreSQL floor measured in the same run, then the
workload's figure and its ratio to the floor. Timings never go in tests; they live here.

- floor: single-row `UPDATE ... WHERE id = $1` transactions per second from 8 asyncpg
  connections (the cheapest durable write a step could possibly cost).
- w1: a 3-step workflow over N instances (default 2,000) in one worker process.
- w2: N instances parked on a signal; the figure is signals delivered and acted on per
  second (delivery from 8 concurrent senders, wake-up, the awaiting step, its commit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

import gendurable as gd
from gendurable.db.schema_admin import drop_schema


def emit(**fields: Any) -> None:
    """Print one JSON line."""
    print(json.dumps(fields), flush=True)


async def floor(dsn: str, seconds: float = 3.0, connections: int = 8) -> float:
    """Single-row UPDATE transactions per second from `connections` connections."""
    table = f"bench_floor_{uuid.uuid4().hex[:8]}"
    setup = await asyncpg.connect(dsn)
    await setup.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, n bigint NOT NULL)")
    await setup.execute(f"INSERT INTO {table} SELECT g, 0 FROM generate_series(1, 10000) g")
    conns = [await asyncpg.connect(dsn) for _ in range(connections)]
    stop_at = time.perf_counter() + seconds
    done = 0

    async def hammer(conn: asyncpg.Connection, offset: int) -> None:
        nonlocal done
        i = offset
        stmt = await conn.prepare(f"UPDATE {table} SET n = n + 1 WHERE id = $1")
        while time.perf_counter() < stop_at:
            await stmt.fetch(i % 10000 + 1)
            i += connections
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(hammer(c, k) for k, c in enumerate(conns)))
    elapsed = time.perf_counter() - started
    for c in conns:
        await c.close()
    await setup.execute(f"DROP TABLE {table}")
    await setup.close()
    return done / elapsed


@gd.workflow(name="bench.three_steps", queue="bench")
class ThreeSteps:
    """a -> b -> c -> done, each step a no-op on a small typed state."""

    class State(msgspec.Struct):
        n: int = 0

    @gd.step(start=True)
    async def a(self, state: State, ctx: gd.Context) -> gd.Outcome:
        state.n += 1
        return gd.goto(self.b)

    @gd.step
    async def b(self, state: State, ctx: gd.Context) -> gd.Outcome:
        state.n += 1
        return gd.goto(self.c)

    @gd.step
    async def c(self, state: State, ctx: gd.Context) -> gd.Outcome:
        state.n += 1
        return gd.done(state.n)


@dataclass(frozen=True)
class Figure:
    """What a workload did: `count` `unit`s in `seconds`."""

    count: int
    unit: str
    seconds: float


@asynccontextmanager
async def bench_engine(
    dsn: str, workflow: Any, concurrency: int
) -> AsyncIterator[tuple[gd.Engine, list[Any]]]:
    """A running engine on a fresh schema (dropped afterwards) and the steps it finished."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    engine = gd.Engine(
        dsn,
        workflows=[workflow],
        schema=schema,
        queues={"bench": concurrency},
        name=f"bench-{schema}",
    )
    finished: list[Any] = []
    engine.telemetry.attach(
        "finished", lambda event, m, meta: finished.append(meta["decision"]), [("step", "stop")]
    )
    try:
        async with engine:
            yield engine, finished
    finally:
        await drop_schema(dsn, schema)


async def w1(dsn: str, instances: int, concurrency: int) -> Figure:
    """Run ThreeSteps over `instances` instances: steps end to end."""
    async with bench_engine(dsn, ThreeSteps, concurrency) as (engine, finished):
        engine.schedulers["bench"].stop_claiming()  # insert first, then run
        await ThreeSteps.start_many(
            [ThreeSteps.new(key=f"i{i}") for i in range(instances)], engine=engine
        )
        started = time.perf_counter()
        engine.schedulers["bench"].resume_claiming()
        await engine.drain()
        elapsed = time.perf_counter() - started
    if len(finished) != instances * 3:
        raise RuntimeError(f"expected {instances * 3} steps, ran {len(finished)}")
    return Figure(len(finished), "steps", elapsed)


@gd.workflow(name="bench.await_one", queue="bench")
class AwaitOne:
    """Parks at start until "go" arrives, then finishes with the payload."""

    @gd.step(start=True)
    @gd.await_signals("go")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done(ctx.awaited[0].payload)


async def w2(dsn: str, instances: int, concurrency: int) -> Figure:
    """Park `instances` instances, then signal each once: signals acted on."""
    async with bench_engine(dsn, AwaitOne, concurrency) as (engine, finished):
        await AwaitOne.start_many(
            [AwaitOne.new(key=f"i{i}") for i in range(instances)], engine=engine
        )
        await engine.drain()  # every instance is parked now
        keys = [f"i{i}" for i in range(instances)]

        async def send(part: list[str]) -> None:
            for key in part:
                await AwaitOne.signal(key, "go", 1, engine=engine)

        started = time.perf_counter()
        await asyncio.gather(*(send(keys[k::8]) for k in range(8)))
        await engine.drain()
        elapsed = time.perf_counter() - started
    done = finished.count("Finish")
    if done != instances:
        raise RuntimeError(f"expected {instances} instances done, found {done}")
    return Figure(done, "signals", elapsed)


WORKLOADS = {"w1": w1, "w2": w2}


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--dsn", default=os.environ.get("GENDURABLE_DSN"))
    args = parser.parse_args(argv)
    embedded = None
    dsn = args.dsn
    if not dsn:
        from gendurable.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres()
        await embedded.astart()
        dsn = embedded.dsn
    try:
        base = await floor(dsn)
        emit(bench="floor", what="single-row UPDATE tx/s, 8 connections", per_s=round(base))
        figure = await WORKLOADS[args.workload](dsn, args.instances, args.concurrency)
        per_s = figure.count / figure.seconds
        emit(
            bench=args.workload,
            instances=args.instances,
            concurrency=args.concurrency,
            **{figure.unit: figure.count, f"{figure.unit}_per_s": round(per_s)},
            seconds=round(figure.seconds, 3),
            ratio_to_floor=round(per_s / base, 3),
        )
    finally:
        if embedded is not None:
            await embedded.astop()


if __name__ == "__main__":
    warnings.simplefilter("ignore", ResourceWarning)
    asyncio.run(main(sys.argv[1:]))
