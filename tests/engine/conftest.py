"""Fixtures of the engine tests: `rows`, SQL views of the signals and awaits of the test's
schema (for the signal and await tests).

`make_engine` comes from the gendurable pytest plugin."""

from __future__ import annotations

import asyncpg
import pytest


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
