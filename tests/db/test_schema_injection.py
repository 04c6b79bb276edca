"""Schema names that try SQL injection are refused by every entry point, before any SQL.

The schema is substituted into statements as a quoted identifier, so the only characters
that could end the quoting (and the ones that could confuse a reader of the SQL) are
refused: double and single quotes, semicolons, backslashes, NUL and other control
characters; so are names over 63 bytes (PostgreSQL would silently cut them, and two
engines would then share a truncated schema) and the reserved `pg_` prefix. Anything else,
however odd, is a valid name and works.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from gendurable.cli import main
from gendurable.db.schema_admin import drop_schema
from gendurable.sql import quote_schema, statements

ATTACKS = {
    "close-quote-drop": 'x"; DROP SCHEMA canary CASCADE; --',
    "close-quote-dot": 'public"."instances',
    "single-quote": "x'; DROP SCHEMA canary CASCADE; --",
    "semicolon": "x; DROP SCHEMA canary CASCADE",
    "backslash-quote": 'x\\"',
    "nul": "canary\x00x",
    "newline": "x\nDROP SCHEMA canary CASCADE",
    "carriage-return": "x\rDROP",
    "tab": "x\ty",
    "escape-char": "x\x1by",
    "delete-char": "x\x7fy",
    "lone-quote": '"',
    "pg-catalog": "pg_catalog",
    "pg-temp": "pg_temp",
    "64-bytes": "x" * 64,
    "64-bytes-truncation-collision": "canary" + "x" * 58,
}


@pytest.fixture
async def canary(gendurable_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A schema holding one row: every attack names it; it must survive them all."""
    conn = await asyncpg.connect(gendurable_dsn)
    await conn.execute("CREATE SCHEMA IF NOT EXISTS canary")
    await conn.execute("CREATE TABLE IF NOT EXISTS canary.bird (alive boolean)")
    await conn.execute("INSERT INTO canary.bird VALUES (true)")
    yield conn
    await conn.execute("DROP SCHEMA canary CASCADE")
    await conn.close()


async def schemas(conn: asyncpg.Connection) -> set[str]:
    return {r["nspname"] for r in await conn.fetch("SELECT nspname FROM pg_namespace")}


@pytest.mark.parametrize("schema", ATTACKS.values(), ids=ATTACKS.keys())
async def test_schema_injection_is_refused_by_every_entry_point_and_runs_nothing(
    gendurable_dsn: str, canary: asyncpg.Connection, schema: str
) -> None:
    before = await schemas(canary)
    with pytest.raises(gd.ConfigError):
        quote_schema(schema)
    with pytest.raises(gd.ConfigError):
        statements(schema)
    with pytest.raises(gd.ConfigError):
        gd.Engine(gendurable_dsn, workflows=[Flow], schema=schema)
    with pytest.raises(gd.ConfigError):
        await gd.migrate(gendurable_dsn, schema=schema)
    with pytest.raises(gd.ConfigError):
        await drop_schema(gendurable_dsn, schema)
    for command in ("migrate", "status", "ls"):
        argv = [command, "--dsn", gendurable_dsn, "--schema", schema]
        assert await asyncio.to_thread(main, argv) == 2, command

    assert await schemas(canary) == before
    assert await canary.fetchval("SELECT count(*) FROM canary.bird") == 1


@gd.workflow(name="schemanames.flow")
class Flow:
    @gd.step(start=True)
    async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done(ctx.key)


ODD = {
    "reserved-word": "select",
    "mixed-case": "Mixed Case",
    "unicode": "ключ-🔑",
    "dollar": "a$b",
    "fullwidth-quote": "x\uff02 DROP SCHEMA canary CASCADE --",
    "63-bytes": "s" * 63,
}


@pytest.mark.parametrize("name", ODD.values(), ids=ODD.keys())
async def test_schema_injection_odd_but_valid_names_work_end_to_end(
    gendurable_dsn: str, canary: asyncpg.Connection, name: str
) -> None:
    engine = gd.Engine(
        gendurable_dsn,
        workflows=[Flow],
        schema=name,
        queues={"default": 2},
        clock=gd.ManualClock(),
        name=f"odd-{abs(hash(name))}",
        lease=timedelta(minutes=10),
    )
    try:
        async with engine:
            await Flow.start(key="k", engine=engine)
            await engine.drain()
            assert await Flow.result("k", timeout=5, engine=engine) == "k"
        assert name in await schemas(canary)
        count = await canary.fetchval(f"SELECT count(*) FROM {quote_schema(name)}.instances")
        assert count == 1
        assert await canary.fetchval("SELECT count(*) FROM canary.bird") == 1
    finally:
        await drop_schema(gendurable_dsn, name)
