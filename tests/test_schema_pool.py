"""The tests' reused schemas (schemas.py): a schema goes back to the pool empty and as the
migrations made it, or not at all."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

import gendurable as gd
from gendurable.sql import migrations
from schemas import SchemaPool


@pytest.fixture
def pool(gendurable_dsn: str) -> Iterator[SchemaPool]:
    made = SchemaPool(gendurable_dsn)
    yield made
    made.close()


@pytest.fixture
async def conn(gendurable_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(gendurable_dsn)
    yield c
    await c.close()


async def exists(conn: asyncpg.Connection, schema: str) -> bool:
    found = await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)
    return found is not None


async def test_schema_pool_hands_out_a_migrated_schema_again_emptied_with_identities_restarted(
    pool: SchemaPool, conn: asyncpg.Connection, gendurable_dsn: str
) -> None:
    schema = pool.take()
    latest = len(migrations("gendurable"))
    assert await gd.migrate(gendurable_dsn, schema=schema) == latest  # nothing left to apply
    insert = (
        f'INSERT INTO "{schema}".instances (workflow, queue, step, run_at, inserted_at, '
        "updated_at) VALUES ('w', 'default', 's', now(), now(), now()) RETURNING id"
    )
    assert await conn.fetchval(insert) == 1
    await conn.execute(f"INSERT INTO \"{schema}\".paused_queues VALUES ('q', now(), 'test')")
    pool.give_back(schema)

    assert pool.take() == schema
    assert await conn.fetchval(f'SELECT count(*) FROM "{schema}".paused_queues') == 0
    assert await conn.fetchval(insert) == 1
    assert (pool.made, pool.reused, pool.dropped) == (1, 1, 0)


@pytest.mark.parametrize(
    "change",
    [
        'ALTER TABLE "{s}".instances ADD COLUMN extra int',
        'ALTER TABLE "{s}".signals ALTER COLUMN name DROP NOT NULL',
        'CREATE INDEX ON "{s}".instances (attempt)',
        'DROP INDEX "{s}".instances_pick',
        'CREATE FUNCTION "{s}".f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$',
        'CREATE OR REPLACE FUNCTION "{s}".queue_paused(q text) RETURNS boolean '
        "LANGUAGE sql AS $$ SELECT false $$",
        'CREATE TABLE "{s}".extra (id int)',
        "UPDATE \"{s}\".migrations SET checksum = 'x'",
        'UPDATE "{s}".meta SET version = 0',
        'DROP SCHEMA "{s}" CASCADE',
    ],
)
async def test_schema_pool_drops_a_schema_whose_shape_a_test_changed(
    pool: SchemaPool, conn: asyncpg.Connection, change: str
) -> None:
    schema = pool.take()
    await conn.execute(change.format(s=schema))
    pool.give_back(schema)

    assert not await exists(conn, schema)
    assert pool.take() != schema
    assert pool.dropped == 1


async def test_schema_pool_close_drops_its_schemas(
    gendurable_dsn: str, conn: asyncpg.Connection
) -> None:
    pool = SchemaPool(gendurable_dsn)
    schemas = [pool.take(), pool.take()]
    for schema in schemas:
        pool.give_back(schema)
    pool.close()

    assert [await exists(conn, s) for s in schemas] == [False, False]
