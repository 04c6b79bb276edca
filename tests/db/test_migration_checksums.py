"""The migrations a database records, with their checksums, and what is refused for them."""

from __future__ import annotations

import asyncio
import hashlib
from importlib import resources

import asyncpg
import pytest

import gendurable as gd
from gendurable.cli import main
from gendurable.db.connect import connect
from gendurable.db.migrator import check_version, migrate, migrate_connection
from gendurable.errors import ConfigError
from gendurable.sql import migration, migrations

LATEST = len(migrations("gendurable"))
"""The version the packaged migrations leave."""
pytestmark = pytest.mark.fresh_schema


@gd.job(name="checksums.noop")
async def noop(args: object, ctx: gd.Context) -> None:
    return None


def _text(name: str) -> str:
    folder = resources.files("gendurable.sql").joinpath("migrations")
    return folder.joinpath(name).read_text(encoding="utf-8")


async def _execute(dsn: str, sql: str, *args: object) -> None:
    conn = await connect(dsn)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def _fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def test_migrate_records_each_migration_with_the_checksum_of_its_file(
    gendurable_dsn: str, gendurable_schema: str
) -> None:
    await migrate(gendurable_dsn, schema=gendurable_schema)

    rows = await _fetch(
        gendurable_dsn,
        f'SELECT version, name, checksum, applied_by FROM "{gendurable_schema}".migrations',
    )
    assert [tuple(r) for r in rows] == [
        (
            m.version,
            m.name,
            hashlib.sha256(_text(m.name).encode()).hexdigest(),
            f"gendurable {gd.__version__}",
        )
        for m in migrations(gendurable_schema)
    ]


def test_a_migrations_checksum_is_the_same_for_every_schema() -> None:
    assert [m.checksum for m in migrations("a")] == [m.checksum for m in migrations("b c")]
    assert migrations("a")[0].sql != migrations("b c")[0].sql


async def _fake_checksum(dsn: str, schema: str) -> None:
    await _execute(dsn, f"UPDATE \"{schema}\".migrations SET checksum = repeat('0', 64)")


async def test_migrate_refuses_a_database_whose_applied_migration_differs(
    gendurable_dsn: str, gendurable_schema: str
) -> None:
    await migrate(gendurable_dsn, schema=gendurable_schema)
    await _fake_checksum(gendurable_dsn, gendurable_schema)
    before = await _fetch(gendurable_dsn, f'SELECT * FROM "{gendurable_schema}".meta')

    with pytest.raises(ConfigError, match=r"migration 0001_initial\.sql differs") as refused:
        await migrate(gendurable_dsn, schema=gendurable_schema)

    assert "checksum 000000000000, packaged " in str(refused.value)
    assert await _fetch(gendurable_dsn, f'SELECT * FROM "{gendurable_schema}".meta') == before


async def test_an_engine_refuses_to_start_on_a_database_whose_migration_differs(
    gendurable_dsn: str, gendurable_schema: str
) -> None:
    await migrate(gendurable_dsn, schema=gendurable_schema)
    await _fake_checksum(gendurable_dsn, gendurable_schema)

    for migrate_option in ("auto", False):
        engine = gd.Engine(
            gendurable_dsn,
            workflows=[noop],
            schema=gendurable_schema,
            migrate=migrate_option,
            name=f"checksums-{migrate_option}",
        )
        with pytest.raises(ConfigError, match=r"migration 0001_initial\.sql differs"):
            await engine.start()


async def test_cli_migrate_refuses_it_in_one_line_and_exits_1(
    gendurable_dsn: str, gendurable_schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await migrate(gendurable_dsn, schema=gendurable_schema)
    await _fake_checksum(gendurable_dsn, gendurable_schema)

    argv = ["migrate", "--dsn", gendurable_dsn, "--schema", gendurable_schema]
    assert await asyncio.to_thread(main, argv) == 1

    error = capsys.readouterr().err.splitlines()
    assert len(error) == 1
    assert error[0].startswith("gendurable migrate: error: ")
    assert "migration 0001_initial.sql differs" in error[0]


async def test_migrate_refuses_an_edited_copy_of_a_migration(
    gendurable_dsn: str, gendurable_schema: str
) -> None:
    await migrate(gendurable_dsn, schema=gendurable_schema)
    edited = migration(
        "0001_initial.sql",
        _text("0001_initial.sql").replace("Schema v1 of gendurable", "Schema v1, edited"),
        gendurable_schema,
    )

    conn = await connect(gendurable_dsn)
    try:
        with pytest.raises(ConfigError, match=r"migration 0001_initial\.sql differs"):
            await migrate_connection(conn, schema=gendurable_schema, steps=[edited])
        # The packaged file itself still passes.
        assert await migrate_connection(conn, schema=gendurable_schema) == LATEST
    finally:
        await conn.close()


async def test_a_schema_from_before_the_record_is_refused_by_engines_until_migrated(
    gendurable_dsn: str, gendurable_schema: str
) -> None:
    # What a pre-release build left: schema version 1, no record, and (an older 0001) a
    # table missing.
    schema = gendurable_schema
    conn = await connect(gendurable_dsn)
    try:
        await migrate_connection(conn, schema=schema, steps=migrations(schema)[:1])
    finally:
        await conn.close()
    await _execute(
        gendurable_dsn, f'DROP TABLE "{schema}".migrations; DROP TABLE "{schema}".paused_queues'
    )

    conn = await connect(gendurable_dsn)
    try:
        with pytest.raises(ConfigError, match="records no migration checksums"):
            await check_version(conn, schema=schema)
    finally:
        await conn.close()

    assert await migrate(gendurable_dsn, schema=schema) == LATEST

    rows = await _fetch(
        gendurable_dsn, f'SELECT version, checksum FROM "{schema}".migrations ORDER BY version'
    )
    assert [tuple(r) for r in rows] == [(m.version, m.checksum) for m in migrations(schema)]
    tables = await _fetch(
        gendurable_dsn,
        "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 "
        "AND table_name = 'paused_queues'",
        schema,
    )
    assert len(tables) == 1


async def test_a_schema_with_a_version_but_no_record_of_it_is_refused(
    gendurable_dsn: str, gendurable_schema: str
) -> None:
    await migrate(gendurable_dsn, schema=gendurable_schema)
    await _execute(gendurable_dsn, f'DELETE FROM "{gendurable_schema}".migrations')

    with pytest.raises(ConfigError, match=r"no record of migration 0001_initial\.sql"):
        await migrate(gendurable_dsn, schema=gendurable_schema)


async def test_migrations_of_a_later_release_are_left_to_it(
    gendurable_dsn: str, gendurable_schema: str
) -> None:
    # A newer release migrated the schema during a rolling deploy: this (older) code runs
    # on, judging only the migrations it packages.
    schema = gendurable_schema
    later = len(migrations(schema)) + 1
    await migrate(gendurable_dsn, schema=schema)
    await _execute(
        gendurable_dsn,
        f'INSERT INTO "{schema}".migrations (version, name, checksum, applied_by) '
        f"VALUES ({later}, '{later:04d}_later.sql', 'later', 'gendurable 9.9'); "
        f'UPDATE "{schema}".meta SET version = {later}',
    )

    assert await migrate(gendurable_dsn, schema=schema) == later
    conn = await connect(gendurable_dsn)
    try:
        assert await check_version(conn, schema=schema) == later
    finally:
        await conn.close()
