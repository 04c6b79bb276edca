"""A key=value DSN works wherever a URL does: the engine, `migrate`, the command line.

The server here checks a password (the session's trusts every local login), and the
password holds what a URL or a key=value string must escape: a quote, a backslash, spaces,
'@', ':', '/', '&', '+' and '%'. The host is the server's unix-socket directory.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
from cli_support import cli_env, run_cli

import gendurable as gd
from gendurable.embedded import EmbeddedPostgres, sweep

pytestmark = pytest.mark.database

ROLE = "dsn_carol"
SECRET = "it's a p@ss:w/rd\\ &x=1+%"
QUOTED = "'it\\'s a p@ss:w/rd\\\\ &x=1+%'"  # SECRET as libpq quotes it


@gd.workflow(name="dsn.hello", queue="dsn")
class Hello:
    @gd.step(start=True)
    async def greet(self, state: str, ctx: gd.Context) -> gd.Outcome:
        return gd.done(f"hello {state}")


@pytest.fixture(scope="module")
def socket_dir() -> Iterator[str]:
    """A private server where `dsn_carol` must log in with SECRET; its socket directory."""
    base = Path(tempfile.mkdtemp(prefix="gendurable-dsn-")) / "embedded"
    server = EmbeddedPostgres(base)
    dsn = server.start()
    try:

        async def sql(*statements: str) -> object:
            conn = await asyncpg.connect(dsn)
            try:
                return [await conn.fetchval(statement) for statement in statements][-1]
            finally:
                await conn.close()

        quoted = SECRET.replace("'", "''")
        hba = Path(
            str(
                asyncio.run(
                    sql(
                        f"CREATE ROLE {ROLE} LOGIN PASSWORD '{quoted}'",
                        f"GRANT CREATE ON DATABASE postgres TO {ROLE}",
                        "SHOW hba_file",
                    )
                )
            )
        )
        hba.write_text(f"local all {ROLE} scram-sha-256\n" + hba.read_text())
        asyncio.run(sql("SELECT pg_reload_conf()"))
        yield parse_qs(urlsplit(dsn).query)["host"][0]
    finally:
        server.stop()
        sweep(base)
        shutil.rmtree(base.parent, ignore_errors=True)


def kv(socket_dir: str, password: str = QUOTED) -> str:
    return f"host={socket_dir} user = {ROLE} dbname='postgres' password={password}"


@pytest.fixture
async def hello_engine(socket_dir: str) -> AsyncIterator[gd.Engine]:
    engine = gd.Engine(kv(socket_dir), workflows=[Hello], queues={"dsn": 1}, schema="dsn_kv")
    async with engine:
        yield engine


async def test_dsn_key_value_runs_an_engine_and_its_listener(hello_engine: gd.Engine) -> None:
    handle = await Hello.start(state="ann", engine=hello_engine)

    assert await Hello.result(handle.id, timeout=20, engine=hello_engine) == "hello ann"


async def test_dsn_key_value_migrates(socket_dir: str) -> None:
    assert await gd.migrate(kv(socket_dir), schema="dsn_migrated") >= 1


async def test_dsn_key_value_on_the_command_line(socket_dir: str) -> None:
    run = await run_cli(
        "migrate", "--dsn", kv(socket_dir), "--schema", "dsn_cli", env=cli_env(None)
    )
    assert run.code == 0, run.err
    run = await run_cli("status", "--schema", "dsn_cli", env=cli_env(kv(socket_dir)))
    assert run.code == 0, run.err


async def test_dsn_key_value_wrong_password_is_one_line_without_it(socket_dir: str) -> None:
    wrong = kv(socket_dir, password="'not it'")

    run = await run_cli("status", "--dsn", wrong, env=cli_env(None))

    assert run.code == 1
    assert run.error == (
        f"gendurable status: error: authentication failed for database 'postgres' on "
        f'{socket_dir} as {ROLE}: password authentication failed for user "{ROLE}"'
    )
    assert "not it" not in run.out + run.err


async def test_dsn_key_value_malformed_is_a_usage_error_without_the_password(
    socket_dir: str,
) -> None:
    unclosed = kv(socket_dir, password=QUOTED[:-1])

    run = await run_cli("status", "--dsn", unclosed, env=cli_env(None))

    assert run.code == 2
    assert run.err.splitlines()[-1] == (
        "gendurable status: error: invalid dsn: the quoted value of 'password' has no closing quote"
    )
    assert "p@ss" not in run.out + run.err
    with pytest.raises(gd.ConfigError, match="no closing quote"):
        gd.Engine(unclosed, workflows=[Hello])
