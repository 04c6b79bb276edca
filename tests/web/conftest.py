"""Fixtures for the dashboard tests.

- `gendurable_clock`: the system clock. The dashboard reads the database's time, so the
  engines of these tests write theirs.
- `web(...)`: a dashboard on the test's schema (`gendurable.web.app`) with an HTTP client
  that calls it in-process (httpx's ASGI transport, cookies kept); closed after the test.
- `rows`: plain SQL on the test's schema, to check what was (not) written.
- `scene`: a running engine and instances in every kind of state (see its docstring).
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
import pytest
import web_app

from gendurable.web import app
from gendurable.web.dashboard import Dashboard


@pytest.fixture
def gendurable_clock() -> None:
    """The system clock for `make_engine`: the dashboard sees the database's time."""
    return None


@dataclass
class Web:
    """A dashboard and a client of it."""

    dashboard: Dashboard
    client: httpx.AsyncClient


WebFactory = Callable[..., Awaitable[Web]]


@pytest.fixture
async def web(gendurable_dsn: str, gendurable_schema: str) -> AsyncIterator[WebFactory]:
    made: list[Web] = []

    async def make(
        *, engine: Any = web_app.engine, dsn: str = gendurable_dsn, **options: Any
    ) -> Web:
        dashboard = app(dsn, gendurable_schema, engine=engine, **options)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=dashboard), base_url="http://dash.test"
        )
        made.append(Web(dashboard, client))
        return made[-1]

    yield make
    for w in made:
        await w.client.aclose()
        await w.dashboard.close()


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


@pytest.fixture
def rows(db: asyncpg.Connection, gendurable_schema: str) -> Rows:
    return Rows(db, gendurable_schema)


QUEUES = {"expenses": 2, "orders": 2, "mail": 1}


@dataclass
class Scene:
    """What `scene` started: ids by name."""

    engine: Any
    ids: dict[str, int]


@pytest.fixture
async def scene(make_engine: Any) -> Scene:
    """A running engine and, once it settled: three expenses awaiting a decision, an order
    waiting for its two parcels (each awaiting delivery), a failed and a done receipt."""
    engine = await make_engine(workflows=web_app.WORKFLOWS, queues=QUEUES)
    ids = {}
    for n in (1, 2, 3):
        handle = await web_app.Expense.start(
            key=f"exp-{n}", state=web_app.Expense.State(amount=100 * n)
        )
        ids[f"exp-{n}"] = handle.id
    ids["ord-1"] = (await web_app.Order.start(key="ord-1", state=web_app.Order.State())).id
    bad = await web_app.send_receipt.enqueue(web_app.Receipt(email="nobody"), key="r-bad")
    ok = await web_app.send_receipt.enqueue(web_app.Receipt(email="ann@example.com"), key="r-ok")
    ids["r-bad"], ids["r-ok"] = bad.id, ok.id
    await engine.drain()
    return Scene(engine, ids)


HERE = Path(__file__).resolve().parent
START_TIMEOUT = 30.0


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
