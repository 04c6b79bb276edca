"""Rows written and probed with plain SQL, for the tests that pin a statement's locks.

A statement's lock order and its SKIP LOCKED are seen from outside: a blocker transaction
holds one row, the statement runs until it waits (or finishes), and a probe asks, without
waiting, whether another row is already locked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

import gendurable as gd

T = TypeVar("T")


@gd.workflow(name="raw.leaf")
class Leaf:
    """The workflow the raw rows claim to be (only its name and step matter)."""

    @gd.step(start=True)
    async def work(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()

    @gd.step
    @gd.await_signals("go")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


async def insert(
    db: asyncpg.Connection,
    schema: str,
    now: datetime,
    *,
    status: str = "available",
    step: str = "work",
    key: str | None = None,
    parent: int | None = None,
    pending: int = 0,
    locked_by: str | None = None,
    locked_until: datetime | None = None,
    await_deadline: datetime | None = None,
    attempt: int = 0,
    max_attempts: int = 5,
    rate_partition: str | None = None,
) -> int:
    """One `raw.leaf` row on the default queue, due at `now`; its id."""
    id: int = await db.fetchval(
        f'INSERT INTO "{schema}".instances (workflow, queue, step, state, status, run_at, key, '
        "parent_id, pending_children, locked_by, locked_until, await_names, await_deadline, "
        "attempt, max_attempts, rate_limit, rate_partition, inserted_at, updated_at) "
        "VALUES ('raw.leaf', 'default', $1, 'null', $2::text::"
        f'"{schema}".status, $3, $4, $5, $6, $7, $8, '
        "CASE WHEN $2 = 'awaiting' THEN ARRAY['go'] END, $9, $10, $11, "
        "CASE WHEN $12::text IS NOT NULL THEN 'api' END, $12, $3, $3) RETURNING id",
        step,
        status,
        now,
        key,
        parent,
        pending,
        locked_by,
        locked_until,
        await_deadline,
        attempt,
        max_attempts,
        rate_partition,
    )
    return id


async def row(db: asyncpg.Connection, schema: str, id: int) -> asyncpg.Record:
    found = await db.fetchrow(
        "SELECT status::text AS status, locked_by, attempt, pending_children, timed_out "
        f'FROM "{schema}".instances WHERE id = $1',
        id,
    )
    assert found is not None
    return found


async def lock_waiter(db: asyncpg.Connection, behind: Blocker | None = None) -> None:
    """Return once some backend waits for a lock, or, given `behind`, for a lock that
    blocker holds (so that a backend of another test waiting for something else does not
    count). No event tells it; poll the server."""
    if behind is None:
        sql, args = "SELECT count(*) FROM pg_locks WHERE NOT granted", ()
    else:
        sql = "SELECT count(*) FROM pg_stat_activity WHERE $1::int = ANY (pg_blocking_pids(pid))"
        args = (behind.conn.get_server_pid(),)
    async with asyncio.timeout(10):
        while not await db.fetchval(sql, *args):  # noqa: ASYNC110 (no event for a lock wait)
            await asyncio.sleep(0.01)


async def without_waiting(db: asyncpg.Connection, statement: Awaitable[T]) -> T:
    """The result of `statement`, which must not wait for any lock: fails (and cancels it)
    as soon as some backend waits for one while it runs."""
    task = asyncio.ensure_future(statement)
    try:
        async with asyncio.timeout(10):
            while not task.done():
                if await db.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"):
                    raise AssertionError("the statement waited for a lock")
                await asyncio.sleep(0.01)
        return task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, asyncpg.QueryCanceledError):
                await task


async def locked(dsn: str, sql: str, *args: Any) -> bool:
    """Is the row `sql` selects (`... FOR UPDATE NOWAIT`) locked by someone else right now?"""
    probe = await asyncpg.connect(dsn)
    try:
        async with probe.transaction():
            await probe.execute(sql, *args)
            return False
    except asyncpg.LockNotAvailableError:
        return True
    finally:
        await probe.close()


async def instance_locked(dsn: str, schema: str, id: int) -> bool:
    return await locked(
        dsn, f'SELECT 1 FROM "{schema}".instances WHERE id = $1 FOR UPDATE NOWAIT', id
    )


class Blocker:
    """A transaction holding row locks until `release()`."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.tx = conn.transaction()

    @classmethod
    async def open(cls, dsn: str) -> Blocker:
        blocker = cls(await asyncpg.connect(dsn))
        await blocker.tx.start()
        return blocker

    async def hold(self, sql: str, *args: Any) -> None:
        await self.conn.execute(sql, *args)

    async def release(self) -> None:
        if not self.conn.is_closed():
            await self.tx.rollback()
            await self.conn.close()
