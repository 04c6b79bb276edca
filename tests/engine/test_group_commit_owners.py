"""Two claims of one instance committing together: the one that was lost, and the one that
took the instance over.

After an outage a worker can hold both: a claim it took before the database went away (its
step resumed once the database was back, its lease long expired) and the claim that took the
instance over after the reaper handed it out again, which the same worker may have won. Their
outcomes can reach the group commit together. Only the owner's commits; the lost claim is
told so, and does not run on as if it had committed.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg

import gendurable as gd
from gendurable.engine.committer import Committer
from gendurable.engine.group_commit import STALE, BatchItem
from gendurable.testing import MakeEngine

LEASE = timedelta(seconds=30)


@gd.workflow(name="owners.flow", lease=LEASE)
class Flow:
    @gd.step(start=True)
    async def first(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.second)

    @gd.step
    async def second(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


async def test_group_commit_of_a_lost_claim_beside_its_successor_is_stale(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Flow], queues=None)
    store, clock = engine.store, engine.clock
    id = (await Flow.start(engine=engine)).id

    async def claim(locked_by: str) -> list[int]:
        rows = await store.instance_claim(
            queue="default",
            limit=10,
            locked_by=locked_by,
            leases=[LEASE],
            now=clock.now(),
            workflows=["owners.flow"],
            steps=["first"],
        )
        return [r.id for r in rows if r.go]

    assert await claim("w#1") == [id]
    clock.advance(LEASE + timedelta(seconds=1))  # type: ignore[attr-defined]
    assert engine.reaper is not None
    assert (await engine.reaper.run_once()).rescued == 1
    assert await claim("w#2") == [id]
    committer = Committer(store, clock, engine.telemetry, {"owners.flow": LEASE})

    def moved(locked_by: str) -> BatchItem:
        return BatchItem(
            id,
            locked_by,
            "continue",
            step="second",
            state=b'"' + locked_by.encode() + b'"',
            lease=LEASE,
        )

    lost, owner = await asyncio.gather(
        committer.group.submit(moved("w#1")), committer.group.submit(moved("w#2"))
    )

    assert lost is STALE
    assert owner is not STALE
    row = await db.fetchrow(
        f'SELECT step, state, locked_by FROM "{gendurable_schema}".instances WHERE id = $1', id
    )
    assert row is not None
    assert (row["step"], row["state"], row["locked_by"]) == ("second", '"w#2"', "w#2")
