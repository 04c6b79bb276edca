"""Stale outcomes (guarantee 2): a late commit from a worker that lost its claim changes nothing.

Deterministic: worker A (the "slow" engine) runs a step that waits on an asyncio.Event; the
manual clock moves past A's lease; worker B (another engine on the same schema) rescues the
instance with its reaper, claims it and moves it on; only then is A let go. A's commit must
be dropped (row, inbox and parent exactly as B left them) and reported as `outcome.stale`.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from e2e_support import row

import gendurable as gd
from gendurable.testing import MakeEngine, RecorderFactory
from recordings import recorded

pytestmark = pytest.mark.crash

LEASE = timedelta(minutes=10)  # the heartbeat (every lease/3 of real time) never fires here

ENTERED: dict[str, asyncio.Event] = recorded({})
GATES: dict[str, asyncio.Event] = recorded({})
RUNS: list[tuple[str | None, str, str]] = recorded([])


@gd.workflow(name="e2e.stale.contested")
class Contested:
    """`first` waits for its gate in the slow engine; elsewhere it finishes or parks."""

    class State(msgspec.Struct):
        trail: list[str] = msgspec.field(default_factory=list)
        slow: str = "done"  # what `first` returns in the slow engine: goto | goto_later | done
        park: bool = False  # elsewhere, `first` goes to `hold` instead of finishing

    @gd.step(start=True)
    async def first(self, state: State, ctx: gd.Context) -> gd.Outcome:
        who = ctx.engine.name
        RUNS.append((ctx.key, "first", who))
        state.trail.append(f"first@{who}")
        if who.startswith("slow"):
            assert ctx.key is not None
            ENTERED[ctx.key].set()
            await GATES[ctx.key].wait()
            if state.slow == "goto":
                return gd.goto(self.second)
            if state.slow == "goto_later":
                return gd.goto(self.second, delay=timedelta(seconds=1))
            return gd.done({"by": who, "trail": state.trail})
        if state.park:
            return gd.goto(self.hold)
        return gd.done({"by": who, "trail": state.trail})

    @gd.step
    async def second(self, state: State, ctx: gd.Context) -> gd.Outcome:
        RUNS.append((ctx.key, "second", ctx.engine.name))
        return gd.done({"by": ctx.engine.name, "trail": state.trail})

    @gd.step
    @gd.await_signals("go")
    async def hold(self, state: State, ctx: gd.Context) -> gd.Outcome:
        RUNS.append((ctx.key, "hold", ctx.engine.name))
        state.trail.append("hold")
        return gd.goto(self.after)

    @gd.step
    @gd.await_signals("later")
    async def after(self, state: State, ctx: gd.Context) -> gd.Outcome:
        RUNS.append((ctx.key, "after", ctx.engine.name))
        state.trail.append("after")
        return gd.done({"by": ctx.engine.name, "trail": state.trail})


class Race:
    """The slow engine A holding `key` in `first`, and the means to let B overtake it."""

    def __init__(
        self,
        make_engine: MakeEngine,
        recorder: RecorderFactory,
        clock: gd.ManualClock,
        db: asyncpg.Connection,
        schema: str,
    ) -> None:
        self.make_engine = make_engine
        self.recorder = recorder
        self.clock = clock
        self.db = db
        self.schema = schema

    async def slow_claims(self, key: str, state: Contested.State) -> int:
        """Start `key`; the slow engine (one slot: it claims nothing else) enters `first`."""
        ENTERED[key], GATES[key] = asyncio.Event(), asyncio.Event()
        self.slow = await self.make_engine(
            workflows=[Contested],
            name=f"slow-{key}",
            queues={"default": 1},
            clock=self.clock,
            lease=LEASE,
        )
        self.slow_events = self.recorder(self.slow)
        handle = await Contested.start(key=key, state=state, engine=self.slow)
        async with asyncio.timeout(10):
            await ENTERED[key].wait()
        self.id = handle.id
        self.slow_locked_by = (await row(self.db, self.schema, handle.id))["locked_by"]
        return handle.id

    async def fast_overtakes(self) -> gd.Engine:
        """Move past the slow lease; the fast engine's reaper rescues, and it runs the rest."""
        self.clock.advance(LEASE + timedelta(seconds=1))
        self.fast = await self.make_engine(
            workflows=[Contested], name=f"fast-{self.id}", clock=self.clock, lease=LEASE
        )
        self.fast_events = self.recorder(self.fast)
        await self.fast.drain()
        rescued = self.fast_events.of(("reaper", "rescued"), id=self.id)
        assert [r["status"] for r in rescued] == ["available"]
        return self.fast

    async def snapshot(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        signals = await self.db.fetch(
            f'SELECT * FROM "{self.schema}".signals WHERE instance_id = $1 ORDER BY id', self.id
        )
        return await row(self.db, self.schema, self.id), [dict(s) for s in signals]

    async def slow_commits_late(self, key: str) -> dict[str, Any]:
        """Let the slow step return; wait for its commit to be reported stale.

        The slow engine is stopped then: with its slot free it would compete for the rest.
        """
        GATES[key].set()
        [stale] = await self.slow_events.wait(("outcome", "stale"), id=self.id)
        async with asyncio.timeout(10):
            await self.slow.schedulers["default"].idle()
            await self.slow.stop()
        return stale


@pytest.fixture
def race(
    make_engine: MakeEngine,
    recorder: RecorderFactory,
    manual_clock: gd.ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> Race:
    return Race(make_engine, recorder, manual_clock, db, gendurable_schema)


@pytest.mark.parametrize("slow", ["goto", "goto_later"])
async def test_stale_goto_after_another_worker_finished_changes_nothing(
    race: Race, slow: str
) -> None:
    key = f"stale-{slow}"
    await race.slow_claims(key, Contested.State(slow=slow))
    fast = await race.fast_overtakes()
    before = await race.snapshot()
    assert before[0]["status"] == "done"
    assert before[0]["step"] == "first"

    stale = await race.slow_commits_late(key)

    assert await race.snapshot() == before
    assert stale["locked_by"] == race.slow_locked_by
    assert (stale["step"], stale["decision"]) == ("first", "MoveTo")
    assert [r for r in RUNS if r[1] == "second"] == []  # no rewind, no step after it
    result = await Contested.result(key, timeout=5, engine=fast)
    assert result == {"by": fast.name, "trail": [f"first@{fast.name}"]}
    assert race.fast_events.of(("outcome", "stale")) == []


async def test_stale_done_after_another_worker_finished_fires_no_second_terminal_effect(
    race: Race, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    key = "stale-done"
    child = await race.slow_claims(key, Contested.State(slow="done"))
    # A parent waiting for this child and one more; no engine knows its workflow, so nothing
    # runs it: only the children's terminal outcomes touch it.
    parent = await db.fetchval(
        f'INSERT INTO "{gendurable_schema}".instances (workflow, queue, step, status, '
        "pending_children, run_at, inserted_at, updated_at) "
        "VALUES ('e2e.stale.parent', 'default', 'join', 'waiting', 2, now(), now(), now()) "
        "RETURNING id"
    )
    await db.execute(
        f'UPDATE "{gendurable_schema}".instances SET parent_id = $1 WHERE id = $2', parent, child
    )
    fast = await race.fast_overtakes()
    before = await race.snapshot()
    parent_before = await row(db, gendurable_schema, parent)
    assert before[0]["status"] == "done"
    assert (parent_before["status"], parent_before["pending_children"]) == ("waiting", 1)

    stale = await race.slow_commits_late(key)

    assert await race.snapshot() == before
    assert await row(db, gendurable_schema, parent) == parent_before
    assert stale["decision"] == "Finish"
    assert await Contested.result(key, timeout=5, engine=fast) == {
        "by": fast.name,
        "trail": [f"first@{fast.name}"],
    }


async def test_stale_done_while_another_worker_parked_it_keeps_it_alive(
    race: Race, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    key = "stale-parked"
    await race.slow_claims(key, Contested.State(slow="done", park=True))
    fast = await race.fast_overtakes()
    # Parked in `hold`; a signal for the later step `after` waits in the inbox meanwhile.
    await Contested.signal(key, "later", {"n": 1}, engine=fast)
    before = await race.snapshot()
    assert (before[0]["status"], before[0]["step"]) == ("awaiting", "hold")
    assert [s["name"] for s in before[1]] == ["later"]

    stale = await race.slow_commits_late(key)

    # Not finished, no result, inbox not purged: exactly as B left it.
    assert await race.snapshot() == before
    assert stale["decision"] == "Finish"
    await Contested.signal(key, "go", engine=fast)
    await fast.drain()
    assert await Contested.result(key, timeout=5, engine=fast) == {
        "by": fast.name,
        "trail": [f"first@{fast.name}", "hold", "after"],
    }
    assert [r[1] for r in RUNS if r[2] == fast.name] == ["first", "hold", "after"]
