"""Engine fixtures: `make_engine` builds running engines on the test's own schema.

Each engine gets a name no other engine in this process uses (the routing registry refuses
two running engines of one name), the per-test schema and, unless told otherwise, the test's
`ManualClock`. Every engine made is stopped when the test ends, before its schema is dropped.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from gendurable.clock import Clock

MakeEngine = Callable[..., Awaitable[gd.Engine]]

_serial = itertools.count()


def unique_engine_name(prefix: str = "test") -> str:
    """An engine name no other engine of this process has used."""
    return f"{prefix}-{next(_serial)}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
async def make_engine(
    no_task_leaks: None,
    gendurable_dsn: str,
    gendurable_schema: str,
    manual_clock: gd.ManualClock,
) -> AsyncIterator[MakeEngine]:
    """A factory: `await make_engine(workflows=[...], queues={...}, clock=..., **options)`.

    Defaults: the test's schema, `queues={"default": 4}` (pass `queues=None` for a client-only
    engine), the `manual_clock` fixture, a unique name. The engine is started before it is
    returned and stopped at teardown; a task an engine leaves running then fails the test.
    """
    engines: list[gd.Engine] = []
    default = object()

    async def make(
        *,
        workflows: Sequence[Any],
        queues: Mapping[str, int] | object | None = default,
        clock: Clock | object | None = default,
        name: str | None = None,
        **options: Any,
    ) -> gd.Engine:
        engine = gd.Engine(
            gendurable_dsn,
            workflows=workflows,
            schema=gendurable_schema,
            queues={"default": 4} if queues is default else queues,  # type: ignore[arg-type]
            clock=manual_clock if clock is default else clock,  # type: ignore[arg-type]
            name=name or unique_engine_name(),
            **options,
        )
        await engine.start()
        engines.append(engine)
        return engine

    yield make
    hung = [engine.name for engine in reversed(engines) if not await _stopped(engine)]
    if hung:
        pytest.fail(
            f"engine.stop() did not return within {STOP_LIMIT}s for {hung}: a background "
            "loop ignored its cancellation (see test_engine_stop_returns_when_a_step_ends_"
            "during_stop)",
            pytrace=False,
        )


STOP_LIMIT = 15.0


async def _stopped(engine: gd.Engine) -> bool:
    """Stop `engine`; False when stop() hung (its loops are then cancelled again)."""
    stopping = asyncio.ensure_future(engine.stop(timeout=5))
    done, _ = await asyncio.wait({stopping}, timeout=STOP_LIMIT)
    if done:
        stopping.result()
        return True
    # A loop that swallowed one cancel (3.11's wait_for did, racing a wake-up) takes a
    # second: cancel again so the pool and listener still close and the next test is clean.
    for task in list(engine._loops):
        task.cancel()
    await stopping
    return False


@pytest.fixture
async def db(gendurable_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection, to check rows with SQL (`"<schema>".instances`)."""
    conn = await asyncpg.connect(gendurable_dsn)
    yield conn
    await conn.close()
