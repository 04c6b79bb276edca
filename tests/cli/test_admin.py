"""`gendurable migrate`, `dev` and `worker`, and how every command reports failures.

A failure the user can fix (an unreachable server, a refused password, a schema never
migrated) is one line on stderr and exit 1; wrong arguments print the usage and exit 2;
no output ever holds the DSN's password.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import psutil
import pytest
from cli_app import Expense
from cli_support import HERE, Cli, cli_env, run_cli

from gendurable.cli import main
from gendurable.cli.runner import READY
from gendurable.embedded import EmbeddedPostgres, sweep
from gendurable.sql import migrations
from gendurable.testing import MakeEngine

pytestmark = pytest.mark.fresh_schema

LATEST = max(m.version for m in migrations("gendurable"))


async def _meta_version(dsn: str, schema: str) -> int | None:
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f'"{schema}".meta'):
            return None
        return int(await conn.fetchval(f'SELECT version FROM "{schema}".meta'))
    finally:
        await conn.close()


async def test_cli_migrate_creates_the_schema(
    gendurable_dsn: str, gendurable_schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["migrate", "--dsn", gendurable_dsn, "--schema", gendurable_schema]

    # main() runs its own event loop, so it runs in a thread here.
    assert await asyncio.to_thread(main, argv) == 0

    assert await _meta_version(gendurable_dsn, gendurable_schema) == LATEST
    assert f"is at version {LATEST}" in capsys.readouterr().out


async def test_cli_migrate_reads_the_dsn_from_the_environment(
    gendurable_dsn: str, gendurable_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENDURABLE_DSN", gendurable_dsn)

    assert await asyncio.to_thread(main, ["migrate", "--schema", gendurable_schema]) == 0

    assert await _meta_version(gendurable_dsn, gendurable_schema) == LATEST


@pytest.mark.parametrize(
    ("schema", "message"),
    [('bad"name', "contains '\"'"), ("pg_x", "reserved"), ("x" * 64, "64 bytes")],
)
def test_cli_migrate_bad_schema_exits_2_with_the_reason(
    gendurable_dsn: str, schema: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--dsn", gendurable_dsn, "--schema", schema]) == 2

    *usage, error = capsys.readouterr().err.splitlines()
    assert usage[0].startswith("usage: gendurable migrate")
    assert error.startswith("gendurable migrate: error: ")
    assert message in error


def test_cli_migrate_without_a_database_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GENDURABLE_DSN", raising=False)

    assert main(["migrate", "--schema", "app"]) == 2
    assert "pass --dsn or set GENDURABLE_DSN" in capsys.readouterr().err


def test_cli_migrate_bad_dsn_scheme_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--dsn", "mysql://u@localhost/db"]) == 2
    assert "'mysql' is not PostgreSQL" in capsys.readouterr().err


def test_cli_without_a_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


@pytest.mark.database
def test_cli_dev_serves_a_migrated_schema_until_interrupted() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GENDURABLE_DSN"}
    with subprocess.Popen(
        [sys.executable, "-m", "gendurable.cli", "dev", "--schema", "dev_app"],  # the package
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as dev:
        assert dev.stdout is not None
        first = dev.stdout.readline().strip()
        assert first.startswith("GENDURABLE_DSN="), first + (
            dev.stderr.read() if dev.stderr else ""
        )
        dsn = first.removeprefix("GENDURABLE_DSN=")
        data_dir = Path(parse_qs(urlsplit(dsn).query)["host"][0])
        assert "Ctrl-C" in dev.stdout.readline()

        assert asyncio.run(_meta_version(dsn, "dev_app")) == LATEST

        dev.send_signal(signal.SIGINT)
        out, _ = dev.communicate(timeout=60)

    assert dev.returncode == 0
    assert "stopped" in out
    assert not data_dir.exists()
    running = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if str(data_dir) in (p.info["cmdline"] or [])
    ]
    assert running == []


# -- subprocesses: the console entry point, exit codes and one-line errors -------------------

SECRET = "s3cret-Pa55word"
UNREACHABLE = f"postgresql://alice:{SECRET}@127.0.0.1:1/app"


async def test_cli_migrate_as_a_subprocess_creates_the_schema(
    cli: Cli, gendurable_dsn: str, gendurable_schema: str
) -> None:
    run = await cli("migrate")

    assert run.code == 0, run.err
    assert f"schema {gendurable_schema!r} is at version {LATEST}" in run.out
    assert await _meta_version(gendurable_dsn, gendurable_schema) == LATEST


@pytest.mark.parametrize("command", ["migrate", "status", "ls", "show 1", "cancel k"])
async def test_cli_unreachable_server_is_one_line_and_exit_1_without_the_password(
    cli: Cli, command: str
) -> None:
    run = await cli(*command.split(), "--dsn", UNREACHABLE)

    assert run.code == 1
    assert run.error == (
        f"gendurable {command.split()[0]}: error: cannot reach database 'app' on "
        "127.0.0.1:1 as alice: connection refused (is the server running?)"
    )
    assert SECRET not in run.out + run.err


async def test_cli_dsn_from_the_environment_is_never_printed_either(cli: Cli) -> None:
    run = await cli("status", dsn=UNREACHABLE)

    assert run.code == 1
    assert "cannot reach database 'app'" in run.error
    assert SECRET not in run.out + run.err


async def test_cli_worker_that_cannot_connect_is_one_line_and_exit_1(cli: Cli) -> None:
    # cli_app's engine points at a server nobody runs (with a password in its DSN).
    run = await cli("worker", "cli_app:unreachable")

    assert run.code == 1
    assert "gendurable worker: error: cannot reach database 'app' on 127.0.0.1:1" in run.error
    assert SECRET not in run.out + run.err


async def test_cli_worker_with_a_bad_target_prints_usage_and_exits_2(cli: Cli) -> None:
    run = await cli("worker", "cli_app:nothing_here")

    assert run.code == 2
    assert run.err.startswith("usage: gendurable worker")
    assert run.err.splitlines()[-1] == (
        "gendurable worker: error: 'cli_app' has no attribute 'nothing_here'"
    )


async def test_cli_missing_schema_is_one_line_and_exit_1(cli: Cli) -> None:
    run = await cli("status", "--schema", "never_migrated")

    assert run.code == 1
    assert run.error.startswith("gendurable status: error: schema 'never_migrated' does not exist")
    assert "gendurable migrate --schema never_migrated" in run.error


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["ls", "--limit", "0"], "argument --limit: 0 is not a positive number"),
        (["ls", "--status", "sleeping"], "argument --status: invalid choice: 'sleeping'"),
        (["signal", "k"], "the following arguments are required: NAME"),
        (["start"], "the following arguments are required: WORKFLOW"),
        (["signal", "k", "go", "{oops", "--workflow", "w"], "PAYLOAD_JSON is not valid JSON"),
        (["show"], "the following arguments are required: KEY_OR_ID"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
async def test_cli_wrong_arguments_print_usage_and_exit_2(
    cli: Cli, args: list[str], complaint: str
) -> None:
    run = await cli(*args)

    assert run.code == 2
    assert run.err.startswith("usage: gendurable")
    assert complaint in run.err.splitlines()[-1]


@pytest.fixture
def password_server() -> Iterator[str]:
    """A private server where role `alice` must log in with password `right-password`.

    The session server trusts every local login; this one checks alice's password.
    """
    base = Path(tempfile.mkdtemp(prefix="gendurable-pw-")) / "embedded"
    server = EmbeddedPostgres(base)
    dsn = server.start()
    try:
        hba = Path(asyncio.run(_sql(dsn, "CREATE ROLE alice LOGIN PASSWORD 'right-password'",
                                    "SHOW hba_file")))  # fmt: skip
        hba.write_text("local all alice scram-sha-256\n" + hba.read_text())
        asyncio.run(_sql(dsn, "SELECT pg_reload_conf()"))
        yield dsn
    finally:
        server.stop()
        sweep(base)
        shutil.rmtree(base.parent, ignore_errors=True)


async def _sql(dsn: str, *statements: str) -> object:
    """Run statements on `dsn`; the value of the last."""
    conn = await asyncpg.connect(dsn)
    try:
        value = None
        for statement in statements:
            value = await conn.fetchval(statement)
        return value
    finally:
        await conn.close()


@pytest.mark.database
async def test_cli_wrong_password_is_one_line_and_exit_1_without_the_password(
    password_server: str,
) -> None:
    socket_dir = parse_qs(urlsplit(password_server).query)["host"][0]
    wrong = f"postgresql://alice:{SECRET}@/postgres?host={socket_dir}"

    run = await run_cli("status", "--dsn", wrong, env=cli_env(None))

    assert run.code == 1
    assert run.error == (
        f"gendurable status: error: authentication failed for database 'postgres' on "
        f'{socket_dir} as alice: password authentication failed for user "alice"'
    )
    assert SECRET not in run.out + run.err
    # The right password gets through to the next check: this server has no schema.
    right = wrong.replace(SECRET, "right-password")
    run = await run_cli("status", "--dsn", right, env=cli_env(None))
    assert run.code == 1
    assert "schema 'gendurable' does not exist" in run.error


async def test_cli_is_the_console_script_too(gendurable_dsn: str, gendurable_schema: str) -> None:
    # The `gendurable` executable installed beside this Python (pyproject [project.scripts]).
    script = Path(sys.executable).with_name("gendurable")
    proc = await asyncio.create_subprocess_exec(
        str(script),
        "migrate",
        "--schema",
        gendurable_schema,
        env=cli_env(gendurable_dsn),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert f"is at version {LATEST}" in out.decode()


async def test_cli_status_of_a_schema_an_engine_migrated_and_left_empty(
    cli: Cli, make_engine: MakeEngine
) -> None:
    engine = await make_engine(workflows=[Expense], queues=None)
    await engine.stop()

    run = await cli("status", "--json")

    assert run.json() == []


def test_cli_help_lists_the_commands_by_group(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])

    assert exit_info.value.code == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()
              if line.startswith("    ") and not line.startswith("     ")]  # fmt: skip
    assert listed == [
        "migrate", "dev", "worker", "status", "ls", "show", "start", "signal", "cancel",
        "retry", "pause", "resume", "schedules", "docs", "check", "web",
    ]  # fmt: skip


def test_cli_help_gives_each_command_its_whole_first_paragraph(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])

    text = " ".join(capsys.readouterr().out.split())
    assert "or every one that matches." in text  # cancel's summary, wrapped in its docstring


async def test_cli_worker_runs_shows_up_in_status_and_leaves_at_stop(
    cli: Cli, gendurable_dsn: str, gendurable_schema: str
) -> None:
    env = {**cli_env(gendurable_dsn), "CLI_SCHEMA": gendurable_schema}
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gendurable", "worker", "cli_app:served",
        cwd=HERE, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert worker.stdout is not None
        async with asyncio.timeout(60):
            ready = await worker.stdout.readline()
        assert ready.decode().strip() == READY

        nodes = (await cli("status", "--nodes", "--json")).json()

        assert [(n["name"], n["pid"], n["queues"]) for n in nodes] == [
            ("cli-worker", worker.pid, {"expenses": 2, "default": 1})
        ]
        worker.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            out, err = await worker.communicate()
        assert "gendurable worker stopped" in out.decode()
        assert worker.returncode == 0, err.decode()
        assert (await cli("status", "--nodes", "--json")).json() == []
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
