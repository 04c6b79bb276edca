"""The schedule statements' own guards, run directly against real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import pytest

import gendurable as gd
from gendurable.db.pool import Database
from gendurable.db.schedule_store import ScheduleStore
from schedule_support import Rows

NOW = datetime(2030, 1, 1, tzinfo=UTC)
SPEC = msgspec.json.encode({"every": 60})


@pytest.fixture
def rows(db: asyncpg.Connection, gendurable_schema: str) -> Rows:
    """SQL views of the test's schema."""
    return Rows(db, gendurable_schema)


async def test_schedule_first_leaves_a_row_someone_moved_since_its_declaration(
    gendurable_dsn: str, gendurable_schema: str, rows: Rows
) -> None:
    await gd.migrate(gendurable_dsn, schema=gendurable_schema)
    db = await Database.open(gendurable_dsn, gendurable_schema)
    try:
        schedules = ScheduleStore(db)
        [declared] = await schedules.schedule_declare(
            names=["s"], workflows=["w"], specs=[SPEC], node="node-a", now=NOW
        )
        assert declared.fresh
        moved = NOW + timedelta(minutes=7)  # another engine's declaration or ticker, since
        await rows.db.execute(
            f'UPDATE "{gendurable_schema}".schedules SET next_at = $1 WHERE name = $2', moved, "s"
        )

        await schedules.schedule_first(
            names=["s"], declared=[declared.next_at], first_ats=[NOW + timedelta(minutes=1)]
        )

        assert (await rows.schedule("s"))["next_at"] == moved
        [again] = await schedules.schedule_declare(
            names=["s"], workflows=["w"], specs=[SPEC], node="node-b", now=NOW
        )
        assert not again.fresh  # same definition: it keeps its place
        await schedules.schedule_first(
            names=["s"], declared=[again.next_at], first_ats=[NOW + timedelta(minutes=1)]
        )
        assert (await rows.schedule("s"))["next_at"] == NOW + timedelta(minutes=1)
    finally:
        await db.close()
