"""Apply the packaged migrations to a schema, safely from many processes at once, beside
running engines; refuse a database whose applied migrations are not the packaged ones.

Each applied migration is recorded in `<schema>.migrations` with the sha256 of its file's
text. Before anything runs, and at every engine start, the recorded checksums are compared
with the packaged files: a difference is a `ConfigError` naming the file. Migrations newer
than this code (applied by a later release during a rolling deploy) are not this code's to
judge: an older engine runs on the expanded schema, which is what every migration keeps
possible (see `sql/migrations/README.md`).

A schema with nothing to apply costs a few reads and takes no lock, so engines starting
while another process migrates start at once. Otherwise each pending migration runs under the
schema's migration lock (an advisory lock, so concurrent migrators take turns) and under a
`lock_timeout`: a table lock it cannot get in time is given up, so its wait never queues the
workers' statements behind a long transaction, and it is tried again after a backoff. The
migration lock itself is tried, never waited for in a statement (the pause between tries is
the migrator's own): a concurrent index build by the migrator holding it waits for every
transaction with an older snapshot, a waiting statement's included, and the two would
deadlock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from ..errors import ConfigError, EngineError
from ..sql import Migration, Statement, migrations, quote_schema, statements
from ..sql.scripts import concurrent_index, split_statements, waits_harmlessly
from ..version import __version__
from .connect import connect

DEFAULT_LOCK_TIMEOUT = timedelta(seconds=5)
"""How long a migration's statement waits for a table lock before it gives up and retries."""

DEFAULT_LOCK_ATTEMPTS = 5
"""How many times a migration (or a statement of one run outside a transaction) is tried."""

_MAX_BACKOFF = 60.0
_LOCK_POLL_FIRST = 0.01
_LOCK_POLL_MAX = 0.5
"""Seconds between tries of the migration lock another migrator holds: doubling from the
first, up to the last."""
_INDEX_TOKEN = "__index__"


@dataclass(frozen=True, slots=True)
class _Applied:
    version: int
    """The schema's version (`meta.version`); 0 when there is no schema."""
    recorded: dict[int, tuple[str, str]] | None
    """version -> (file name, checksum) of each applied migration; None when the schema
    predates the record (made by a pre-release build)."""


