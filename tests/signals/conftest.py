"""Fixtures for the signal and await tests: running engines on the test's schema, SQL access.

`make_engine` mirrors the one in `tests/engine/conftest.py` (fixtures of a sibling folder are
not visible here): each engine gets a unique name, the per-test schema and, unless told
otherwise, the test's `ManualClock`; every engine made is stopped when the test ends.
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


def unique_engine_name(prefix: str = "signals") -> str:
    """An engine name no other engine of this process has used."""
    return f"{prefix}-{next(_serial)}-{uuid.uuid4().hex[:6]}"


STOP_LIMIT = 15.0


async def _stopped(engine: gd.Engine) -> bool:
    """Stop `engine`; False when `stop()` did not return within STOP_LIMIT seconds."""
    stopping = asyncio.ensure_future(engine.stop(timeout=5))
    done, _ = await asyncio.wait({stopping}, timeout=STOP_LIMIT)
    if done:
        stopping.result()
        return True
    for task in list(engine._loops):  # cancel again, so the pool and listener still close
        task.cancel()
    await stopping
    return False


@pytest.fixture
async def make_engine(
    no_task_leaks: None,
    gendurable_dsn: str,
    gendurable_schema: str,
    manual_clock: gd.ManualClock,
) -> AsyncIterator[MakeEngine]:
    """A factory: `await make_engine(workflows=[...], queues={...}, clock=..., **options)`.

    Defaults: the test's schema, `queues={"default": 4}` (pass `queues=None` for a
    client-only engine), the `manual_clock` fixture, a unique name. The engine is started
    before it is returned and stopped at teardown; an engine whose `stop()` hangs, or a
    task left running, fails the test.
    """
    engines: list[gd.Engine] = []
    default: Any = object()

    async def make(
        *,
        workflows: Sequence[Any],
        queues: Mapping[str, int] | None = default,
        clock: Clock | None = default,
        name: str | None = None,
        **options: Any,
    ) -> gd.Engine:
        engine = gd.Engine(
            gendurable_dsn,
            workflows=workflows,
            schema=gendurable_schema,
            queues={"default": 4} if queues is default else queues,
            clock=manual_clock if clock is default else clock,
            name=name or unique_engine_name(),
            **options,
        )
        await engine.start()
        engines.append(engine)
        return engine

    yield make
    hung = [engine.name for engine in reversed(engines) if not await _stopped(engine)]
    if hung:
        pytest.fail(f"engine.stop() did not return within {STOP_LIMIT}s for {hung}", pytrace=False)


@pytest.fixture
async def db(gendurable_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection, to check rows with SQL (`"<schema>".instances`, `.signals`)."""
    conn = await asyncpg.connect(gendurable_dsn)
    yield conn
    await conn.close()


class Recorder:
    """Telemetry events of one engine, in emission order."""

    def __init__(self) -> None:
        self.events: list[tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]] = []

    def __call__(
        self, event: tuple[str, ...], measurements: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> None:
        self.events.append((event, dict(measurements), dict(metadata)))

    def of(self, *event: str) -> list[dict[str, Any]]:
        """Metadata of every recorded `event`."""
        return [meta for name, _, meta in self.events if name == event]


@pytest.fixture
def telemetry() -> Callable[[gd.Engine], Recorder]:
    """`telemetry(engine)` attaches a recorder for every event of `engine` and returns it."""

    def attach(engine: gd.Engine) -> Recorder:
        recorder = Recorder()
        engine.telemetry.attach(f"test-recorder-{uuid.uuid4().hex[:6]}", recorder)
        return recorder

    return attach


class Rows:
    """Plain-SQL views of the test schema's tables."""

    def __init__(self, db: asyncpg.Connection, schema: str) -> None:
        self.db = db
        self.schema = schema

    async def signals(self, instance_id: int | None = None) -> list[asyncpg.Record]:
        """The stored signals (all, or one instance's), in arrival order."""
        return list(
            await self.db.fetch(
                f"SELECT id, instance_id, name, payload::text AS payload "
                f'FROM "{self.schema}".signals '
                f"WHERE $1::bigint IS NULL OR instance_id = $1 ORDER BY id",
                instance_id,
            )
        )

    async def signal_count(self) -> int:
        """How many signals the schema holds."""
        return int(await self.db.fetchval(f'SELECT count(*) FROM "{self.schema}".signals'))

    async def instance(self, id: int) -> asyncpg.Record:
        """The status and await columns of one instance row."""
        row = await self.db.fetchrow(
            f"SELECT id, key, status::text AS status, step, attempt, await_names, "
            f'await_deadline, await_seen, timed_out FROM "{self.schema}".instances '
            f"WHERE id = $1",
            id,
        )
        assert row is not None, f"no instance {id}"
        return row

    async def instances(self) -> list[asyncpg.Record]:
        """Every instance row (status and await columns), by id."""
        return list(
            await self.db.fetch(
                f"SELECT id, key, status::text AS status, step, attempt, await_names, "
                f'await_deadline, await_seen, timed_out FROM "{self.schema}".instances '
                f"ORDER BY id"
            )
        )


@pytest.fixture
def rows(db: asyncpg.Connection, gendurable_schema: str) -> Rows:
    """SQL access to the test schema (`rows.signals()`, `rows.instance(id)`, ...)."""
    return Rows(db, gendurable_schema)
