"""Fixtures for the signal and await tests: SQL access and telemetry recorders.

`make_engine` comes from the gendurable pytest plugin."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
import pytest

import gendurable as gd


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
