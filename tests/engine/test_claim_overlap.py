"""A slot whose step has only its commit left to wait for is claimed for again.

A queue's concurrency bounds the steps running user code. A step that has returned its last
outcome of a claim no longer runs any: its slot goes to the next due row at once, so the
claim of the next batch overlaps the commit of the previous one instead of following it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

import gendurable as gd
from gendurable.testing import MakeEngine

QUEUE = "overlap"
started: dict[str, asyncio.Event] = {}


def _event(key: str) -> asyncio.Event:
    return started.setdefault(key, asyncio.Event())


@gd.workflow(name="overlap.one", queue=QUEUE)
class One:
    @gd.step(start=True)
    async def run(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        _event(ctx.key or "").set()
        return gd.done(ctx.key)


async def test_a_slot_waiting_for_its_commit_is_claimed_for_again(
    make_engine: MakeEngine, gendurable_schema: str, db: asyncpg.Connection
) -> None:
    started.clear()
    engine = await make_engine(workflows=[One], queues={QUEUE: 1})
    # Holds every group commit that ends an instance (its terminal effects read the inboxes):
    # the first step's outcome cannot commit.
    await db.execute("BEGIN")
    await db.execute(f'LOCK TABLE "{gendurable_schema}".signals IN ACCESS EXCLUSIVE MODE')
    try:
        await One.start_many([One.new(key="a"), One.new(key="b")], engine=engine)
        await asyncio.wait_for(_event("a").wait(), timeout=30)
        # One slot, and `a` has not committed: `b` runs only if a's slot was handed on.
        await asyncio.wait_for(_event("b").wait(), timeout=30)
        statuses = await db.fetch(
            f'SELECT key, status::text AS status FROM "{gendurable_schema}".instances ORDER BY key'
        )
        assert [(r["key"], r["status"]) for r in statuses] == [
            ("a", "executing"),
            ("b", "executing"),
        ]
    finally:
        await db.execute("ROLLBACK")
    assert await One.result("a", timeout=30, engine=engine) == "a"
    assert await One.result("b", timeout=30, engine=engine) == "b"
