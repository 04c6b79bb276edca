"""Where w3's latency goes: one signal at a time, timestamped end to end.

    python bench/w3_trace.py [--dsn DSN] [--signals 200]

Runs w3's workload (awaiting instances signalled one at a time, a random 50-250 ms pause
before each) with the engine's path timed in this process: the `signal` call, the delivery
statement (`signal_deliver`, which claims the woken instance here), the adoption of the
claim, the woken step's start and its outcome, the group commit's statement, and the start
of the step after it (where w3's latency ends). The medians and 90th percentiles of each
segment, and of a raw asyncpg loop doing the same durable writes on the same server (one
statement storing a signal and flipping its row, one updating the row: two transactions),
are one JSON line each. With `pg_stat_statements` on the server (PostgreSQL with the
extension preloaded), the mean execution time of each statement the workload ran is
another.

With `--commits N`, then: the woken step's commit alone, N times through each group-commit
statement in turn (a goto of an executing row that consumed one signal, encoded by the
committer: `outcome_batch` as before, `outcome_plain` since it takes consumed signals),
client-timed, with a pause of 1 to 5 ms before each; the medians, and the median of the
per-pair ratios plain / batch.

With `--warm N`: N signals delivered and their woken steps committed straight through the
store (no pause, no step: the two statements back to back on a warm connection), each
followed by the raw pair; the round trips of each statement (the woken commits alternate
between `outcome_batch` and `outcome_plain`) and the client CPU of each (`process_time`).
Run it with `log_min_duration_statement = 0` on the server to read bind and execute times
from its log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import flows
from harness.engines import bench_engine
from harness.flows import QUEUE, AwaitThenNext

from gendurable.db.engine_store import EngineStore
from gendurable.embedded import embedded_dsn
from gendurable.engine.committer import Committer
from gendurable.engine.executor import Executor
from gendurable.engine.group_commit import BatchItem, GroupCommit
from gendurable.engine.scheduler import Scheduler

MARKS: dict[str, float] = {}
"""The current signal's timestamps, by mark (one signal in flight at a time)."""


def mark(name: str) -> None:
    MARKS.setdefault(name, time.perf_counter())


def timed(cls: Any, method: str, before: str, after: str | None = None) -> None:
    original = getattr(cls, method)

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        mark(before)
        try:
            return await original(*args, **kwargs)
        finally:
            if after is not None:
                mark(after)

    setattr(cls, method, wrapper)


def instrument() -> None:
    timed(EngineStore, "signal_deliver", "deliver_sent", "deliver_answered")
    timed(Executor, "run", "run_started")
    timed(Committer, "apply", "outcome_ready")
    timed(GroupCommit, "submit", "submitted")
    timed(EngineStore, "outcome_batch", "commit_sent", "commit_answered")
    timed(EngineStore, "outcome_plain", "commit_sent", "commit_answered")
    adopt = Scheduler.adopt

    def adopted(self: Any, *args: Any, **kwargs: Any) -> None:
        mark("adopted")
        adopt(self, *args, **kwargs)

    Scheduler.adopt = adopted  # type: ignore[method-assign]
    for method in ("fetch", "fetchrow"):
        wire(method)


