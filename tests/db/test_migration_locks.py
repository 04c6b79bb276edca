"""Migrations beside live workers: lock timeouts, retries, concurrent index builds.

Each test adds a migration after the packaged ones (`steps=`), as a later release would, and
watches from outside (pg_stat_activity) where it waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

import gendurable as gd
from gendurable.db.connect import connect
from gendurable.db.migrator import migrate, migrate_connection
from gendurable.errors import EngineError
from gendurable.sql import Migration, migration, migrations, statements
from gendurable.testing import MakeEngine
from polling import eventually

pytestmark = pytest.mark.fresh_schema

ADD_COLUMN = "ALTER TABLE __schema__.instances ADD COLUMN IF NOT EXISTS probe text;\n"
BUILD_INDEX = (
    "-- gendurable: no-transaction\n"
    "ALTER TABLE __schema__.instances ADD COLUMN IF NOT EXISTS probe text;\n"
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS instances_probe\n"
    "    ON __schema__.instances (probe) WHERE probe IS NOT NULL;\n"
)


@gd.job(name="locks.noop")
async def noop(args: object, ctx: gd.Context) -> None:
    return None


NO_TIME = timedelta(0)
GUARD = 60.0
"""Seconds after which a statement that should not be blocked counts as blocked for good."""


LATEST = len(migrations("gendurable"))
"""The version the packaged migrations leave."""
PROBE = LATEST + 1
"""The version of the test's migration, played as the next release's."""


def _later(schema: str, text: str) -> list[Migration]:
    return [*migrations(schema), migration(f"{PROBE:04d}_probe.sql", text, schema)]


@pytest.fixture
async def conns(gendurable_dsn: str, gendurable_schema: str) -> AsyncIterator[Conns]:
    await migrate(gendurable_dsn, schema=gendurable_schema)
    opened = Conns(*[await connect(gendurable_dsn) for _ in range(4)])
    yield opened
    for conn in opened.all():
        await conn.close()


class Conns:
    """The connections of a test: a migrator, a long transaction, a worker, an observer."""

    def __init__(
        self,
        migrator: asyncpg.Connection,
        long: asyncpg.Connection,
        worker: asyncpg.Connection,
        observer: asyncpg.Connection,
    ) -> None:
        self.migrator, self.long, self.worker, self.observer = migrator, long, worker, observer

    def all(self) -> list[asyncpg.Connection]:
        return [self.migrator, self.long, self.worker, self.observer]

    async def migrator_waits(self, query_part: str, *, longer_than: timedelta = NO_TIME) -> bool:
        """Whether the migrator's backend waits for a lock in a statement holding
        `query_part`, and has been waiting for it `longer_than` (by the server's clock)."""
        return bool(
            await self.observer.fetchval(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.pid = $1 AND NOT l.granted AND strpos(a.query, $2) > 0"
                " AND clock_timestamp() - l.waitstart >= $3",
                self.migrator.get_server_pid(),
                query_part,
                longer_than,
            )
        )


async def _column(conn: asyncpg.Connection, schema: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = $1 "
            "AND table_name = 'instances' AND column_name = 'probe'",
            schema,
        )
    )


async def _index_valid(conn: asyncpg.Connection, schema: str) -> bool | None:
    valid: bool | None = await conn.fetchval(
        "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)",
        f'"{schema}".instances_probe',
    )
    return valid


async def test_a_migration_gives_up_a_table_lock_instead_of_queueing_workers_then_retries(
    conns: Conns, gendurable_schema: str
) -> None:
    schema = gendurable_schema
    long = conns.long.transaction()
    await long.start()
    await conns.long.fetchval(f'SELECT count(*) FROM "{schema}".instances')  # holds a lock
    migrating = asyncio.create_task(
        migrate_connection(
            conns.migrator,
            schema=schema,
            steps=_later(schema, ADD_COLUMN),
            lock_timeout=timedelta(milliseconds=100),
            lock_attempts=1000,
        )
    )
    await eventually(lambda: conns.migrator_waits("ALTER TABLE"), what="the ALTER to wait")

    # A worker's statement on the table, queued behind the ALTER's wait, runs as soon as the
    # ALTER gives up: the long transaction is still open.
    async with asyncio.timeout(GUARD):
        assert await conns.worker.fetchval(f'SELECT count(*) FROM "{schema}".instances') == 0
    assert not migrating.done()

    await long.rollback()
    assert await migrating == PROBE  # a later try got the lock
    assert await _column(conns.observer, schema)


async def test_a_migration_that_never_gets_its_lock_fails_naming_the_file_and_keeps_nothing(
    conns: Conns, gendurable_schema: str
) -> None:
    schema = gendurable_schema
    long = conns.long.transaction()
    await long.start()
    await conns.long.fetchval(f'SELECT count(*) FROM "{schema}".instances')

    with pytest.raises(
        EngineError,
        match=rf"migration {PROBE:04d}_probe\.sql could not take its locks within 20 ms in 3",
    ):
        await migrate_connection(
            conns.migrator,
            schema=schema,
            steps=_later(schema, ADD_COLUMN),
            lock_timeout=timedelta(milliseconds=20),
            lock_attempts=3,
        )

    await long.rollback()
    assert not await _column(conns.observer, schema)
    assert await conns.observer.fetchval(f'SELECT version FROM "{schema}".meta') == LATEST


