"""A load that makes every multi-row writer meet the others on overlapping keys and rows.

Shared by `test_deadlock_freedom.py` (the engine as shipped must never deadlock under it)
and `bench/deadlock_variants.py` (copies of a writer without the lock order must).

Each round runs at once, spread over several engines (each with its own pool): bosses that
spawn kids (some nested bosses) on keys drawn from one small pool, direct starts and
batches of kids on the same keys, cancels of bosses with live kids (cascading) together with
cancels of one of their kids, lone cancels, and signals that let waiting kids finish. The
engines run everything in the background meanwhile: kids that finish at once commit while
their bosses are cancelled, spawns meet held keys, claims meet cancels.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec

import gendurable as gd

POOL = [f"k{i:02d}" for i in range(32)]
LIVE = "('available', 'executing', 'awaiting', 'waiting')"


@gd.workflow(name="stress.kid", max_attempts=3, backoff=gd.Backoff(base=timedelta(seconds=0.05)))
class Kid:
    """Finishes at once after a short pause, or holds until poked."""

    class State(msgspec.Struct):
        hold: bool = False
        pause: float = 0.0

    @gd.step(start=True)
    async def begin(self, state: State, ctx: gd.Context) -> gd.Outcome:
        if state.hold:
            return gd.goto(self.hold_on)
        await asyncio.sleep(state.pause)
        return gd.done()

    @gd.step
    @gd.await_signals("poke")
    async def hold_on(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


@gd.workflow(name="stress.boss", max_attempts=2, backoff=gd.Backoff(base=timedelta(seconds=0.05)))
class Boss:
    """Spawns kids on pool keys (and maybe a nested boss), then joins."""

    class State(msgspec.Struct):
        kids: list[tuple[str, bool, float]]
        sub: str | None = None
        sub_kids: list[tuple[str, bool, float]] = msgspec.field(default_factory=list)

    @gd.step(start=True)
    async def fan_out(self, state: State, ctx: gd.Context) -> gd.Outcome:
        children: list[Any] = [
            Kid.new(key=k, state=Kid.State(hold=h, pause=p)) for k, h, p in state.kids
        ]
        if state.sub is not None:
            children.append(Boss.new(key=state.sub, state=Boss.State(kids=state.sub_kids)))
        return gd.spawn(children, then=self.join)

    @gd.step
    async def join(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done(len(ctx.children))


WORKFLOWS = [Boss, Kid]

# Copies of a writer that break the lock order: (statement, text as shipped, replacement).
VARIANTS: dict[str, list[tuple[str, str, str]]] = {
    # The group commit waits for its locks (no SKIP LOCKED) and takes children before their
    # parents, against cancels that lock a parent and then its descendants: in both of its
    # statements, since most batches of this load are plain ones (`outcome_plain`).
    "batch_desc": [
        (
            "outcome_batch",
            "    ORDER BY i.id\n    FOR UPDATE OF i SKIP LOCKED\n",
            "    ORDER BY i.id DESC\n    FOR UPDATE OF i\n",
        ),
        (
            "outcome_plain",
            "    ORDER BY i.id\n    FOR UPDATE OF i SKIP LOCKED\n",
            "    ORDER BY i.id DESC\n    FOR UPDATE OF i\n",
        ),
        ("outcome_plain", "    FOR UPDATE OF p SKIP LOCKED\n", "    FOR UPDATE OF p\n"),
    ],
    # instance_cancel locks its target before the target's parent.
    "cancel_child_first": [
        (
            "instance_cancel",
            "    ORDER BY i.id\n    FOR UPDATE OF i\n",
            "    ORDER BY i.id DESC\n    FOR UPDATE OF i\n",
        )
    ],
    # instance_insert_many inserts in entry order, not key order: racing spawns and batches
    # take the unique-key locks in different orders.
    "insert_unordered": [
        (
            "instance_insert_many",
            'ORDER BY r.workflow COLLATE "C", r.key COLLATE "C", r.ord',
            "ORDER BY r.ord",
        )
    ],
}


def use_variant(engine: gd.Engine, variant: str) -> None:
    """Make a running engine use the variant's copy of its statements."""
    for name, old, new in VARIANTS[variant]:
        statement = engine.store.db.sql[name]
        if statement.sql.count(old) != 1:
            raise AssertionError(f"variant {variant} no longer applies to {name}")
        engine.store.db.sql[name] = replace(statement, sql=statement.sql.replace(old, new))


def fast_deadlocks(dsn: str) -> str:
    """`dsn` with `deadlock_timeout` at 50 ms: a deadlock is detected (and costs) that long."""
    return dsn + ("&" if "?" in dsn else "?") + "deadlock_timeout=50ms"


