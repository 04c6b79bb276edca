"""Helpers of the fault tests: polls with deadlines, server backends, held locks, row checks.

Nothing here sleeps to synchronise: every wait polls the database (or a condition) with a
bounded deadline and fails the test with what it last saw.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from polling import eventually as eventually

Engines = Callable[..., Awaitable[gd.Engine]]
"""The `engines` fixture: `await engines(workflows=..., queues=..., dsn=None, **options)`."""


def store_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The store's warnings captured so far in the test ("... unavailable; retrying ..."), as
    text."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "gendurable.store" and r.levelno >= logging.WARNING
    ]


class Backends:
    """The server's view of connections (`pg_stat_activity`), through a plain connection."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def running(self, sql: str, *, waiting: bool = True) -> list[int]:
        """Pids of the backends whose current statement is `sql` (blocked on a lock when
        `waiting`). The text is compared on its first 500 characters: the server keeps only
        the start of long statements."""
        rows = await self.conn.fetch(
            "SELECT pid FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND state = 'active' "
            "  AND left(query, 500) = left($1, 500) "
            "  AND (NOT $2 OR wait_event_type = 'Lock') ORDER BY pid",
            sql,
            waiting,
        )
        return [int(r["pid"]) for r in rows]

    async def wait_running(
        self, sql: str, *, count: int = 1, waiting: bool = True, timeout: float = 15.0
    ) -> list[int]:
        """Wait until `count` backends run `sql` (blocked on a lock when `waiting`)."""

        async def found() -> list[int] | None:
            pids = await self.running(sql, waiting=waiting)
            return pids if len(pids) >= count else None

        pids: list[int] = await eventually(
            found, timeout=timeout, what=f"{count} backend(s) running {sql[:60]!r}"
        )
        return pids

    async def terminate(self, *pids: int) -> None:
        """`pg_terminate_backend` each pid, and wait until it is gone."""
        for pid in pids:
            assert await self.conn.fetchval("SELECT pg_terminate_backend($1)", pid)

        async def gone() -> bool:
            left = await self.conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY ($1::int[])", list(pids)
            )
            return int(left) == 0

        await eventually(gone, what=f"backends {pids} gone")

    async def listening(self, channel: str) -> list[int]:
        """Pids of the backends whose last statement was LISTEN on `channel`."""
        rows = await self.conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
            "AND query = $1 ORDER BY pid",
            f'LISTEN "{channel}"',
        )
        return [int(r["pid"]) for r in rows]


@asynccontextmanager
async def holding(dsn: str, *statements: str, args: tuple[Any, ...] = ()) -> AsyncIterator[Any]:
    """Run `statements` in a transaction on a connection of its own and keep it open (the
    locks they took are held) until the block ends; then commit."""
    conn = await asyncpg.connect(dsn)
    try:
        tx = conn.transaction()
        await tx.start()
        for sql in statements:
            await conn.execute(sql, *args) if args else await conn.execute(sql)
        try:
            yield conn
        finally:
            await tx.commit()
    finally:
        await conn.close()


def commits_blocked(schema: str) -> str:
    """A statement whose lock holds every group commit (and signal delivery) of `schema`.

    A group commit skips rows someone else locked and sends those outcomes again, so a row
    lock never holds it; the inbox table does: every commit that ends an instance reads
    `signals` (the terminal effects look for an inbox to purge, and purge it), and one that
    consumes a signal writes it. ACCESS EXCLUSIVE blocks reads too (an ending instance with
    an empty inbox only reads the table).
    """
    return f'LOCK TABLE "{schema}".signals IN ACCESS EXCLUSIVE MODE'


def plain_commits_blocked(schema: str) -> str:
    """A statement whose lock holds every plain group commit (`outcome_plain`) of `schema`.

    A plain commit of steps that go on writes `instances` only (not `signals`, which it
    touches only to purge an ending row's inbox): EXCLUSIVE on `instances` holds it, and
    every other writer of the table (claims, heartbeats) with it; reads go on.
    """
    return f'LOCK TABLE "{schema}".instances IN EXCLUSIVE MODE'


class Rows:
    """Plain-SQL checks of one schema's tables."""

    def __init__(self, conn: asyncpg.Connection, schema: str) -> None:
        self.conn = conn
        self.s = f'"{schema}"'

    async def all(self) -> list[asyncpg.Record]:
        return list(
            await self.conn.fetch(
                f"SELECT id, key, workflow, step, status::text AS status, attempt, rescued, "
                f"locked_by, locked_until, parent_id, state::text AS state, "
                f"result::text AS result, error::text AS error FROM {self.s}.instances "
                f"ORDER BY id"
            )
        )

    async def statuses(self) -> dict[str, int]:
        rows = await self.conn.fetch(
            f"SELECT status::text AS status, count(*) AS n FROM {self.s}.instances GROUP BY 1"
        )
        return {r["status"]: int(r["n"]) for r in rows}

    async def count(self, where: str = "true") -> int:
        return int(
            await self.conn.fetchval(f"SELECT count(*) FROM {self.s}.instances WHERE {where}")
        )

    async def signals(self) -> list[asyncpg.Record]:
        return list(
            await self.conn.fetch(
                f"SELECT id, instance_id, name, payload::text AS payload FROM {self.s}.signals "
                f"ORDER BY id"
            )
        )
