"""A running engine on a fresh schema, with completion tracked as a user would track it.

Completion: the `step.stop` telemetry events whose decision is `Finish` are counted, and once
all are seen the instances table is read until it shows them all `done` (the last commit
follows the event).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

import gendurable as gd
from gendurable.db.schema_admin import drop_schema


class Finished:
    """Counts finished instances from telemetry; `wait(n)` returns once `n` are done."""

    def __init__(self, engine: gd.Engine) -> None:
        self.count = 0
        self.steps = 0
        self._target: int | None = None
        self._reached = asyncio.Event()
        engine.telemetry.attach("bench.finished", self._on_stop, [("step", "stop")])

    def _on_stop(self, event: Any, measurements: Any, meta: Any) -> None:
        self.steps += 1
        if meta["decision"] == "Finish":
            self.count += 1
            if self._target is not None and self.count >= self._target:
                self._reached.set()

    async def wait(self, target: int, timeout: float = 600.0) -> None:
        # A fresh event per target: the warm-up's would return at once otherwise, and the
        # table would be polled through the whole window.
        self._target = target
        self._reached = asyncio.Event()
        if self.count >= target:
            self._reached.set()
        async with asyncio.timeout(timeout):
            await self._reached.wait()


async def wait_done_in_table(
    conn: asyncpg.Connection, schema: str, target: int, first_id: int, timeout: float = 60.0
) -> None:
    """Read the instances table until `target` rows from id `first_id` on are `done`.

    Called once telemetry has seen every instance finish: the last commits are a few
    milliseconds behind. Each read scans the rows, so it is not a way to wait for long.
    """
    async with asyncio.timeout(timeout):
        while True:
            done = await conn.fetchval(
                f"SELECT count(*) FROM \"{schema}\".instances WHERE id >= $1 AND status = 'done'",
                first_id,
            )
            if done >= target:
                return
            await asyncio.sleep(0.005)


async def wait_nothing_due(conn: asyncpg.Connection, schema: str, timeout: float = 600.0) -> None:
    """Wait until no row is `available` or `executing`: two reads of partial indexes, cheap
    enough to repeat every few milliseconds while the workload runs."""
    sql = (
        f"SELECT EXISTS (SELECT 1 FROM \"{schema}\".instances WHERE status = 'available') "
        f"OR EXISTS (SELECT 1 FROM \"{schema}\".instances WHERE status = 'executing')"
    )
    async with asyncio.timeout(timeout):
        while await conn.fetchval(sql):  # noqa: ASYNC110 (the rows are in another process)
            await asyncio.sleep(0.005)


def new_schema() -> str:
    return f"bench_{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def bench_engine(
    dsn: str,
    workflows: Sequence[Any],
    queues: Mapping[str, int],
    *,
    schema: str | None = None,
    keep_schema: bool = False,
    **options: Any,
) -> AsyncIterator[tuple[gd.Engine, Finished]]:
    """A running engine on `schema` (a fresh one by default, dropped afterwards)."""
    schema = schema or new_schema()
    engine = gd.Engine(
        dsn,
        workflows=list(workflows),
        schema=schema,
        queues=dict(queues),
        name=f"bench-{schema}",
        **options,
    )
    finished = Finished(engine)
    try:
        async with engine:
            yield engine, finished
    finally:
        if not keep_schema:
            await drop_schema(dsn, schema)