@dataclass
class Tally:
    """What a run of the load met."""

    rounds: int = 0
    ops: int = 0
    deadlocks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class _Watch(logging.Handler):
    """Collects what the engines log while the load runs (their background failures)."""

    def __init__(self, tally: Tally) -> None:
        super().__init__(logging.WARNING)
        self.tally = tally

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        text = f"{record.getMessage()}: {exc!r}" if exc else record.getMessage()
        if isinstance(exc, asyncpg.DeadlockDetectedError) or "deadlock" in text.lower():
            self.tally.deadlocks.append(text)
        elif record.levelno >= logging.ERROR:
            self.tally.errors.append(text)


def _kids(rng: random.Random, n: int) -> list[tuple[str, bool, float]]:
    return [(k, rng.random() < 0.3, rng.uniform(0, 0.002)) for k in rng.sample(POOL, n)]


async def run(
    engines: list[gd.Engine], rounds: int, *, seed: int = 0, until_deadlock: bool = False
) -> Tally:
    """Run `rounds` rounds of the load over `engines` (serving `WORKFLOWS`); with
    `until_deadlock`, stop after the first round that met a deadlock."""
    rng = random.Random(seed)
    tally = Tally()
    bosses: list[tuple[str, list[str]]] = []
    watch = _Watch(tally)
    logger = logging.getLogger("gendurable")
    logger.addHandler(watch)

    async def op(action: Any) -> None:
        tally.ops += 1
        try:
            await action
        except gd.NoTarget:
            pass  # cancelled or signalled something that had ended: expected
        except asyncpg.DeadlockDetectedError as exc:
            tally.deadlocks.append(repr(exc))
        except Exception as exc:
            tally.errors.append(repr(exc))

    def engine() -> gd.Engine:
        return rng.choice(engines)

    try:
        for round in range(rounds):
            actions: list[Any] = []
            for j in range(2):
                key = f"b{round}-{j}"
                kids = _kids(rng, rng.randint(2, 5))
                sub = f"s{round}-{j}" if rng.random() < 0.3 else None
                state = Boss.State(kids=kids, sub=sub, sub_kids=_kids(rng, 2) if sub else [])
                bosses.append((key, [k for k, _, _ in kids]))
                actions.append(Boss.start(key=key, state=state, engine=engine()))
            for _ in range(2):
                state = Kid.State(hold=rng.random() < 0.3)
                actions.append(Kid.start(key=rng.choice(POOL), state=state, engine=engine()))
            actions.append(
                engine().start_many(
                    Kid.new(key=k, state=Kid.State(hold=rng.random() < 0.3))
                    for k in rng.sample(POOL, 4)
                )
            )
            if len(bosses) > 4:
                # A boss and one of its kids cancelled at the same moment, and a lone boss.
                key, kids = rng.choice(bosses[-12:-2])
                actions.append(Boss.cancel(key, engine=engine()))
                actions.append(Kid.cancel(rng.choice(kids), engine=engine()))
                actions.append(Boss.cancel(rng.choice(bosses[-12:-2])[0], engine=engine()))
            actions.append(Kid.cancel(rng.choice(POOL), engine=engine()))
            for k in rng.sample(POOL, 6):
                actions.append(Kid.signal(k, "poke", engine=engine()))
            rng.shuffle(actions)
            await asyncio.gather(*(op(a) for a in actions))
            tally.rounds += 1
            if until_deadlock and tally.deadlocks:
                break
    finally:
        logger.removeHandler(watch)
    return tally


async def broken_counts(db: asyncpg.Connection, schema: str) -> list[dict[str, Any]]:
    """Live parents whose pending count is not their number of live children (from their
    latest spawn), and live children of ended parents. Both hold in every snapshot: a
    spawn, a child's end and a cascade each commit parent and children together."""
    rows = await db.fetch(
        f"""
        SELECT p.id, p.status::text AS status, p.pending_children AS pending,
               (SELECT count(*) FROM "{schema}".instances c
                WHERE c.parent_id = p.id AND c.id >= coalesce(p.children_from, 0)
                  AND c.status IN {LIVE}) AS live_children
        FROM "{schema}".instances p
        WHERE p.status IN {LIVE}
        """
    )
    wrong = [dict(r) for r in rows if r["pending"] != r["live_children"]]
    orphans = await db.fetch(
        f"""
        SELECT c.id, c.status::text AS status, p.id AS parent, p.status::text AS parent_status
        FROM "{schema}".instances c JOIN "{schema}".instances p ON p.id = c.parent_id
        WHERE c.status IN {LIVE} AND p.status NOT IN {LIVE}
        """
    )
    return wrong + [dict(r) for r in orphans]
