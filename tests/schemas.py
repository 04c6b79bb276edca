"""Migrated schemas reused from test to test, emptied in between (the root conftest's
`gendurable_schema`).

Migrating a schema and dropping it costs more than many a test; emptying its tables costs a
fraction of that. A schema goes back to the pool only as it came: every table emptied (its
identities restarted), nothing else changed. One whose shape a test changed (a table, a
column, an index, a function, a trigger, the recorded migrations) is dropped instead, so no
test sees what another one left.

The pool talks to the server through one connection of its own, on an event loop in a
thread of its own: fixtures must not touch the test's loop.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg

from gendurable import migrate
from gendurable.db.schema_admin import drop_schema

_T = TypeVar("_T")

# Everything that makes a schema what the migrations made it, as one digest.
_SHAPE = """
SELECT md5(coalesce(string_agg(item, E'\\n' ORDER BY item), '')) FROM (
    SELECT format('class %s %s %s %s', c.relname, c.relkind, c.relnatts, c.reloptions) AS item
    FROM pg_class c WHERE c.relnamespace = $1::regnamespace
    UNION ALL
    SELECT format('column %s.%s %s %s %s', c.relname, a.attname,
                  format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  pg_get_expr(d.adbin, d.adrelid))
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = $1::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT format('index %s %s %s', pg_get_indexdef(i.indexrelid), i.indisvalid, i.indisready)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE c.relnamespace = $1::regnamespace
    UNION ALL
    SELECT format('constraint %s %s', con.conname, pg_get_constraintdef(con.oid))
    FROM pg_constraint con WHERE con.connamespace = $1::regnamespace
    UNION ALL
    SELECT format('function %s %s', p.oid::regprocedure, md5(pg_get_functiondef(p.oid)))
    FROM pg_proc p WHERE p.pronamespace = $1::regnamespace
    UNION ALL
    SELECT format('trigger %s', pg_get_triggerdef(t.oid))
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = $1::regnamespace
    UNION ALL
    SELECT format('type %s %s', t.typname,
                  (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                   FROM pg_enum e WHERE e.enumtypid = t.oid))
    FROM pg_type t WHERE t.typnamespace = $1::regnamespace
    UNION ALL
    SELECT format('meta %s', version) FROM {schema}.meta
    UNION ALL
    SELECT format('migration %s %s %s', version, name, checksum) FROM {schema}.migrations
) shape
"""

# The tables a test writes to: all but the migrator's own.
_TABLES = """
SELECT tablename FROM pg_tables
WHERE schemaname = $1 AND tablename NOT IN ('meta', 'migrations')
ORDER BY tablename
"""


class SchemaPool:
    """Migrated, empty schemas for tests: `take()` one, `give_back()` it after the test."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="gendurable-schema-pool", daemon=True
        )
        self._thread.start()
        self._conn: asyncpg.Connection | None = None
        self._free: list[str] = []
        self._shapes: dict[str, str] = {}
        self._emptying: dict[str, str] = {}
        self.made = 0
        self.reused = 0
        self.dropped = 0

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._dsn)
        return self._conn

    async def _shape(self, schema: str) -> str | None:
        conn = await self._connection()
        try:
            shape: str = await conn.fetchval(_SHAPE.format(schema=f'"{schema}"'), schema)
        except asyncpg.PostgresError:  # dropped, or its migrator's tables altered
            return None
        return shape

    async def _make(self) -> str:
        schema = f"t_{secrets.token_hex(6)}"
        await migrate(self._dsn, schema=schema)
        conn = await self._connection()
        tables = [r["tablename"] for r in await conn.fetch(_TABLES, schema)]
        names = ", ".join(f'"{schema}"."{table}"' for table in tables)
        self._emptying[schema] = f"TRUNCATE {names} RESTART IDENTITY"
        shape = await self._shape(schema)
        assert shape is not None
        self._shapes[schema] = shape
        self.made += 1
        return schema

    async def _give_back(self, schema: str) -> None:
        if await self._shape(schema) != self._shapes[schema]:
            del self._shapes[schema], self._emptying[schema]
            self.dropped += 1
            await drop_schema(self._dsn, schema)
            return
        conn = await self._connection()
        try:
            async with conn.transaction():
                # As long as `drop_schema` waits: a connection a test left open in the
                # schema is an error, not a hang.
                await conn.execute("SET LOCAL lock_timeout = '10s'")
                await conn.execute(self._emptying[schema])
        except asyncpg.LockNotAvailableError:
            del self._shapes[schema], self._emptying[schema]
            raise RuntimeError(
                f"could not empty schema {schema!r}: another connection still holds locks "
                "in it; close engines and connections before the test ends"
            ) from None
        self._free.append(schema)

    def take(self) -> str:
        """A migrated schema with every table empty, that no running test uses."""
        if self._free:
            self.reused += 1
            return self._free.pop()
        return self._call(self._make())

    def give_back(self, schema: str) -> None:
        """Empty `schema` for the next test, or drop it if the test changed its shape."""
        self._call(self._give_back(schema))

    def drop(self, schema: str) -> None:
        """Drop `schema` (a fresh one a test had), if it exists."""
        self._call(drop_schema(self._dsn, schema))

    def close(self) -> None:
        """Drop every schema of the pool and stop its thread."""

        async def drop_all() -> None:
            for schema in self._free:
                await drop_schema(self._dsn, schema)
            if self._conn is not None:
                await self._conn.close()

        try:
            self._call(drop_all())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
