"""Fixtures for the dashboard tests (their helpers are in web_support.py).

- `gendurable_clock`: the system clock. The dashboard reads the database's time, so the
  engines of these tests write theirs.
- `web(...)`: a dashboard on the test's schema (`gendurable.web.app`, the `--app` code of
  web_app.py unless `engine=` says otherwise) with an HTTP client that calls it in-process
  (httpx's ASGI transport, cookies kept); both closed after the test.
- `rows`: plain SQL on the test's schema.
- `scene`: a running engine and instances in every kind of state (see its docstring).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import web_app
from web_support import QUEUES, Rows, Scene, Web, WebFactory

from gendurable.testing import MakeEngine
from gendurable.web import app


@pytest.fixture
def gendurable_clock() -> None:
    """The system clock for `make_engine`: the dashboard sees the database's time."""
    return None


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


@pytest.fixture
def rows(db: asyncpg.Connection, gendurable_schema: str) -> Rows:
    return Rows(db, gendurable_schema)


@pytest.fixture
async def scene(make_engine: MakeEngine) -> Scene:
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
