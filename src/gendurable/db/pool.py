"""The database of one schema: an asyncpg pool, the named statements, and how they run.

Every statement runs through `Database`: bound by keyword (`sql.Statement`), retried
through connection failures when a repeat is harmless, and turned into typed rows
(`db/rows.py`). The stores (`engine_store`, `maintenance_store`, `operator_store`) hold one
method per statement on top of it.

JSON travels as bytes both ways: msgspec encodes on the client and jsonb is sent in binary
form, so values are stored as real jsonb objects and never as a jsonb string.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from ..sql import Statement, channel, statements
from .connect import Hosts
from .outage import Outage

R = TypeVar("R")

JSONB_VERSION = b"\x01"

IDLE_KEPT = 4
"""Connections a `Database` keeps between statements instead of releasing them to the pool
(fewer when the pool is smaller)."""

KEPT_FOR = 60.0
"""Seconds a kept connection may go unused before it goes back to the pool (whose own
inactivity timer then closes it: an idle engine's connections still shrink)."""

TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    # Every host answered, none accepts writes yet (a failover under way): nothing was sent.
    asyncpg.TargetServerAttributeNotMatched,
)
"""Failures of the connection, not of the statement: worth trying again."""

RETRYABLE: tuple[type[BaseException], ...] = (
    *TRANSIENT,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
"""What the retry loop catches: TRANSIENT, and InterfaceError or InternalClientError when it
is one (`_transient`)."""

NOT_IDEMPOTENT = frozenset(
    {
        "instance_insert",
        "instance_insert_unkeyed",
        "instance_insert_many",
        "signal_deliver",
        "instance_cancel",
        "instance_retry",
        "instance_rewind",
        "instances_retry_many",
        "instances_cancel_many",
    }
)
# A spawn is retried through connection failures: its transaction either committed, and the
# repeat finds the claim gone (stale), or it did not, and the repeat is the first attempt.
"""Statements a repeat could apply twice: retried only when they were never sent."""

_log = logging.getLogger("gendurable.store")


def _transient(exc: BaseException) -> bool:
    """A connection failure, the error of closing a transaction on a connection that failed
    (asyncpg raises InterfaceError from the `async with` exit, the loss as context), or a
    connection that could not be used (`_stuck`)."""
    if isinstance(exc, TRANSIENT) or _stuck(exc):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and isinstance(exc.__context__, TRANSIENT)


def _stuck(exc: BaseException) -> bool:
    """asyncpg refused to send anything on the connection: its protocol is still inside an
    earlier exchange. So it is after a server sends an idle connection its last words (a
    FATAL error as it shuts down, crashes or is terminated) and before the connection's end
    reaches the client: the pool may hand it out in between."""
    return isinstance(exc, asyncpg.InternalClientError) and str(exc).startswith(
        "cannot switch to state"
    )


def _reusable(conn: Any) -> bool:
    """Whether a pool connection that ran a statement may run the next one as it is: still
    open, in no transaction. A connection that closed has been taken back by the pool
    already (asyncpg then refuses every call on it)."""
    try:
        return not conn.is_closed() and not conn.is_in_transaction()
    except asyncpg.InterfaceError:
        return False


def _encode_jsonb(value: bytes | str) -> bytes:
    return JSONB_VERSION + (value.encode() if isinstance(value, str) else value)


def _decode_jsonb(data: bytes) -> bytes:
    return data[1:]


async def init_connection(conn: asyncpg.Connection) -> None:
    """Make jsonb travel as raw JSON bytes (binary format, no str round trip)."""
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=_encode_jsonb,
        decoder=_decode_jsonb,
        format="binary",
    )


