"""A cancel cascades to every live descendant, also to children that a descendant's spawn
commits while the cascade waits for that descendant's row lock.

Found by the state machine (`tests/props/test_state_machine.py`): the cascade computed the
tree of descendants once, so it locked a child that was spawning, waited for the spawn to
commit, cancelled the child, and left the grandchildren the spawn had just inserted live
under a cancelled parent. The spawn is played by hand here, in a transaction the test
holds open, so the interleaving is exactly that one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

import gendurable as gd
from gendurable.testing import MakeEngine


@gd.workflow(name="cascade.node")
class Node:
    @gd.step(start=True)
    @gd.await_signals("go")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


async def lock_waiter(db: asyncpg.Connection) -> None:
    """Return once some backend waits for a row lock (no event tells it; poll the server)."""
    async with asyncio.timeout(10):
        while not await db.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"):  # noqa: ASYNC110 (no event for a lock wait)
            await asyncio.sleep(0.01)


async def test_cancel_reaches_grandchildren_a_spawn_commits_while_the_cascade_waits(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_dsn: str, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Node], queues=None)
    s = f'"{gendurable_schema}"'

    async def insert(status: str, parent: int | None, pending: int = 0) -> int:
        id: int = await db.fetchval(
            f"INSERT INTO {s}.instances (workflow, queue, step, state, status, run_at, "
            "parent_id, pending_children, locked_by, inserted_at, updated_at) "
            f"VALUES ('cascade.node', 'default', 'wait', 'null', $1::text::{s}.status, "
            "now(), $2, $3, CASE WHEN $1 = 'executing' THEN 'w1' END, now(), now()) "
            "RETURNING id",
            status,
            parent,
            pending,
        )
        return id

    root = await insert("waiting", None, pending=1)
    child = await insert("executing", root)  # running a step that spawns
    blocker = await asyncpg.connect(gendurable_dsn)
    try:
        tx = blocker.transaction()
        await tx.start()
        # The child's spawn: its grandchildren go in, then its own row waits for them
        # (holding the child's row lock until the commit).
        grandchild = await blocker.fetchval(
            f"INSERT INTO {s}.instances (workflow, queue, step, state, run_at, parent_id, "
            "inserted_at, updated_at) VALUES ('cascade.node', 'default', 'wait', 'null', "
            "now(), $1, now(), now()) RETURNING id",
            child,
        )
        await blocker.execute(
            f"UPDATE {s}.instances SET status = 'waiting', pending_children = 1, "
            "locked_by = NULL WHERE id = $1",
            child,
        )
        cancel = asyncio.create_task(Node.cancel(root))
        await lock_waiter(db)  # the cascade found the child and waits for its lock
        await tx.commit()
        async with asyncio.timeout(10):
            await cancel
    finally:
        await blocker.close()

    statuses = {
        r["id"]: r["status"]
        for r in await db.fetch(f"SELECT id, status::text AS status FROM {s}.instances")
    }
    assert statuses == {root: "cancelled", child: "cancelled", grandchild: "cancelled"}
