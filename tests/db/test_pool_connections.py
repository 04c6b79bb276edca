"""A `Database` keeps a few connections between statements instead of releasing each to
asyncpg's pool (`db/pool.py`): what it keeps must be as good as what the pool would hand out.

Each test opens a `Database` of its own on the test server, with a small pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from gendurable.db.pool import NOT_IDEMPOTENT, Database
from gendurable.sql import Statement
from polling import eventually

PID = "SELECT pg_backend_pid()"


@pytest.fixture
async def open_db(gendurable_dsn: str, gendurable_schema: str) -> AsyncIterator[Callable[..., Any]]:
    opened: list[Database] = []

    async def open_(max_size: int) -> Database:
        db = await Database.open(gendurable_dsn, gendurable_schema, max_size=max_size, timeout=2)
        db.retry_for = 0.0  # a failure is the test's answer, not something to wait out
        opened.append(db)
        return db

    yield open_
    for db in opened:
        db.pool.terminate()


async def pid(db: Database) -> int:
    async def run(conn: Any) -> int:
        value: int = await conn.fetchval(PID)
        return value

    result: int = await db.retrying(run, idempotent=True)
    return result


async def test_statements_one_after_the_other_run_on_the_connection_kept(
    open_db: Callable[..., Any],
) -> None:
    db = await open_db(max_size=4)
    first = await pid(db)
    assert [await pid(db) for _ in range(3)] == [first] * 3
    await db.close()


async def test_a_kept_connection_that_closed_is_not_used_even_by_a_statement_not_repeated(
    open_db: Callable[..., Any], db: asyncpg.Connection
) -> None:
    pool_db = await open_db(max_size=4)
    # A statement the retry loop never repeats once sent: it must not be sent on a
    # connection known to be gone (the server restarted, an operator killed the backend).
    name = "instance_insert"
    assert name in NOT_IDEMPOTENT
    pool_db.sql[name] = Statement(name, PID, ())
    killed = (await pool_db.column(name))[0]
    kept = pool_db._idle[-1][0]
    assert await db.fetchval("SELECT pg_terminate_backend($1)", killed)

    async def noticed() -> bool:
        try:
            closed: bool = kept.is_closed()
        except asyncpg.InterfaceError:  # the pool took it back as it closed
            return True
        return closed

    await eventually(noticed, what="the client seeing its backend gone")
    assert (await pool_db.column(name))[0] != killed
    await pool_db.close()


async def at_once(pool_db: Database, db: asyncpg.Connection, n: int) -> None:
    """Run `n` statements of `pool_db` at the same time (each on a connection of its own)."""
    await db.execute("SELECT pg_advisory_lock(4242)")
    running = [
        asyncio.create_task(
            pool_db.retrying(
                lambda conn: conn.execute("SELECT pg_advisory_xact_lock_shared(4242)"),
                idempotent=True,
            )
        )
        for _ in range(n)
    ]

    async def all_waiting() -> bool:
        waiting: int = await db.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )
        return waiting == n

    await eventually(all_waiting, what=f"{n} statements waiting on the lock")
    await db.execute("SELECT pg_advisory_unlock(4242)")
    await asyncio.gather(*running)


async def test_a_pool_user_gets_a_connection_after_more_statements_ran_than_are_kept(
    open_db: Callable[..., Any], db: asyncpg.Connection
) -> None:
    pool_db = await open_db(max_size=2)
    # Two statements at once use both connections; afterwards one stays with the Database
    # and the other goes back to the pool, for `pool.acquire()` callers (engine start-up,
    # the dashboard, the command line).
    await at_once(pool_db, db, 2)
    async with pool_db.pool.acquire(timeout=2) as conn:
        assert await conn.fetchval("SELECT 1") == 1
    await pool_db.close()


async def test_a_kept_connection_unused_for_a_while_goes_back_to_the_pool(
    open_db: Callable[..., Any], db: asyncpg.Connection
) -> None:
    pool_db = await open_db(max_size=4)
    await at_once(pool_db, db, 2)
    assert len(pool_db._idle) == 2
    await pid(pool_db)  # statements one at a time use the most recent one only
    pool_db.kept_for = 0.0  # (60 s by default)
    await pid(pool_db)
    # The other one went back to the pool, whose inactivity timer closes it in time.
    assert len(pool_db._idle) == 1
    await pool_db.close()


async def test_a_connection_left_in_a_transaction_is_not_kept(
    open_db: Callable[..., Any],
) -> None:
    pool_db = await open_db(max_size=2)

    async def leave_open(conn: Any) -> None:
        await conn.execute("BEGIN")

    async def in_transaction(conn: Any) -> bool:
        return bool(conn.is_in_transaction())

    await pool_db.retrying(leave_open, idempotent=True)
    # The pool's release rolls it back; a kept one would run the next statement inside it.
    assert await pool_db.retrying(in_transaction, idempotent=True) is False
    await pool_db.close()


async def test_a_statement_that_failed_gives_its_connection_back(
    open_db: Callable[..., Any],
) -> None:
    pool_db = await open_db(max_size=1)

    async def fail_inside_a_transaction(conn: Any) -> None:
        await conn.execute("BEGIN")
        raise RuntimeError("the statement's caller failed")

    async def in_transaction(conn: Any) -> bool:
        return bool(conn.is_in_transaction())

    with pytest.raises(RuntimeError):
        await pool_db.retrying(fail_inside_a_transaction, idempotent=True)
    # The only connection came back to the pool, rolled back.
    assert await pool_db.retrying(in_transaction, idempotent=True) is False
    await pool_db.close()


async def test_close_gives_the_kept_connections_back_so_the_pool_closes(
    open_db: Callable[..., Any],
) -> None:
    pool_db = await open_db(max_size=4)
    await pid(pool_db)
    assert pool_db._idle
    async with asyncio.timeout(10):  # the pool waits for every connection it handed out
        await pool_db.close()
    assert pool_db.pool._closed


async def test_a_statement_waiting_for_the_pool_gets_the_next_connection_that_comes_back(
    open_db: Callable[..., Any],
) -> None:
    # Three statements hold the pool's three connections; a fourth waits for one. The first
    # to finish must go to the waiter: kept idle instead, no waiter would ever see it, and
    # the fourth would time out (2 s here) while the database sat on a free connection.
    db = await open_db(max_size=3)
    holding = 0
    all_held, first_may_finish, others_may_finish = (asyncio.Event() for _ in range(3))

    async def hold(conn: Any, release: asyncio.Event) -> int:
        nonlocal holding
        holding += 1
        if holding == 3:
            all_held.set()
        await release.wait()
        value: int = await conn.fetchval(PID)
        return value

    first = asyncio.ensure_future(db.retrying(lambda c: hold(c, first_may_finish), idempotent=True))
    others = [
        asyncio.ensure_future(db.retrying(lambda c: hold(c, others_may_finish), idempotent=True))
        for _ in range(2)
    ]
    await all_held.wait()
    fourth = asyncio.ensure_future(pid(db))

    async def fourth_queued() -> bool:  # in the pool's acquire
        return db._waiting == 1

    await eventually(fourth_queued, what="the fourth statement waiting for the pool")
    first_may_finish.set()
    assert await fourth == await first  # on the connection the first gave back
    others_may_finish.set()
    await asyncio.gather(*others)
    await db.close()
