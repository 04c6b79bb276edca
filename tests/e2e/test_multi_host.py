"""Several hosts in one DSN: a host that hangs is skipped in time, and while no host accepts
writes the pool and the listener wait it out instead of giving up.

- A first host that accepts connections and never answers (a stuck server; a dead machine
  whose packets are dropped behaves the same) gets only its share of the connect timeout,
  and once a connection was made elsewhere, later connections try that host first.
- A DSN whose every host answers but none accepts writes (`target_session_attrs=read-write`
  during a failover, or an endpoint that still resolves to the old primary, now a replica)
  makes asyncpg raise `TargetServerAttributeNotMatched`: a start waits through it, and the
  listener keeps trying until a host is writable again.

The server is the session's; "not writable" is a role whose sessions default to read-only,
which asyncpg's read-write check sees as a standby would be seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
import pytest
from e2e_support import eventually

import gendurable as gd
from gendurable.db.connect import asyncpg_dsn, hosts_of
from gendurable.db.listener import Listener
from gendurable.db.pool import Database
from polling import unique_name

pytestmark = pytest.mark.crash

QUEUE = "multi-host"


@gd.workflow(name="e2e.multi_host.echo", queue=QUEUE)
class Echo:
    @gd.step(start=True)
    async def echo(self, state: int, ctx: gd.Context) -> gd.Outcome:
        return gd.done(state)


@dataclass
class HungServer:
    """Accepts TCP connections on 127.0.0.1 and never says a word."""

    port: int = 0
    accepted: int = 0
    _open: list[asyncio.StreamWriter] = field(default_factory=list)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._open.append(writer)
        with contextlib.suppress(OSError):
            await reader.read()  # until the client gives up and closes


@contextlib.asynccontextmanager
async def hung_server() -> AsyncIterator[HungServer]:
    hung = HungServer()
    server = await asyncio.start_server(hung._handle, "127.0.0.1", 0)
    hung.port = server.sockets[0].getsockname()[1]
    try:
        yield hung
    finally:
        for writer in hung._open:
            writer.close()
        server.close()
        await server.wait_closed()


def with_hosts(dsn: str, before: list[tuple[str, int]], **extra: str) -> str:
    """`dsn` (any form) as a key=value string whose hosts are `before`, then its own."""
    url = asyncpg_dsn(dsn)
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    hosts = before + hosts_of(url)
    pairs = {
        "host": ",".join(h for h, _ in hosts),
        "port": ",".join(str(p) for _, p in hosts),
        "user": unquote(parts.username or "") or query.get("user", ""),
        "password": unquote(parts.password or "") or query.get("password", ""),
        "dbname": unquote(parts.path.strip("/")) or query.get("dbname", ""),
        **extra,
    }
    quoted = {k: v.replace("\\", "\\\\").replace("'", "\\'") for k, v in pairs.items() if v}
    return " ".join(f"{k}='{v}'" for k, v in quoted.items())


@pytest.mark.slow
async def test_multi_host_a_first_host_that_never_answers_is_skipped_and_then_tried_last(
    gendurable_dsn: str,
) -> None:
    async with hung_server() as hung:
        dsn = with_hosts(gendurable_dsn, [("127.0.0.1", hung.port)])
        db = await Database.open(dsn, "public", min_size=3, max_size=3, timeout=6)
        try:
            # Three connections, made one after the other: only the first waited on the
            # hung host (for half the timeout), the others went to the host that answered.
            assert db.pool.get_size() == 3
            assert hung.accepted == 1
            async with db.pool.acquire() as conn:
                assert await conn.fetchval("SELECT 1") == 1
        finally:
            await db.close()
        listener = Listener(dsn, "gendurable_multi_host", timeout=6)
        await listener.start()
        await listener.stop()
    assert hung.accepted == 2  # the listener learnt on its own


@pytest.mark.slow
async def test_multi_host_an_engine_runs_with_a_hung_first_host(
    gendurable_dsn: str, gendurable_schema: str
) -> None:
    async with hung_server() as hung:
        engine = gd.Engine(
            with_hosts(gendurable_dsn, [("127.0.0.1", hung.port)]),
            workflows=[Echo],
            queues={QUEUE: 4},
            schema=gendurable_schema,
            name=unique_name("multi-host"),
            statement_timeout=timedelta(seconds=6),
        )
        async with engine:
            handles = await Echo.start_many([Echo.new(state=i) for i in range(8)], engine=engine)
            results = [await Echo.result(h.id, timeout=30, engine=engine) for h in handles]
    assert results == list(range(8))


@pytest.fixture
async def read_only_role(gendurable_dsn: str) -> AsyncIterator[str]:
    """A login role that may create schemas; `ALTER ROLE ... SET default_transaction_read_only`
    makes its new sessions look like a standby's."""
    role = f"mh_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(asyncpg_dsn(gendurable_dsn))
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN")
        database = await admin.fetchval("SELECT current_database()")
        await admin.execute(f'GRANT CREATE ON DATABASE "{database}" TO {role}')
        yield role
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )
        await admin.execute(f"DROP OWNED BY {role} CASCADE")
        await admin.execute(f"DROP ROLE {role}")
    finally:
        await admin.close()


@pytest.mark.fresh_schema
async def test_multi_host_while_no_host_accepts_writes_a_start_waits_and_the_listener_retries(
    gendurable_dsn: str, gendurable_schema: str, read_only_role: str
) -> None:
    role = read_only_role
    admin = await asyncpg.connect(asyncpg_dsn(gendurable_dsn))
    # Client-only: no scheduler, poller or reaper shares the pool with the start below.
    engine = gd.Engine(
        with_hosts(gendurable_dsn, [], user=role, target_session_attrs="read-write"),
        workflows=[Echo],
        schema=gendurable_schema,
        name=unique_name("multi-host"),
        statement_timeout=timedelta(seconds=5),
    )
    await engine.start()
    store, listener = engine._store, engine._listener
    assert store is not None
    assert listener is not None

    async def listening() -> int:
        return int(
            await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 "
                "AND query LIKE 'LISTEN %'",
                role,
            )
        )

    try:
        assert await listening() == 1
        await admin.execute(f"ALTER ROLE {role} SET default_transaction_read_only = on")
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )

        async def listener_refused() -> bool:
            return listener.outage.failures >= 2

        # Its reconnects are refused (the host is not writable): it goes on trying.
        await eventually(listener_refused, timeout=30, what="the listener refused twice")
        starting = asyncio.create_task(Echo.start("k", 7, engine=engine))

        async def start_refused_or_done() -> bool:
            return starting.done() or store.db.outage.failures >= 2

        await eventually(start_refused_or_done, timeout=30, what="the start refused twice")
        if starting.done():
            pytest.fail(f"the start ended while no host was writable: {starting.exception()!r}")
        await admin.execute(f"ALTER ROLE {role} RESET default_transaction_read_only")

        handle = await asyncio.wait_for(starting, timeout=60)
        status = await admin.fetchval(
            f'SELECT status::text FROM "{gendurable_schema}".instances WHERE id = $1', handle.id
        )
        assert status == "available"
        assert await eventually(listening, timeout=30, what="the listener back") == 1
    finally:
        await engine.stop(timeout=5)
        await admin.close()
