"""Helpers of the dashboard tests (the fixtures in conftest.py use them).

- `Web`: a dashboard and an in-process HTTP client of it.
- `Rows`: plain SQL on the test's schema, to check what was (not) written.
- `Scene`: what the `scene` fixture started.
- `serve_dashboard(*args)`: a real `gendurable web` process, stopped at the end.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from gendurable.web.dashboard import Dashboard

HERE = Path(__file__).resolve().parent
START_TIMEOUT = 30.0
QUEUES = {"expenses": 2, "orders": 2, "mail": 1}
"""The queues the tests' engines run (`archive` is left to no one)."""


@dataclass
class Web:
    """A dashboard and a client of it."""

    dashboard: Dashboard
    client: httpx.AsyncClient


WebFactory = Callable[..., Awaitable[Web]]


class Rows:
    """Plain SQL on the test schema."""

    def __init__(self, db: asyncpg.Connection, schema: str) -> None:
        self.db = db
        self.schema = schema

    async def signals(self) -> list[tuple[int, str, str]]:
        rows = await self.db.fetch(
            f'SELECT instance_id, name, payload::text FROM "{self.schema}".signals ORDER BY id'
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def status(self, id: int) -> str:
        value = await self.db.fetchval(
            f'SELECT status::text FROM "{self.schema}".instances WHERE id = $1', id
        )
        assert isinstance(value, str)
        return value

    async def execute(self, statement: str, *args: object) -> None:
        await self.db.execute(statement.replace("S.", f'"{self.schema}".'), *args)


@dataclass
class Scene:
    """What the `scene` fixture started: its engine, and instance ids by key."""

    engine: Any
    ids: dict[str, int]


@dataclass
class Served:
    """A `gendurable web` process: its address and the line it printed when ready."""

    url: str
    ready: str
    process: asyncio.subprocess.Process


@asynccontextmanager
async def serve_dashboard(*args: str) -> AsyncIterator[Served]:
    """Run `python -m gendurable web --port 0 ARGS` from this folder until the block ends,
    then stop it with SIGINT (as Ctrl-C would)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GENDURABLE_DSN", "PGPASSWORD")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gendurable",
        "web",
        "--port",
        "0",
        *args,
        cwd=HERE,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT)).decode()
        found = re.search(r"http://\S+/", line)
        if found is None:
            err = (await asyncio.wait_for(proc.stderr.read(), START_TIMEOUT)).decode()
            raise AssertionError(f"gendurable web did not start: {line!r}\n{err}")
        yield Served(found.group(0), line, proc)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
