"""Apply the packaged migrations to a schema, safely from many processes at once."""

from __future__ import annotations

import asyncpg

from ..errors import ConfigError
from ..sql import migrations, quote_schema, statements
from .connect import connect


async def migrate(dsn: str | None = None, *, schema: str = "gendurable") -> int:
    """Create or upgrade `schema`; returns the schema version now in place.

    Idempotent, and safe when several processes migrate at once: they take an advisory lock
    keyed by the schema. An invalid schema name raises `ConfigError` before anything runs.
    """
    quote_schema(schema)
    conn = await connect(dsn)
    try:
        return await migrate_connection(conn, schema=schema)
    finally:
        await conn.close()


async def migrate_connection(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, *, schema: str
) -> int:
    """`migrate` on an open connection (the engine uses its own pool's connection)."""
    named = statements(schema)
    steps = migrations(schema)
    if not steps:
        raise ConfigError("no migrations are packaged; the installation is broken")
    async with conn.transaction():
        lock = named["migrate_lock"]
        await conn.execute(lock.sql, *lock.args(schema=schema))
        current = 0
        if await conn.fetchval(named["meta_exists"].sql):
            current = await conn.fetchval(named["meta_version"].sql) or 0
        for step in steps:
            if step.version > current:
                await conn.execute(step.sql)
                current = step.version
    return int(current)


async def check_version(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, *, schema: str
) -> int:
    """The schema's version; `ConfigError` saying what to run when it is missing or behind."""
    named = statements(schema)
    latest = max(m.version for m in migrations(schema))
    current = 0
    if await conn.fetchval(named["meta_exists"].sql):
        current = await conn.fetchval(named["meta_version"].sql) or 0
    if current < latest:
        state = "does not exist" if current == 0 else f"is at version {current}"
        raise ConfigError(
            f"schema {schema!r} {state}, this gendurable needs version {latest}: run "
            f"`gendurable migrate --schema {schema}` or start the engine with migrate='auto'"
        )
    return int(current)