@dataclass(frozen=True, slots=True)
class _Policy:
    lock_timeout_ms: int
    attempts: int

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before try `attempt + 2`: the lock timeout, doubled each time."""
        return float(min(_MAX_BACKOFF, self.lock_timeout_ms / 1000 * 2**attempt))


async def migrate(
    dsn: str | None = None,
    *,
    schema: str = "gendurable",
    lock_timeout: timedelta = DEFAULT_LOCK_TIMEOUT,
    lock_attempts: int = DEFAULT_LOCK_ATTEMPTS,
) -> int:
    """Create or upgrade `schema`; returns the schema version now in place.

    Idempotent, and safe when several processes migrate at once, or while engines of this or
    the previous release run on the schema: migrators take turns under an advisory lock keyed
    by the schema, and every statement waits at most `lock_timeout` for a table lock (then
    the migration is tried again, `lock_attempts` times in all, before `EngineError`).
    Refuses (`ConfigError`, naming the file) a schema whose applied migration differs from
    the one packaged. An invalid schema name or option raises `ConfigError` before anything
    runs. Connects on its own: a migration that builds an index concurrently holds a
    session-level lock, so give a DSN that reaches the database directly, not through a
    transaction-mode pooler.
    """
    quote_schema(schema)
    policy = _policy(lock_timeout, lock_attempts)
    conn = await connect(dsn)
    try:
        return await _migrate(conn, schema, migrations(schema), policy)
    finally:
        await conn.close()


async def migrate_connection(
    conn: asyncpg.Connection,
    *,
    schema: str,
    lock_timeout: timedelta = DEFAULT_LOCK_TIMEOUT,
    lock_attempts: int = DEFAULT_LOCK_ATTEMPTS,
    steps: Sequence[Migration] | None = None,
) -> int:
    """`migrate` on an open connection of the caller's own, not a pool's: a migration run
    outside a transaction sets session state there (released before this returns). `steps`
    replaces the packaged migrations (tests)."""
    policy = _policy(lock_timeout, lock_attempts)
    return await _migrate(conn, schema, steps if steps is not None else migrations(schema), policy)


async def check_version(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, *, schema: str
) -> int:
    """The schema's version; `ConfigError` saying what to run when it is missing, behind,
    or predates the checksum record, and naming the file when an applied migration differs
    from the packaged one. Only reads."""
    named = statements(schema)
    steps = migrations(schema)
    applied = await _read_applied(conn, named, schema)
    _verify(applied, steps, schema, adopting=False)
    latest = steps[-1].version
    if applied.version < latest:
        state = "does not exist" if applied.version == 0 else f"is at version {applied.version}"
        raise ConfigError(
            f"schema {schema!r} {state}, this gendurable needs version {latest}: run "
            f"`gendurable migrate --schema {schema}` or start the engine with migrate='auto'"
        )
    return applied.version


def _policy(lock_timeout: timedelta, lock_attempts: int) -> _Policy:
    if not isinstance(lock_timeout, timedelta) or lock_timeout < timedelta(milliseconds=1):
        raise ConfigError(
            f"lock_timeout must be a timedelta of at least 1 ms, got {lock_timeout!r}"
        )
    if isinstance(lock_attempts, bool) or not isinstance(lock_attempts, int) or lock_attempts < 1:
        raise ConfigError(f"lock_attempts must be an int of at least 1, got {lock_attempts!r}")
    return _Policy(lock_timeout // timedelta(milliseconds=1), lock_attempts)


async def _migrate(
    conn: asyncpg.Connection, schema: str, steps: Sequence[Migration], policy: _Policy
) -> int:
    named = statements(schema)
    steps = sorted(steps, key=lambda m: m.version)
    if not steps:
        raise ConfigError("no migrations are packaged; the installation is broken")
    applied = await _read_applied(conn, named, schema)
    _verify(applied, steps, schema, adopting=True)
    for step in steps:
        if not _pending(applied, step):
            continue
        if step.transactional:
            await _apply_in_transaction(conn, named, schema, steps, step, policy)
        else:
            await _apply_statements(conn, named, schema, steps, step, policy)
    return (await _read_applied(conn, named, schema)).version


async def _read_applied(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    named: dict[str, Statement],
    schema: str,
) -> _Applied:
    tables = await conn.fetchrow(*_call(named, "bookkeeping_tables", schema=schema))
    if tables is None or not tables["meta"]:
        return _Applied(0, {})
    version = int(await conn.fetchval(*_call(named, "meta_version")) or 0)
    if not tables["migrations"]:
        return _Applied(version, None)
    rows = await conn.fetch(*_call(named, "migrations_applied"))
    return _Applied(version, {r["version"]: (r["name"], r["checksum"]) for r in rows})


def _pending(applied: _Applied, step: Migration) -> bool:
    if applied.recorded is None:
        # A schema from before the record: 0001 runs again (it is idempotent: it adds what
        # the pre-release build lacked, the record among it) and is recorded.
        return step.version == 1 or step.version > applied.version
    return step.version > applied.version


def _verify(applied: _Applied, steps: Sequence[Migration], schema: str, *, adopting: bool) -> None:
    """Refuse a schema whose applied migrations are not the packaged ones."""
    if applied.recorded is None:
        if adopting and applied.version == 1:
            return
        raise ConfigError(
            f"schema {schema!r} is at version {applied.version} but records no migration "
            "checksums: a pre-release build of gendurable made it; run `gendurable migrate "
            f"--schema {schema}` once to record them"
        )
    for step in steps:
        if step.version > applied.version:
            continue
        found = applied.recorded.get(step.version)
        if found is None:
            raise ConfigError(
                f"schema {schema!r} is at version {applied.version} but has no record of "
                f"migration {step.name}: the schema was changed by hand; restore it from a "
                "backup, or recreate it"
            )
        name, checksum = found
        if checksum != step.checksum:
            raise ConfigError(
                f"schema {schema!r}: migration {step.name} differs from the one applied to "
                f"this database ({name}, checksum {checksum[:12]}, packaged {step.checksum[:12]}): "
                "a released migration was edited, or another build of gendurable migrated "
                "the database; run the release that migrated it, or a later one"
            )


@asynccontextmanager
async def _migration_lock(
    conn: asyncpg.Connection, named: dict[str, Statement], schema: str
) -> AsyncIterator[None]:
    """The schema's migration lock, held by this session until the block ends. Tried, with a
    pause between tries, never waited for in a statement (see `migrate_try_lock_session`)."""
    pause = _LOCK_POLL_FIRST
    while not await conn.fetchval(*_call(named, "migrate_try_lock_session", schema=schema)):
        await asyncio.sleep(pause)
        pause = min(_LOCK_POLL_MAX, pause * 2)
    try:
        yield
    finally:
        await conn.execute(*_call(named, "migrate_unlock_session", schema=schema))


async def _apply_in_transaction(
    conn: asyncpg.Connection,
    named: dict[str, Statement],
    schema: str,
    steps: Sequence[Migration],
    step: Migration,
    policy: _Policy,
) -> None:
    async with _migration_lock(conn, named, schema):
        for attempt in range(policy.attempts):
            try:
                async with conn.transaction():
                    applied = await _read_applied(conn, named, schema)
                    _verify(applied, steps, schema, adopting=True)
                    if not _pending(applied, step):
                        return  # another process applied it while we waited for the lock
                    await conn.execute(
                        *_call(named, "lock_timeout_local", timeout=str(policy.lock_timeout_ms))
                    )
                    await conn.execute(step.sql)
                    await conn.execute(*_call(named, "migration_record", **_record(step)))
                return
            except asyncpg.LockNotAvailableError:
                if attempt + 1 < policy.attempts:
                    await asyncio.sleep(policy.backoff(attempt))
    raise _locked_out(schema, step, policy)


async def _apply_statements(
    conn: asyncpg.Connection,
    named: dict[str, Statement],
    schema: str,
    steps: Sequence[Migration],
    step: Migration,
    policy: _Policy,
) -> None:
    async with _migration_lock(conn, named, schema):
        try:
            applied = await _read_applied(conn, named, schema)
            _verify(applied, steps, schema, adopting=True)
            if not _pending(applied, step):
                return
            for statement in split_statements(step.sql):
                await _run_statement(conn, named, schema, step, statement, policy)
            async with conn.transaction():
                await conn.execute(*_call(named, "migration_record", **_record(step)))
        finally:
            await conn.execute(*_call(named, "lock_timeout_reset"))


async def _run_statement(
    conn: asyncpg.Connection,
    named: dict[str, Statement],
    schema: str,
    step: Migration,
    statement: str,
    policy: _Policy,
) -> None:
    """One statement of a migration run outside a transaction, repeatable by its rules."""
    index = concurrent_index(statement)
    # Building an index concurrently blocks no worker while it waits for older transactions
    # to end, however long they take: only what could queue workers gets the timeout.
    timeout = 0 if waits_harmlessly(statement) else policy.lock_timeout_ms
    for attempt in range(policy.attempts):
        try:
            await conn.execute(*_call(named, "lock_timeout_session", timeout=str(timeout)))
            if index is not None:
                await _drop_if_invalid(conn, named, schema, index)
            await conn.execute(statement)
            return
        except asyncpg.LockNotAvailableError:
            if attempt + 1 < policy.attempts:
                await asyncio.sleep(policy.backoff(attempt))
    raise _locked_out(schema, step, policy)


async def _drop_if_invalid(
    conn: asyncpg.Connection, named: dict[str, Statement], schema: str, index: str
) -> None:
    """Drop `index` if a concurrent build cut short left it INVALID (IF NOT EXISTS would keep
    it so, and an invalid index is still updated by every write but never read)."""
    quoted = '"' + index.replace('"', '""') + '"'
    if await conn.fetchval(
        *_call(named, "index_invalid", index=f"{quote_schema(schema)}.{quoted}")
    ):
        await conn.execute(named["index_drop_concurrently"].sql.replace(_INDEX_TOKEN, quoted))


def _record(step: Migration) -> dict[str, Any]:
    return {
        "version": step.version,
        "name": step.name,
        "checksum": step.checksum,
        "applied_by": f"gendurable {__version__}",
    }


def _call(named: dict[str, Statement], name: str, /, **values: Any) -> tuple[Any, ...]:
    """Statement `name` with `values` bound, as a connection method takes them."""
    statement = named[name]
    return (statement.sql, *statement.bind(values))


def _locked_out(schema: str, step: Migration, policy: _Policy) -> EngineError:
    return EngineError(
        f"schema {schema!r}: migration {step.name} could not take its locks within "
        f"{policy.lock_timeout_ms} ms in {policy.attempts} tries: a long transaction holds a "
        "table it changes (see pg_stat_activity); nothing of it was kept but what is safe to "
        "repeat. Run `gendurable migrate` again once that transaction ends"
    )
