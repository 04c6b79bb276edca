"""The `gendurable` command line, against the test database."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import psutil
import pytest

from gendurable.cli import main
from gendurable.sql import migrations

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

    err = capsys.readouterr().err
    assert err.startswith("gendurable migrate: error: ")
    assert message in err


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


def test_cli_dev_serves_a_migrated_schema_until_interrupted() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GENDURABLE_DSN"}
    with subprocess.Popen(
        [sys.executable, "-m", "gendurable.cli", "dev", "--schema", "dev_app"],
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
