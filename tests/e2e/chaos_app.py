"""The app of the chaos run (`gendurable worker chaos_app:engine`); the client imports it too.

Every feature at once, on one queue: signals with `reawait` and await timeouts (`Pack`),
nested children (`Tree` -> `Branch` -> `Leaf`), concurrency keys (`Account`, and the
leaves), a partitioned rate limit (`Call`).

Every step execution is recorded in the side-effect log `$CHAOS_LOG` (one `os.write` on an
`O_APPEND` file per record, so records of several processes never interleave): an `enter`
record when the step starts and an `exit` record just before it returns, carrying the state
it saw and the state it commits. Each step counts itself in the state (`n`, the number of
committed step executions, and `trail`, their tokens), so the checks can tell from outside
which execution's state was committed (see `chaos_checks`).

Configured by the environment, read at import (the worker's engine is built from it):
`CHAOS_DSN`, `CHAOS_SCHEMA`, `CHAOS_LOG`, `CHAOS_LEASE` (seconds), `CHAOS_CONCURRENCY`,
`CHAOS_PACK_TIMEOUT` and `CHAOS_LINGER_TIMEOUT` (seconds, the await timeouts).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from datetime import timedelta
from typing import Any

import msgspec

import gendurable as gd

QUEUE = "chaos"
LIMIT_NAME = "chaos_api"
LIMIT = gd.Limit(4, per=timedelta(seconds=1), burst=4)
"""Per tenant: each partition is a bucket of its own with these numbers."""
MAX_ATTEMPTS = 200
"""Rescues count attempts: a row may lose many workers before it finishes."""
PACK_TIMEOUT = timedelta(seconds=float(os.environ.get("CHAOS_PACK_TIMEOUT", "60")))
LINGER_TIMEOUT = timedelta(seconds=float(os.environ.get("CHAOS_LINGER_TIMEOUT", "2")))

_serial = itertools.count()
_fd: int | None = None


def _write(record: dict[str, Any]) -> None:
    global _fd
    if _fd is None:
        _fd = os.open(os.environ["CHAOS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, msgspec.json.encode(record) + b"\n")


class Run:
    """One step execution being recorded: `Run(ctx, state)` as it starts, `run.end(state)`
    just before it returns."""

    def __init__(self, ctx: gd.Context, state: Any) -> None:
        self.record: dict[str, Any] = {
            "wf": ctx.workflow,
            "id": ctx.id,
            "key": ctx.key,
            "step": ctx.step,
            "attempt": ctx.attempt,
            "pid": os.getpid(),
            "tok": f"{os.getpid()}.{next(_serial)}",
            "n": state.n,
            "t0": time.monotonic(),
        }
        self.seen = msgspec.to_builtins(state)
        _write({"ev": "enter", **self.record})

    def end(self, state: Any, **extra: Any) -> None:
        """Count this execution in the state, then record what it saw and what it commits."""
        state.n += 1
        state.trail.append(self.record["tok"])
        _write(
            {
                "ev": "exit",
                **self.record,
                "t1": time.monotonic(),
                "seen": self.seen,
                "commit": msgspec.to_builtins(state),
                **extra,
            }
        )


async def work(low: float, high: float) -> None:
    """Stands for a call to some service."""
    await asyncio.sleep(random.uniform(low, high))


class Item(msgspec.Struct):
    sid: int


@gd.workflow(name="chaos.pack", queue=QUEUE, max_attempts=MAX_ATTEMPTS)
class Pack:
    """Accumulates `need` signals with `reawait`; a lonely pack is never signalled and times out."""

    class State(msgspec.Struct):
        need: int = 0
        lonely: bool = False
        items: list[int] = msgspec.field(default_factory=list)
        timed_out: bool = False
        n: int = 0
        trail: list[str] = msgspec.field(default_factory=list)

    @gd.step(start=True)
    async def prepare(self, state: State, ctx: gd.Context) -> gd.Outcome:
        run = Run(ctx, state)
        await work(0, 0.1)  # signals sent meanwhile race the park
        run.end(state)
        return gd.goto(self.linger) if state.lonely else gd.goto(self.collect)

    @gd.step
    @gd.await_signals(item=Item, timeout=PACK_TIMEOUT)
    async def collect(self, state: State, ctx: gd.Context) -> gd.Outcome:
        run = Run(ctx, state)
        sids = [s.payload.sid for s in ctx.awaited]
        if len(sids) >= state.need or ctx.timed_out:
            state.items = sids
            state.timed_out = ctx.timed_out
            run.end(state, sids=sids, timed_out=ctx.timed_out)
            return gd.goto(self.finish)  # consumes exactly the signals seen
        run.end(state, sids=sids, timed_out=False)
        return gd.reawait()

    @gd.step
    @gd.await_signals(item=Item, timeout=LINGER_TIMEOUT)
    async def linger(self, state: State, ctx: gd.Context) -> gd.Outcome:
        run = Run(ctx, state)
        state.items = [s.payload.sid for s in ctx.awaited]
        state.timed_out = ctx.timed_out
        run.end(state, sids=state.items, timed_out=ctx.timed_out)
        return gd.goto(self.finish)

    @gd.step
    async def finish(self, state: State, ctx: gd.Context) -> gd.Outcome:
        run = Run(ctx, state)
        run.end(state)
        return gd.done({"items": state.items, "timed_out": state.timed_out})


@gd.workflow(name="chaos.leaf", queue=QUEUE, max_attempts=MAX_ATTEMPTS)
class Leaf:
    """A grandchild; it shares concurrency keys with the accounts."""

    class State(msgspec.Struct):
        value: int
        n: int = 0
        trail: list[str] = msgspec.field(default_factory=list)

    @gd.step(start=True)
    async def square(self, state: State, ctx: gd.Context) -> gd.Outcome:
        run = Run(ctx, state)
        await work(0.02, 0.12)
        run.end(state)
        return gd.done({"value": state.value * state.value})


@gd.workflow(name="chaos.branch", queue=QUEUE, max_attempts=MAX_ATTEMPTS)
class Branch:
    """A child: spawns its leaves (possibly none), then reports them."""

    class State(msgspec.Struct):
        index: int
        leaves: list[int] = msgspec.field(default_factory=list)
        """The value of each leaf."""
        cks: list[str] = msgspec.field(default_factory=list)
        """The concurrency key of each leaf."""
        n: int = 0
        trail: list[str] = msgspec.field(default_factory=list)

    @gd.step(start=True)
    async def grow(self, state: State, ctx: gd.Context) -> gd.Outcome:
        run = Run(ctx, state)
        leaves = [
            Leaf.new(key=f"{ctx.key}/l{j}", state=Leaf.State(value=v), concurrency_key=ck)
            for j, (v, ck) in enumerate(zip(state.leaves, state.cks, strict=True))
        ]
        run.end(state)
        return gd.spawn(leaves, then=self.report)

    @gd.step
    async def report(self, state: State, ctx: gd.Context) -> gd.Outcome:
        run = Run(ctx, state)
        leaves = [[c.key, c.status, c.result] for c in ctx.children]
        run.end(state, children=[c.id for c in ctx.children])
        return gd.done({"index": state.index, "leaves": leaves})


@gd.workflow(name="chaos.tree", queue=QUEUE, max_attempts=MAX_ATTEMPTS)
class Tree:
    """A parent: spawns its branches (children, some with children of their own)."""

    class State(msgspec.Struct):
        branches: list[list[int]] = msgspec.field(default_factory=list)
        """The leaf values of each branch."""
        cks: list[list[str]] = msgspec.field(default_factory=list)
        n: int = 0
        trail: list[str] = msgspec.field(default_factory=list)

    @gd.step(start=True)
    async def fan(self, state: State, ctx: gd.Context) -> gd.Outcome:
        run = Run(ctx, state)
        branches = [
            Branch.new(key=f"{ctx.key}/b{i}", state=Branch.State(index=i, leaves=v, cks=c))
            for i, (v, c) in enumerate(zip(state.branches, state.cks, strict=True))
        ]
        run.end(state)
        return gd.spawn(branches, then=self.gather)

    @gd.step
    async def gather(self, state: State, ctx: gd.Context) -> gd.Outcome:
        run = Run(ctx, state)
        branches = [[c.key, c.status, c.result] for c in ctx.children]
        run.end(state, children=[c.id for c in ctx.children])
        return gd.done({"branches": branches})


@gd.workflow(name="chaos.account", queue=QUEUE, max_attempts=MAX_ATTEMPTS)
class Account:
    """Two steps through the queue under a concurrency key shared with other instances."""

    class State(msgspec.Struct):
        amount: int
        balance: int = 0
        n: int = 0
        trail: list[str] = msgspec.field(default_factory=list)

    @gd.step(start=True)
    async def debit(self, state: State, ctx: gd.Context) -> gd.Outcome:
        run = Run(ctx, state)
        await work(0.02, 0.12)
        state.balance -= state.amount
        run.end(state)
        # Through the queue (a delay): the key is free for another instance in between.
        return gd.goto(self.credit, delay=timedelta(milliseconds=1))

    @gd.step
    async def credit(self, state: State, ctx: gd.Context) -> gd.Outcome:
        run = Run(ctx, state)
        await work(0.02, 0.12)
        state.balance += 2 * state.amount
        run.end(state)
        return gd.done({"balance": state.balance})


@gd.workflow(name="chaos.call", queue=QUEUE, max_attempts=MAX_ATTEMPTS)
class Call:
    """A call to a tenant's API, under that tenant's bucket of the shared limit."""

    class State(msgspec.Struct):
        tenant: str
        n: int = 0
        trail: list[str] = msgspec.field(default_factory=list)

    @gd.step(start=True)
    async def prep(self, state: State, ctx: gd.Context) -> gd.Outcome:
        run = Run(ctx, state)
        run.end(state)
        return gd.goto(self.call)

    @gd.step(rate_limit=LIMIT_NAME, partition=lambda s: s.tenant)
    async def call(self, state: State, ctx: gd.Context) -> gd.Outcome:
        run = Run(ctx, state)
        await work(0.02, 0.12)
        run.end(state, part=state.tenant)
        return gd.done({"tenant": state.tenant})


WORKFLOWS = [Pack, Tree, Branch, Leaf, Account, Call]
RATE_LIMITS = {LIMIT_NAME: LIMIT}


def engine() -> gd.Engine:
    """The worker's engine, on the database and schema the run gives."""
    lease = float(os.environ.get("CHAOS_LEASE", "3"))
    return gd.Engine(
        os.environ["CHAOS_DSN"],
        workflows=WORKFLOWS,
        name="chaos-worker",
        schema=os.environ["CHAOS_SCHEMA"],
        queues={QUEUE: int(os.environ.get("CHAOS_CONCURRENCY", "12"))},
        rate_limits=RATE_LIMITS,
        lease=timedelta(seconds=lease),
        reap_interval=timedelta(seconds=0.5),
        poll_interval=timedelta(seconds=0.25),
        statement_timeout=timedelta(seconds=10),
        gc_retention=None,
    )
