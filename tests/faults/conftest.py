"""Fixtures of the fault tests: real engines on the system clock, a fault proxy, backends.

- `engines(workflows=..., queues=..., dsn=None, **options)`: a started engine on the test's
  schema (through `proxy.dsn` when `dsn=proxy.dsn`), stopped at teardown.
- `proxy`: a `FaultProxy` in front of the session server.
- `backends`: find, wait for and terminate the server backends running a statement.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest
from fault_proxy import FaultProxy
from fault_support import Backends, Engines

import gendurable as gd
from polling import unique_name


@pytest.fixture
def gendurable_clock() -> None:
    """Fault tests run on the system clock: leases, heartbeats and polls happen for real."""
    return None


@pytest.fixture(autouse=True)
async def unretrieved_errors() -> AsyncIterator[None]:
    """Fails a test that leaves futures or tasks whose exception nobody retrieved (commits
    failed by a fault must be reported to someone, not dropped)."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    found: list[str] = []

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "never retrieved" in message:
            found.append(f"{message}: {context.get('exception')!r}")
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    yield
    gc.collect()
    loop.set_exception_handler(previous)
    if found:
        pytest.fail(f"{len(found)} exception(s) nobody retrieved, e.g. {found[0]}", pytrace=False)


@pytest.fixture
async def proxy(gendurable_dsn: str) -> AsyncIterator[FaultProxy]:
    running = await FaultProxy(gendurable_dsn).start()
    yield running
    await running.stop()


@pytest.fixture
async def engines(
    no_task_leaks: None, gendurable_dsn: str, gendurable_schema: str, proxy: FaultProxy
) -> AsyncIterator[Engines]:
    made: list[gd.Engine] = []

    async def make(
        *,
        workflows: Sequence[Any],
        queues: dict[str, int] | None = None,
        dsn: str | None = None,
        start: bool = True,
        **options: Any,
    ) -> gd.Engine:
        options.setdefault("schema", gendurable_schema)
        engine = gd.Engine(
            dsn or gendurable_dsn,
            workflows=workflows,
            queues=queues,
            name=unique_name("fault"),
            **options,
        )
        made.append(engine)
        if start:
            await engine.start()
        return engine

    yield make
    for engine in reversed(made):
        async with asyncio.timeout(30):
            await engine.stop(timeout=5)


@pytest.fixture
async def backends(gendurable_dsn: str) -> AsyncIterator[Backends]:
    conn = await asyncpg.connect(gendurable_dsn)
    yield Backends(conn)
    await conn.close()
