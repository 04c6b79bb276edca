"""The terminal effects (purge the inbox, count the parent down, announce the end, cancel
live descendants) happen exactly once on every path that ends an instance, and never for a
stale outcome, even one committed in the same group-commit batch as fresh ones.

Children run on a queue the engine does not serve, so the test plays their workers by hand
(claims with chosen worker ids, leases expired by the manual clock).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from commit_support import GROUP_COMMITS, commit, finish, finish_batch, move
from gendurable.testing import MakeEngine

LEASE = timedelta(seconds=30)
SIDE = "side"


@gd.workflow(name="effects.child", queue=SIDE, max_attempts=2)
class Child:
    @gd.step(start=True)
    @gd.await_signals("ping")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


@gd.workflow(name="effects.parent")
class Parent:
    @gd.step(start=True)
    async def fan_out(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.spawn([Child.new(key=k) for k in state["keys"]], then=self.join)

    @gd.step
    async def join(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done({c.key: c.status for c in ctx.children})


class Announcements:
    """Counts the payloads NOTIFYed on the engine's channel."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.changed = asyncio.Event()

    def __call__(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        self.seen[str(payload)] += 1
        self.changed.set()

    async def settle(self, db: asyncpg.Connection) -> None:
        # A round trip on the listening connection delivers what was sent before it.
        await db.execute("SELECT 1")


class Rig:
    """The engine, SQL access and hand-played workers of the side queue."""

    def __init__(
        self,
        engine: gd.Engine,
        db: asyncpg.Connection,
        schema: str,
        statement: str = "outcome_batch",
    ) -> None:
        self.engine = engine
        self.db = db
        self.schema = schema
        self.statement = statement

    async def claim(self, locked_by: str, limit: int = 10) -> list[int]:
        spec = Child.spec
        rows = await self.engine.store.instance_claim(
            queue=SIDE,
            limit=limit,
            locked_by=locked_by,
            leases=[LEASE],
            now=self.engine.clock.now(),
            workflows=[spec.name],
            steps=["wait"],
        )
        return sorted(r.id for r in rows if r.go)

    async def commit(self, *outcomes: tuple[int, str, str]) -> set[int]:
        """Group-commit terminal outcomes (id, locked_by, status) in one statement."""
        return await finish_batch(self.engine, outcomes, statement=self.statement)

    async def row(self, id: int) -> asyncpg.Record:
        found = await self.db.fetchrow(
            f"SELECT status::text AS status, locked_by, pending_children, attempt "
            f'FROM "{self.schema}".instances WHERE id = $1',
            id,
        )
        assert found is not None
        return found

    async def inbox(self, id: int) -> int:
        return int(
            await self.db.fetchval(
                f'SELECT count(*) FROM "{self.schema}".signals WHERE instance_id = $1', id
            )
        )

    async def expire(self) -> None:
        self.engine.clock.advance(LEASE + timedelta(seconds=1))  # type: ignore[attr-defined]
        assert self.engine.reaper is not None
        await self.engine.reaper.run_once()


async def lock_waiter(db: asyncpg.Connection) -> None:
    """Return once some backend waits for a row lock (no event tells it; poll the server)."""
    async with asyncio.timeout(10):
        while not await db.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"):  # noqa: ASYNC110 (no event for a lock wait)
            await asyncio.sleep(0.01)


async def rig_with_children(
    make_engine: MakeEngine,
    db: asyncpg.Connection,
    schema: str,
    keys: list[str],
    statement: str = "outcome_batch",
) -> tuple[Rig, int, dict[str, int]]:
    engine = await make_engine(workflows=[Parent, Child], queues={"default": 2}, lease=LEASE)
    rig = Rig(engine, db, schema, statement)
    parent = await Parent.start(key="p", state={"keys": keys})
    await engine.drain()
    assert (await rig.row(parent.id))["status"] == "waiting"
    ids = {k: (await Child.get(k)).id for k in keys}
    for key in keys:
        await Child.signal(key, "ping")  # stored in the inbox; the terminal effect purges it
    return rig, parent.id, ids


@pytest.mark.parametrize("statement", GROUP_COMMITS)
async def test_group_commit_drops_a_stale_outcome_committed_beside_a_fresh_one(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str, statement: str
) -> None:
    rig, parent, ids = await rig_with_children(
        make_engine, db, gendurable_schema, ["a", "b"], statement
    )
    heard = Announcements()
    await db.add_listener(rig.engine.store.db.channel, heard)
    assert await rig.claim("w1") == sorted(ids.values())
    await rig.expire()  # w1 lost both claims; w2 holds them now
    assert await rig.claim("w2") == sorted(ids.values())

    committed = await rig.commit((ids["a"], "w1", "done"), (ids["b"], "w2", "done"))
    await heard.settle(db)

    assert committed == {ids["b"]}
    stale = await rig.row(ids["a"])
    assert (stale["status"], stale["locked_by"]) == ("executing", "w2")
    assert await rig.inbox(ids["a"]) == 1
    assert await rig.inbox(ids["b"]) == 0
    assert (await rig.row(parent))["pending_children"] == 1
    assert heard.seen[f"t:{ids['a']}"] == 0
    assert heard.seen[f"t:{ids['b']}"] == 1

    # The owner's own commit ends it: the parent is counted down to zero, once.
    assert await rig.commit((ids["a"], "w2", "done")) == {ids["a"]}
    assert await rig.commit((ids["a"], "w2", "done")) == set()
    await heard.settle(db)
    after = await rig.row(parent)
    assert after["pending_children"] == 0
    assert after["status"] != "waiting"
    assert heard.seen[f"t:{ids['a']}"] == 1


@pytest.mark.parametrize("statement", GROUP_COMMITS)
async def test_every_terminal_path_counts_the_parent_down_once_and_purges_and_announces(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str, statement: str
) -> None:
    keys = ["done", "failed", "cancelled", "crashed", "stale"]
    rig, parent, ids = await rig_with_children(make_engine, db, gendurable_schema, keys, statement)
    heard = Announcements()
    await db.add_listener(rig.engine.store.db.channel, heard)

    # First claim: every child by w1; "crashed" and "stale" lose it to the reaper.
    await rig.claim("w1")
    assert await rig.commit((ids["done"], "w1", "done"), (ids["failed"], "w1", "failed")) == {
        ids["done"],
        ids["failed"],
    }
    await Child.cancel("cancelled")
    await rig.expire()  # "crashed" and "stale" back to available, attempt 1 of 2
    assert await rig.claim("w2") == sorted([ids["crashed"], ids["stale"]])
    await rig.expire()  # "crashed" and "stale": their last attempt crashed too: failed
    # w2's late outcomes for both are stale now.
    assert await rig.commit((ids["stale"], "w2", "done"), (ids["crashed"], "w2", "done")) == set()
    await heard.settle(db)

    for key in keys:
        assert await rig.inbox(ids[key]) == 0, key
        assert heard.seen[f"t:{ids[key]}"] == 1, key
    final = await rig.row(parent)
    assert final["pending_children"] == 0
    assert final["status"] != "waiting"  # due (the engine may be running it already)

    await rig.engine.drain()
    assert await Parent.result(parent) == {
        "done": "done",
        "failed": "failed",
        "cancelled": "cancelled",
        "crashed": "failed",
        "stale": "failed",
    }


async def test_cancel_reaches_children_a_spawn_committed_while_it_waited(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    """The cancel's cascade runs in a fresh snapshot after it holds the parent's lock, so
    children committed by a spawn the cancel waited for are cancelled too."""
    engine = await make_engine(workflows=[Parent, Child], queues=None, lease=LEASE)
    rig = Rig(engine, db, gendurable_schema)
    parent = await Parent.start(key="p", state={"keys": ["x", "y"]})
    claimed = await engine.store.instance_claim(
        queue="default",
        limit=1,
        locked_by="w",
        leases=[LEASE],
        now=engine.clock.now(),
        workflows=["effects.parent"],
        steps=["fan_out"],
    )
    assert [r.id for r in claimed] == [parent.id]

    blocker = await asyncpg.connect(engine.dsn or "")
    try:
        tx = blocker.transaction()
        await tx.start()
        # Hold the parent's row lock, as a spawn's second statement does before it commits.
        await blocker.execute(
            f'SELECT 1 FROM "{gendurable_schema}".instances WHERE id = $1 FOR UPDATE', parent.id
        )
        cancel = asyncio.create_task(Parent.cancel(parent.id))
        await lock_waiter(db)
        # The spawn commits its children and the parent's wait while the cancel waits.
        await blocker.execute(
            f'INSERT INTO "{gendurable_schema}".instances (workflow, queue, step, state, '
            "run_at, key, parent_id, spawn_index, inserted_at, updated_at) "
            "SELECT 'effects.child', 'side', 'wait', 'null', now(), k, $1, 0, now(), now() "
            "FROM unnest(ARRAY['x', 'y']) k",
            parent.id,
        )
        await blocker.execute(
            f"UPDATE \"{gendurable_schema}\".instances SET status = 'waiting', "
            "pending_children = 2, locked_by = NULL WHERE id = $1",
            parent.id,
        )
        await tx.commit()
        async with asyncio.timeout(10):
            await cancel
    finally:
        await blocker.close()

    assert (await rig.row(parent.id))["status"] == "cancelled"
    assert (await Child.get("x")).status == "cancelled"
    assert (await Child.get("y")).status == "cancelled"


@pytest.mark.parametrize("statement", GROUP_COMMITS)
async def test_one_batch_ending_a_parent_and_consuming_a_live_childs_signal_commits_both(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str, statement: str
) -> None:
    # The engine never runs a parent while a child of it is live (a spawn makes it wait for
    # them all), so it never sends such a batch; the rows are forced by hand here. The
    # parent's end cascades to the child and purges its inbox within the statement, which
    # also deletes the signal the child's goto consumed: whichever runs first, the other
    # must find nothing left to delete, not fail the whole batch.
    rig, parent, ids = await rig_with_children(make_engine, db, gendurable_schema, ["a"])
    assert await rig.claim("w2") == [ids["a"]]
    await db.execute(
        f"UPDATE \"{gendurable_schema}\".instances SET status = 'executing', locked_by = 'w1' "
        "WHERE id = $1",
        parent,
    )
    signal = await db.fetchval(
        f'SELECT id FROM "{gendurable_schema}".signals WHERE instance_id = $1', ids["a"]
    )
    goto = {**move(ids["a"], "w2", "wait"), "consumed": [signal]}

    done, busy = await commit(rig.engine, [finish(parent, "w1", "done"), goto], statement=statement)

    assert (set(done), busy) == ({parent, ids["a"]}, set())
    assert (await rig.row(parent))["status"] == "done"
    assert (await rig.row(ids["a"]))["status"] == "cancelled"
    assert await rig.inbox(ids["a"]) == 0