async def init_engine_connection(conn: asyncpg.Connection, plans: str) -> None:
    """`init_connection`, then `plans` (the statement `engine_plans`): the engine's own
    connections plan each prepared statement once, with index scans.

    Every statement the engine runs is a keyed lookup or an index range. By default
    PostgreSQL re-plans a prepared statement at each execution while it guesses a custom plan
    may be cheaper, which it does for the group commit's array parameters, and planning then
    costs more than running. A generic plan alone is made once, often while a new schema's
    tables are nearly empty, and with sequential scans in it each group commit would read the
    whole table as it grows: `enable_seqscan = off` keeps the index path, always at hand for
    these statements. Every locking statement is correct under both settings (the
    interleaving matrix, `tests/db/test_interleavings.py`); docs/performance.md ("Plans")
    has the measurements.
    """
    await init_connection(conn)
    await conn.execute(plans)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's reset query on release: a round trip per statement otherwise.

    Safe because no statement here leaves session state behind: no LISTEN (the listener has
    its own connection), no session advisory locks, no temporary tables, and the only
    settings (the engine's plan settings) are made when a connection opens, for every use.
    """


class Database:
    """One schema's statements, run on an asyncpg pool."""

    def __init__(
        self, pool: asyncpg.Pool, schema: str, *, timeout: float = 30.0, retry_for: float = 60.0
    ) -> None:
        self.pool = pool
        self.retry_for = retry_for
        self.outage = Outage(_log)
        """Reports, in a few lines, the outages every statement of this database retries
        through."""
        self.schema = schema
        self.timeout = timeout
        self.sql: dict[str, Statement] = statements(schema)
        """Every named statement, by name (tests may swap one for a variant)."""
        self.channel = channel(schema)
        """The schema's NOTIFY channel, for the listener."""
        # Connections kept out of the pool between statements (see `retrying`), with the
        # loop time each came back, most recently used last; at most `_keep`, so that one
        # of the pool's connections is never held idle here (`pool.acquire()` callers
        # still get theirs).
        self._idle: list[tuple[Any, float]] = []
        self._keep = min(IDLE_KEPT, pool.get_max_size() - 1)
        # Statements of this database waiting for one of the pool's connections: while any
        # waits, a connection coming back goes to the pool (to them), never to `_idle`,
        # where no waiter would see it.
        self._waiting = 0
        self.kept_for = KEPT_FOR

    @classmethod
    async def open(
        cls,
        dsn: str,
        schema: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        prepare: bool = True,
        timeout: float = 30.0,
        engine_plans: bool = False,
    ) -> Database:
        """Open a pool on `dsn` with `min_size` connections open (raises if it cannot);
        `prepare=False` disables the statement cache (poolers). `engine_plans` (with
        `prepare`) gives every connection the plan settings of `init_engine_connection`: for
        the engine's own pool, not for inspection tools whose queries may read whole tables.
        Behind a transaction pooler (`prepare=False`) they are never set: a setting would stay
        on a server connection other clients share.

        Connections closed later (an outage, idleness) are opened again when a statement
        needs one, never in the background: asyncpg's own refill (0.32+) would retry on its
        own while the server is down and log a traceback each time. With several hosts in
        `dsn`, each connection goes to the first usable one (see `Hosts`).
        """
        hosts = Hosts(dsn)
        pool = await asyncpg.create_pool(
            hosts.url,
            connect=hosts.connect,
            min_size=0,
            max_size=max_size,
            init=(
                functools.partial(
                    init_engine_connection, plans=statements(schema)["engine_plans"].sql
                )
                if prepare and engine_plans
                else init_connection
            ),
            statement_cache_size=100 if prepare else 0,
            command_timeout=timeout,
            timeout=timeout,
            reset=_keep_session,
        )
        try:
            async with contextlib.AsyncExitStack() as opened:
                for _ in range(min(min_size, max_size)):
                    await opened.enter_async_context(pool.acquire(timeout=timeout))
        except BaseException:
            pool.terminate()
            raise
        return cls(pool, schema, timeout=timeout)

    async def close(self, grace: float | None = None) -> None:
        """Close the pool; after `grace` seconds (an unreachable server), terminate it."""
        idle, self._idle = self._idle, []
        self._keep = 0
        try:
            async with asyncio.timeout(grace):
                for conn, _ in idle:
                    await self.pool.release(conn)
                await self.pool.close()
        except TimeoutError:
            self.pool.terminate()

    async def rows(self, row: type[R], name: str, /, **values: Any) -> list[R]:
        """Run statement `name`; each result row as a `row` (its fields, the columns)."""
        statement = self.sql[name]
        records = await self._run("fetch", statement, statement.bind(values))
        return [row(*record) for record in records]

    async def row(self, row: type[R], name: str, /, **values: Any) -> R | None:
        """Run statement `name`; its one result row as a `row`, or None when none came."""
        statement = self.sql[name]
        record = await self._run("fetchrow", statement, statement.bind(values))
        return None if record is None else row(*record)

    async def record(self, name: str, /, **values: Any) -> asyncpg.Record | None:
        """Run statement `name`; its one result row as asyncpg returns it (for a store
        method that builds a nested row), or None."""
        statement = self.sql[name]
        found: asyncpg.Record | None = await self._run(
            "fetchrow", statement, statement.bind(values)
        )
        return found

    async def column(self, name: str, /, **values: Any) -> list[Any]:
        """Run statement `name`; the first column of each result row."""
        statement = self.sql[name]
        records = await self._run("fetch", statement, statement.bind(values))
        return [record[0] for record in records]

    async def guarded(self, name: str, /, **values: Any) -> bool:
        """Run a guarded statement `name`: whether it returned a row (its guard held)."""
        statement = self.sql[name]
        return await self._run("fetchrow", statement, statement.bind(values)) is not None

    async def execute(self, name: str, /, **values: Any) -> str:
        """Run statement `name` for its effect; the command status (`UPDATE 3`)."""
        statement = self.sql[name]
        status: str = await self._run("execute", statement, statement.bind(values))
        return status

    async def _run(self, method: str, statement: Statement, args: tuple[Any, ...]) -> Any:
        """Run `statement` with `method` (fetch, fetchrow, execute).

        Statements whose repeat is harmless are retried through connection failures (a
        restarting server) for up to `retry_for`; the others only when the failure came
        before the statement was sent.
        """
        sql = statement.sql
        call_timeout = self.timeout

        async def once(conn: Any) -> Any:
            return await getattr(conn, method)(sql, *args, timeout=call_timeout)

        return await self.retrying(once, idempotent=statement.name not in NOT_IDEMPOTENT)

    async def retrying(self, action: Callable[[Any], Awaitable[Any]], *, idempotent: bool) -> Any:
        """Run `action(connection)` on a pooled connection, again through connection
        failures for up to `retry_for` (when not `idempotent`: only if nothing was sent)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_for
        delay = 0.05
        while True:
            sent = False
            try:
                conn = await self._take()
                sent = True
                try:
                    result = await action(conn)
                except BaseException as exc:
                    if isinstance(exc, asyncpg.InternalClientError):
                        sent = not _stuck(exc)  # asyncpg closed it, having sent nothing
                    # The pool cleans up what a failure may leave: a transaction, a
                    # cancelled query, a connection gone.
                    await self.pool.release(conn)
                    raise
                if not self._waiting and len(self._idle) < self._keep and _reusable(conn):
                    now = loop.time()
                    self._idle.append((conn, now))
                    if now - self._idle[0][1] > self.kept_for:  # the least recently used
                        await self.pool.release(self._idle.pop(0)[0])
                else:
                    await self.pool.release(conn)
            except RETRYABLE as exc:
                if not _transient(exc):
                    raise
                if (sent and not idempotent) or loop.time() + delay > deadline:
                    raise
                lost = exc if isinstance(exc, TRANSIENT) or _stuck(exc) else exc.__context__
                assert lost is not None
                self.outage.failed(lost, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            else:
                if self.outage.active:
                    self.outage.recovered()
                return result

    async def _take(self) -> Any:
        """A connection for one statement: the last one kept idle, else the pool's.

        Keeping a connection between statements, rather than releasing it to the pool each
        time, saves asyncpg's release (a task and a loop iteration per statement) and its
        acquire. A kept connection that closed meanwhile (an outage) goes back to the pool,
        which drops it, as the pool's own acquire would.
        """
        while self._idle:
            conn, _ = self._idle.pop()
            if _reusable(conn):
                return conn
            await self.pool.release(conn)
        self._waiting += 1
        try:
            return await self.pool.acquire(timeout=self.timeout)
        finally:
            self._waiting -= 1
