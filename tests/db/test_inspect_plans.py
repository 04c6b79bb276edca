"""The command line's list reads an index, newest first, at any table size."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from gendurable.db.migrator import migrate
from gendurable.db.pool import init_connection
from gendurable.sql import statements

pytestmark = pytest.mark.fresh_schema

ROWS = 20_000


@pytest.fixture
async def filled(gendurable_dsn: str, gendurable_schema: str) -> AsyncIterator[asyncpg.Connection]:
    await migrate(gendurable_dsn, schema=gendurable_schema)
    conn = await asyncpg.connect(gendurable_dsn)
    await init_connection(conn)
    await conn.execute(
        f"""
        INSERT INTO "{gendurable_schema}".instances
            (workflow, queue, step, status, run_at, key, inserted_at, updated_at, finished_at)
        SELECT 'wf-' || (g % 5), 'q-' || (g % 3), 'start',
               CASE WHEN g % 10 = 0 THEN 'available' ELSE 'done' END::"{gendurable_schema}".status,
               now(), 'key-' || g, now(), now(),
               CASE WHEN g % 10 = 0 THEN NULL ELSE now() END
        FROM generate_series(1, {ROWS}) g
        """
    )
    await conn.execute(f'ANALYZE "{gendurable_schema}".instances')
    yield conn
    await conn.close()


@pytest.mark.parametrize(
    "filters",
    [
        (None, None, None, None, None),
        ("wf-1", None, None, None, None),
        (None, ["available"], None, None, None),
        ("wf-2", ["done", "failed"], "q-1", None, 15_000),
        (None, None, None, "key-19", None),
    ],
)
async def test_instances_list_pages_backwards_through_the_primary_key(
    filled: asyncpg.Connection, gendurable_schema: str, filters: tuple[object, ...]
) -> None:
    statement = statements(gendurable_schema)["instances_list"]
    workflow, statuses, queue, key_prefix, before_id = filters
    args = statement.args(
        workflow=workflow,
        statuses=statuses,
        queue=queue,
        key_prefix=key_prefix,
        before_id=before_id,
        limit=50,
    )

    plan = "\n".join(r[0] for r in await filled.fetch(f"EXPLAIN {statement.sql}", *args))

    assert "Index Scan Backward using instances_pkey" in plan, plan
    assert "Sort" not in plan, plan
