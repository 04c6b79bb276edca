"""Migrations on real PostgreSQL: idempotence, concurrency, schema-name and DSN checks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

import gendurable as gd
from gendurable.db.connect import connect
from gendurable.db.migrator import migrate, migrate_connection
from gendurable.db.schema_admin import drop_schema
from gendurable.errors import ConfigError
from gendurable.sql import migrations

pytestmark = pytest.mark.fresh_schema

LATEST = max(m.version for m in migrations("gendurable"))
TABLES = {"instances", "signals", "rate_configs", "rate_buckets", "meta"}


async def _fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def _tables(dsn: str, schema: str) -> set[str]:
    rows = await _fetch(
        dsn, "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
    )
    return {r["table_name"] for r in rows}


async def _columns(dsn: str, schema: str) -> list[tuple[str, ...]]:
    rows = await _fetch(
        dsn,
        "SELECT table_name, column_name, data_type, column_default, is_nullable"
        " FROM information_schema.columns WHERE table_schema = $1 ORDER BY 1, 2",
        schema,
    )
    return [tuple(str(v) for v in r.values()) for r in rows]


async def _schemas(dsn: str) -> set[str]:
    return {r["nspname"] for r in await _fetch(dsn, "SELECT nspname FROM pg_namespace")}


async def test_migrate_twice_keeps_version_and_tables(
    gendurable_dsn: str, gendurable_schema: str
) -> None:
    first = await migrate(gendurable_dsn, schema=gendurable_schema)
    columns = await _columns(gendurable_dsn, gendurable_schema)
    second = await migrate(gendurable_dsn, schema=gendurable_schema)

    assert first == second == LATEST
    assert await _tables(gendurable_dsn, gendurable_schema) >= TABLES
    assert await _columns(gendurable_dsn, gendurable_schema) == columns
    rows = await _fetch(gendurable_dsn, f'SELECT version FROM "{gendurable_schema}".meta')
    assert [r["version"] for r in rows] == [LATEST]


@pytest.mark.race
@pytest.mark.parametrize("attempt", range(20))
@pytest.mark.parametrize("racers", [4, 8])
async def test_migrate_concurrent_on_fresh_schema_all_succeed(
    gendurable_dsn: str, gendurable_schema: str, racers: int, attempt: int
) -> None:
    # Connect first, then release every migration at once, so they really race for the lock.
    conns = [await connect(gendurable_dsn) for _ in range(racers)]
    try:
        versions = await asyncio.gather(
            *(migrate_connection(c, schema=gendurable_schema) for c in conns)
        )
    finally:
        await asyncio.gather(*(c.close() for c in conns))

    assert versions == [LATEST] * racers
    assert await _tables(gendurable_dsn, gendurable_schema) >= TABLES
    rows = await _fetch(gendurable_dsn, f'SELECT version FROM "{gendurable_schema}".meta')
    assert [r["version"] for r in rows] == [LATEST]


@pytest.mark.parametrize(
    ("schema", "complaint"),
    [
        ('bad"name', "contains"),
        ("bad;name", "contains"),
        ("x" * 64, "64 bytes"),
        ("é" * 32, "64 bytes"),
        ("", "non-empty"),
        ("pg_mine", "reserved"),
        ("PG_Mine", "reserved"),
    ],
    ids=["quote", "semicolon", "64-bytes", "64-bytes-multibyte", "empty", "pg-prefix", "PG-prefix"],
)
async def test_migrate_refuses_bad_schema_name_and_creates_nothing(
    gendurable_dsn: str, schema: str, complaint: str
) -> None:
    before = await _schemas(gendurable_dsn)

    with pytest.raises(ConfigError, match=complaint):
        await migrate(gendurable_dsn, schema=schema)

    assert await _schemas(gendurable_dsn) == before


@pytest.fixture(params=["with space", "MixedCase"])
async def odd_schema(
    gendurable_dsn: str, gendurable_schema: str, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """A valid schema name that needs quoting, unique to the test, dropped afterwards."""
    name = f"{gendurable_schema} {request.param}"
    yield name
    await drop_schema(gendurable_dsn, name)


async def test_migrate_accepts_names_that_need_quoting(
    gendurable_dsn: str, odd_schema: str
) -> None:
    assert await migrate(gendurable_dsn, schema=odd_schema) == LATEST

    assert odd_schema in await _schemas(gendurable_dsn)
    assert await _tables(gendurable_dsn, odd_schema) >= TABLES


@pytest.mark.parametrize("dsn", ["mysql://user@localhost/db", "sqlite:///tmp/x.db", "   "])
async def test_migrate_refuses_dsn_that_is_not_postgresql(gendurable_schema: str, dsn: str) -> None:
    with pytest.raises(ConfigError, match="dsn"):
        await migrate(dsn, schema=gendurable_schema)


async def test_drop_schema_removes_schema_with_its_tables(
    gendurable_dsn: str, gendurable_schema: str
) -> None:
    await migrate(gendurable_dsn, schema=gendurable_schema)

    await drop_schema(gendurable_dsn, gendurable_schema)

    assert gendurable_schema not in await _schemas(gendurable_dsn)
    assert await _tables(gendurable_dsn, gendurable_schema) == set()
    await drop_schema(gendurable_dsn, gendurable_schema)  # already gone: fine


async def test_drop_schema_refuses_bad_name(gendurable_dsn: str) -> None:
    with pytest.raises(ConfigError):
        await drop_schema(gendurable_dsn, 'x"; DROP SCHEMA public; --')


async def test_migrate_engine_without_migrate_refuses_a_missing_schema(
    gendurable_dsn: str, gendurable_schema: str
) -> None:
    @gd.job(name="migrate.noop")
    async def noop(args: object, ctx: gd.Context) -> None:
        return None

    engine = gd.Engine(
        gendurable_dsn, workflows=[noop], schema=gendurable_schema, migrate=False, name="nomig"
    )
    with pytest.raises(
        gd.ConfigError, match=f"does not exist, this gendurable needs version {LATEST}"
    ):
        await engine.start()
    await gd.migrate(gendurable_dsn, schema=gendurable_schema)
    async with engine:
        assert (await noop.enqueue(None, key="k", engine=engine)).created