async def test_an_index_is_built_concurrently_outside_a_transaction_for_as_long_as_it_takes(
    conns: Conns, gendurable_schema: str
) -> None:
    schema = gendurable_schema
    steps = _later(schema, BUILD_INDEX)
    # An open snapshot: a concurrent build waits for it to end, however long that takes,
    # without blocking any worker meanwhile.
    snapshot = conns.long.transaction(isolation="repeatable_read")
    await snapshot.start()
    await conns.long.fetchval("SELECT 1")
    migrating = asyncio.create_task(
        migrate_connection(
            conns.migrator,
            schema=schema,
            steps=steps,
            lock_timeout=timedelta(milliseconds=20),
            lock_attempts=1,
        )
    )
    # Ten times the lock timeout into its wait, the build still waits.
    await eventually(
        lambda: conns.migrator_waits(
            "CREATE INDEX CONCURRENTLY", longer_than=timedelta(milliseconds=200)
        ),
        what="the build to wait ten times the lock timeout",
    )

    async with asyncio.timeout(GUARD):
        await conns.worker.execute(
            f'INSERT INTO "{schema}".instances (workflow, queue, step, run_at, inserted_at, '
            "updated_at) VALUES ('w', 'q', 's', now(), now(), now())"
        )
    assert not migrating.done()

    await snapshot.commit()
    assert await migrating == PROBE
    assert await _index_valid(conns.observer, schema) is True
    rows = await conns.observer.fetch(f'SELECT version, checksum FROM "{schema}".migrations')
    assert [tuple(r) for r in rows] == [(m.version, m.checksum) for m in steps]
    # Applied once: a second run finds nothing to do.
    assert await migrate_connection(conns.migrator, schema=schema, steps=steps) == PROBE


async def test_an_interrupted_concurrent_build_is_dropped_and_built_again(
    conns: Conns, gendurable_schema: str
) -> None:
    schema = gendurable_schema
    steps = _later(schema, BUILD_INDEX)
    snapshot = conns.long.transaction(isolation="repeatable_read")
    await snapshot.start()
    await conns.long.fetchval("SELECT 1")
    migrating = asyncio.create_task(migrate_connection(conns.migrator, schema=schema, steps=steps))
    await eventually(
        lambda: conns.migrator_waits("CREATE INDEX CONCURRENTLY"), what="the build to wait"
    )
    await conns.observer.execute("SELECT pg_cancel_backend($1)", conns.migrator.get_server_pid())
    with pytest.raises(asyncpg.QueryCanceledError):
        await migrating
    await snapshot.commit()
    assert await _index_valid(conns.observer, schema) is False  # what the cut build left
    assert await conns.observer.fetchval(f'SELECT version FROM "{schema}".meta') == LATEST

    assert await migrate_connection(conns.migrator, schema=schema, steps=steps) == PROBE

    assert await _index_valid(conns.observer, schema) is True


async def test_an_up_to_date_schema_needs_no_migration_lock(
    conns: Conns, gendurable_dsn: str, gendurable_schema: str, make_engine: MakeEngine
) -> None:
    schema = gendurable_schema
    # Another migrator at work (a long concurrent index build of a later release).
    lock = statements(schema)["migrate_try_lock_session"]
    assert await conns.long.fetchval(lock.sql, *lock.args(schema=schema)) is True

    async with asyncio.timeout(GUARD):
        assert await migrate(gendurable_dsn, schema=schema) == LATEST
        await make_engine(workflows=[noop], queues=None)  # starts: migrate="auto"

    # What is pending waits for the lock, trying it again and again.
    migrating = asyncio.create_task(
        migrate_connection(conns.migrator, schema=schema, steps=_later(schema, ADD_COLUMN))
    )
    await eventually(lambda: _tried_the_lock(conns), what="the migrator to try the lock")
    assert not migrating.done()
    assert await conns.observer.fetchval(f'SELECT version FROM "{schema}".meta') == LATEST
    unlock = statements(schema)["migrate_unlock_session"]
    await conns.long.execute(unlock.sql, *unlock.args(schema=schema))
    assert await migrating == PROBE


async def _tried_the_lock(conns: Conns) -> bool:
    """Whether the migrator's last statement asked for the migration lock."""
    query = await conns.observer.fetchval(
        "SELECT query FROM pg_stat_activity WHERE pid = $1", conns.migrator.get_server_pid()
    )
    return "'gendurable:migrate:'" in (query or "")


async def test_a_migrator_waiting_for_the_lock_holds_back_no_concurrent_build(
    conns: Conns, gendurable_schema: str
) -> None:
    # The migrator holding the lock builds an index concurrently, which waits for every
    # transaction with an older snapshot. Another migrator waiting for the lock inside a
    # statement would be one, and the two would deadlock (the build's wait for it, its wait
    # for the lock). A waiting migrator only tries the lock, between pauses in no transaction.
    schema = gendurable_schema
    lock = statements(schema)["migrate_try_lock_session"]
    assert await conns.long.fetchval(lock.sql, *lock.args(schema=schema)) is True
    migrating = asyncio.create_task(
        migrate_connection(conns.migrator, schema=schema, steps=_later(schema, ADD_COLUMN))
    )
    await eventually(lambda: _tried_the_lock(conns), what="the migrator to try the lock")

    async with asyncio.timeout(GUARD):
        await conns.long.execute(
            f'CREATE INDEX CONCURRENTLY probe_build ON "{schema}".instances (updated_at)'
        )

    assert not migrating.done()
    unlock = statements(schema)["migrate_unlock_session"]
    await conns.long.execute(unlock.sql, *unlock.args(schema=schema))
    assert await migrating == PROBE
