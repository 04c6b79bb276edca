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
from typing import Any

import asyncpg
import msgspec

import gendurable as gd


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


async def w1(dsn: str, instances: int, concurrency: int) -> dict[str, Any]:
    """Run ThreeSteps over `instances` instances; steps per second end to end."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    engine = gd.Engine(
        dsn,
        workflows=[ThreeSteps],
        schema=schema,
        queues={"bench": concurrency},
        name=f"bench-{schema}",
    )
    steps = 0

    def count(event: Any, measurements: Any, metadata: Any) -> None:
        nonlocal steps
        steps += 1

    engine.telemetry.attach("count", count, [("step", "stop")])
    async with engine:
        engine.schedulers["bench"].stop_claiming()  # insert first, then run
        await ThreeSteps.start_many(
            [ThreeSteps.new(key=f"i{i}") for i in range(instances)], engine=engine
        )
        started = time.perf_counter()
        engine.schedulers["bench"].resume_claiming()
        await engine.drain()
        elapsed = time.perf_counter() - started
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    await conn.close()
    if steps != instances * 3:
        raise RuntimeError(f"expected {instances * 3} steps, ran {steps}")
    return {"steps": steps, "seconds": round(elapsed, 3), "steps_per_s": steps / elapsed}


@gd.workflow(name="bench.await_one", queue="bench")
class AwaitOne:
    """Parks at start until "go" arrives, then finishes with the payload."""

    @gd.step(start=True)
    @gd.await_signals("go")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done(ctx.awaited[0].payload)


async def w2(dsn: str, instances: int, concurrency: int) -> dict[str, Any]:
    """Park `instances` instances, then signal each once; signals acted on per second."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    engine = gd.Engine(
        dsn,
        workflows=[AwaitOne],
        schema=schema,
        queues={"bench": concurrency},
        name=f"bench-{schema}",
    )
    async with engine:
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
        done = await engine.store.pool.fetchval(
            f"SELECT count(*) FROM \"{schema}\".instances WHERE status = 'done'"
        )
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    await conn.close()
    if done != instances:
        raise RuntimeError(f"expected {instances} instances done, found {done}")
    return {"signals": instances, "seconds": round(elapsed, 3), "per_s": instances / elapsed}


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workload", choices=["w1", "w2"])
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
        if args.workload == "w1":
            result = await w1(dsn, args.instances, args.concurrency)
            emit(
                bench="w1",
                instances=args.instances,
                concurrency=args.concurrency,
                steps=result["steps"],
                seconds=result["seconds"],
                steps_per_s=round(result["steps_per_s"]),
                ratio_to_floor=round(result["steps_per_s"] / base, 3),
            )
        else:
            result = await w2(dsn, args.instances, args.concurrency)
            emit(
                bench="w2",
                instances=args.instances,
                concurrency=args.concurrency,
                signals=result["signals"],
                seconds=result["seconds"],
                signals_per_s=round(result["per_s"]),
                ratio_to_floor=round(result["per_s"] / base, 3),
            )
    finally:
        if embedded is not None:
            await embedded.astop()


if __name__ == "__main__":
    warnings.simplefilter("ignore", ResourceWarning)
    asyncio.run(main(sys.argv[1:]))