def wire(method: str) -> None:
    """Mark when the delivery's and the woken step's commit statements are handed to asyncpg
    and when asyncpg hands back their rows (the round trip without the store's Python)."""
    original = getattr(asyncpg.connection.Connection, method)

    async def wrapper(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        if query.startswith("-- One statement"):
            what = "deliver"
        elif query.startswith(("-- Group commit", "-- The group commit")):
            what = "commit"
        else:
            return await original(self, query, *args, **kwargs)
        mark(f"wire_{what}_sent")
        try:
            return await original(self, query, *args, **kwargs)
        finally:
            mark(f"wire_{what}_answered")

    setattr(asyncpg.connection.Connection, method, wrapper)


SEGMENTS = (
    ("signal call -> delivery sent", "sent", "deliver_sent"),
    ("delivery statement (store call)", "deliver_sent", "deliver_answered"),
    ("delivery statement (asyncpg call)", "wire_deliver_sent", "wire_deliver_answered"),
    ("answer -> claim adopted", "deliver_answered", "adopted"),
    ("adopted -> woken step runs", "adopted", "run_started"),
    ("step runs -> outcome ready", "run_started", "outcome_ready"),
    ("outcome -> group commit sent", "outcome_ready", "commit_sent"),
    ("commit statement (store call)", "commit_sent", "commit_answered"),
    ("commit statement (asyncpg call)", "wire_commit_sent", "wire_commit_answered"),
    ("commit answered -> next step begins", "commit_answered", "woken"),
    ("total", "sent", "woken"),
)


class Raw:
    """The same durable writes from a bare asyncpg connection: a signal stored and its row
    flipped and claimed in one statement, then the row moved on in another."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.n = 0

    async def setup(self, rows: int) -> None:
        await self.conn.execute(
            "DROP TABLE IF EXISTS w3raw_signals, w3raw_rows;"
            "CREATE TABLE w3raw_rows (id bigint PRIMARY KEY, status text, step text,"
            " locked_by text);"
            "CREATE TABLE w3raw_signals (id bigserial PRIMARY KEY, row_id bigint, name text);"
        )
        await self.conn.execute(
            "INSERT INTO w3raw_rows SELECT g, 'awaiting', 'wait', NULL"
            " FROM generate_series(1, $1) g",
            rows,
        )
        self.deliver = await self.conn.prepare(
            "WITH ins AS (INSERT INTO w3raw_signals (row_id, name) VALUES ($1, 'go')"
            " RETURNING id) UPDATE w3raw_rows SET status = 'executing', locked_by = 'me'"
            " WHERE id = $1 AND status = 'awaiting' RETURNING (SELECT id FROM ins)"
        )
        self.commit = await self.conn.prepare(
            "WITH d AS (DELETE FROM w3raw_signals WHERE id = $2) UPDATE w3raw_rows"
            " SET step = 'after', status = 'executing' WHERE id = $1 AND locked_by = 'me'"
        )

    async def one(self) -> tuple[float, float]:
        """The round trips of the delivery and of the commit."""
        self.n += 1
        sent = time.perf_counter()
        signal_id = await self.deliver.fetchval(self.n)
        delivered = time.perf_counter()
        await self.commit.fetchval(self.n, signal_id)
        return delivered - sent, time.perf_counter() - delivered

    async def drop(self) -> None:
        await self.conn.execute("DROP TABLE w3raw_signals, w3raw_rows")


async def trace(
    dsn: str, signals: int, seed: int = 7
) -> tuple[list[dict[str, float]], list[tuple[float, float]]]:
    """Each signal, then (after its own pause) one raw pair: the two interleaved, so the
    machine's load falls on both."""
    rng = random.Random(seed)
    traces: list[dict[str, float]] = []
    raw_latencies: list[tuple[float, float]] = []
    conn = await asyncpg.connect(dsn)
    raw = Raw(conn)
    await raw.setup(signals + 1)
    try:
        async with bench_engine(dsn, [AwaitThenNext], {QUEUE: 64}) as (engine, _):
            keys = [f"s{i}" for i in range(signals + 1)]
            await AwaitThenNext.start_many([AwaitThenNext.new(key=k) for k in keys], engine=engine)
            await engine.drain()
            await statement_means(dsn, reset=True)
            for i, key in enumerate(keys):
                await asyncio.sleep(rng.uniform(0.05, 0.25))
                woken = asyncio.get_running_loop().create_future()
                flows.WAITERS[key] = woken
                MARKS.clear()
                sent = time.perf_counter()
                await AwaitThenNext.signal(key, "go", engine=engine)
                async with asyncio.timeout(30):
                    await woken
                # Marks are first-come: the step after the woken one commits later and
                # leaves them as they were.
                marks = {**MARKS, "sent": sent, "woken": flows.WOKEN_AT[key]}
                await asyncio.sleep(rng.uniform(0.05, 0.25))
                raw_latency = await raw.one()
                if i:  # the first of each is the warm-up
                    traces.append(marks)
                    raw_latencies.append(raw_latency)
        await raw.drop()
    finally:
        await conn.close()
    return traces, raw_latencies


async def commit_pairs(dsn: str, n: int, seed: int = 7) -> dict[str, Any]:
    """The woken step's commit alone, through `outcome_batch` and `outcome_plain` in turn."""
    rng = random.Random(seed)
    times: dict[str, list[float]] = {"outcome_batch": [], "outcome_plain": []}
    async with bench_engine(dsn, [AwaitThenNext], {}) as (engine, _):
        committer = Committer(engine.store, engine.clock, engine.telemetry, {}, {})
        flushes = {
            "outcome_batch": committer._flush_general,
            "outcome_plain": committer._flush_plain,
        }
        conn = await asyncpg.connect(dsn)
        s = f'"{engine.schema}"'
        try:
            ids = [
                r["id"]
                for r in await conn.fetch(
                    f"INSERT INTO {s}.instances (workflow, queue, step, state, status, run_at,"
                    " locked_by, locked_until, inserted_at, updated_at)"
                    " SELECT 'bench.await_then_next', 'elsewhere', 'wait', 'null', 'executing',"
                    " now(), 'w1', now() + interval '1 hour', now(), now()"
                    " FROM generate_series(1, $1) RETURNING id",
                    2 * n,
                )
            ]
            signals = [
                r["id"]
                for r in await conn.fetch(
                    f"INSERT INTO {s}.signals (instance_id, name, payload, received_at)"
                    " SELECT id, 'go', 'null', now() FROM unnest($1::bigint[]) id"
                    " ORDER BY id RETURNING id",
                    ids,
                )
            ]
            await conn.execute(f"ANALYZE {s}.instances, {s}.signals")
        finally:
            await conn.close()
        for k in range(2 * n):
            name = ("outcome_batch", "outcome_plain")[(k + k // 2) % 2]  # ABBA
            item = BatchItem(
                ids[k], "w1", "goto", step="after", queue=QUEUE, consumed=(signals[k],)
            )
            await asyncio.sleep(rng.uniform(0.001, 0.005))
            started = time.perf_counter()
            done, busy = await flushes[name]([item])
            times[name].append(time.perf_counter() - started)
            if done != {ids[k]: None} or busy:
                raise RuntimeError(f"the commit of {ids[k]} did not go through: {done}, {busy}")
    pairs = [p / b for b, p in zip(times["outcome_batch"], times["outcome_plain"], strict=True)]
    return {
        "segment": "the woken step's commit alone",
        "n": n,
        "outcome_batch_p50_ms": round(statistics.median(times["outcome_batch"]) * 1000, 3),
        "outcome_plain_p50_ms": round(statistics.median(times["outcome_plain"]) * 1000, 3),
        "plain_over_batch": round(statistics.median(pairs), 3),
    }


async def warm(dsn: str, n: int) -> dict[str, Any]:
    """The engine's two statements and the raw pair, back to back (see the module)."""
    times: dict[str, list[float]] = {
        k: []
        for k in (
            "deliver",
            "outcome_batch",
            "outcome_plain",
            "raw_deliver",
            "raw_commit",
            "cpu_deliver",
            "cpu_commit",
            "cpu_raw_pair",
        )
    }
    conn = await asyncpg.connect(dsn)
    raw = Raw(conn)
    await raw.setup(n)
    try:
        async with bench_engine(dsn, [AwaitThenNext], {}) as (engine, _):
            committer = Committer(engine.store, engine.clock, engine.telemetry, {}, {})
            keys = [f"w{i}" for i in range(n)]
            await AwaitThenNext.start_many([AwaitThenNext.new(key=k) for k in keys], engine=engine)
            await conn.execute(
                f"UPDATE \"{engine.schema}\".instances SET status = 'awaiting',"
                " await_names = ARRAY['go']"
            )
            for i, key in enumerate(keys):
                cpu = time.process_time()
                sent = time.perf_counter()
                delivery = await engine.store.signal_deliver(
                    workflow="bench.await_then_next", id=None, key=key, name="go",
                    payload=b"null", now=None, locked_by="w#1", lease=timedelta(seconds=30),
                    queue=QUEUE,
                )  # fmt: skip
                delivered = time.perf_counter()
                cpu_delivered = time.process_time()
                if delivery is None:
                    raise RuntimeError(f"no instance {key} to signal")
                item = BatchItem(
                    delivery.instance_id, "w#1", "goto", step="after", queue=QUEUE,
                    consumed=(delivery.signal_id,),
                )  # fmt: skip
                name = ("outcome_batch", "outcome_plain")[i % 2]
                flush = committer._flush_plain if i % 2 else committer._flush_general
                await flush([item])
                times[name].append(time.perf_counter() - delivered)
                times["cpu_commit"].append(time.process_time() - cpu_delivered)
                times["deliver"].append(delivered - sent)
                times["cpu_deliver"].append(cpu_delivered - cpu)
                cpu = time.process_time()
                raw_deliver, raw_commit = await raw.one()
                times["cpu_raw_pair"].append(time.process_time() - cpu)
                times["raw_deliver"].append(raw_deliver)
                times["raw_commit"].append(raw_commit)
        await raw.drop()
    finally:
        await conn.close()
    return {
        "segment": "back to back, warm",
        "n": n,
        **{f"{k}_p50_ms": round(statistics.median(v) * 1000, 3) for k, v in times.items()},
    }


async def statement_means(dsn: str, reset: bool) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        try:
            if reset:
                await conn.execute("SELECT pg_stat_statements_reset()")
                return []
            rows = await conn.fetch(
                "SELECT calls, mean_exec_time, mean_plan_time, query FROM pg_stat_statements"
                " WHERE calls >= 100 ORDER BY total_exec_time DESC LIMIT 12"
            )
        except asyncpg.PostgresError:
            return []  # no pg_stat_statements on this server
        return [
            {
                "calls": r["calls"],
                "mean_exec_ms": round(r["mean_exec_time"], 3),
                "mean_plan_ms": round(r["mean_plan_time"], 3),
                "query": " ".join(r["query"].split())[:90],
            }
            for r in rows
        ]
    finally:
        await conn.close()


def quantiles(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "p50_ms": round(statistics.median(values) * 1000, 3),
        "p90_ms": round(values[int(len(values) * 0.9)] * 1000, 3),
    }


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn")
    parser.add_argument("--signals", type=int, default=200)
    parser.add_argument("--commits", type=int, default=0)
    parser.add_argument("--warm", type=int, default=0)
    args = parser.parse_args(argv)
    instrument()
    async with embedded_dsn(args.dsn) as dsn:
        traces, raw = await trace(dsn, args.signals) if args.signals else ([], [])
        means = await statement_means(dsn, reset=False)
        commits = commit_means = None
        if args.commits:
            await statement_means(dsn, reset=True)
            commits = await commit_pairs(dsn, args.commits)
            commit_means = await statement_means(dsn, reset=False)
        warmed = await warm(dsn, args.warm) if args.warm else None
    for label, start, end in SEGMENTS if traces else ():
        spans = [t[end] - t[start] for t in traces if start in t and end in t]
        print(json.dumps({"segment": label, "n": len(spans), **quantiles(spans)}))
    if raw:
        for label, spans in (
            ("raw asyncpg pair: the delivery", [d for d, _ in raw]),
            ("raw asyncpg pair: the commit", [c for _, c in raw]),
            ("raw asyncpg pair, both (interleaved with the signals)", [d + c for d, c in raw]),
        ):
            print(json.dumps({"segment": label, **quantiles(spans)}))
    for row in means:
        print(json.dumps(row))
    if commits is not None:
        print(json.dumps(commits))
        for row in commit_means or ():
            print(json.dumps(row))
    if warmed is not None:
        print(json.dumps(warmed))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
