"""Whole-schema administration outside migrations: dropping a schema (test fixtures, tooling)."""

from __future__ import annotations

import asyncpg

from ..errors import EngineError
from ..sql import quote_schema, statements
from .connect import connect


async def drop_schema(dsn: str | None, schema: str) -> None:
    """Drop `schema` and everything in it; a schema that does not exist is fine.

    Raises `ConfigError` for an invalid name (before connecting) and `EngineError` when
    another connection still holds locks in the schema for more than ten seconds.
    """
    quote_schema(schema)
    sql = statements(schema)["schema_drop"].sql
    conn = await connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(sql)
    except asyncpg.LockNotAvailableError:
        raise EngineError(
            f"could not drop schema {schema!r}: another connection still holds locks in it; "
            "close engines and connections before the test ends"
        ) from None
    finally:
        await conn.close()
