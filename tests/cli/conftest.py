"""Fixtures for the command-line tests.

- `cli(*args)`: run `python -m gendurable *args` against the test's database and schema
  (`GENDURABLE_DSN` set, `--schema` added unless given), returns a `Run`.
- `gendurable_clock`: the system clock. The CLI reads the database's time, so the engines
  of these tests write theirs (a manual clock's 2030 would make every row "scheduled").
"""

from __future__ import annotations

import pytest
from cli_support import Cli, Run, cli_env, run_cli


@pytest.fixture
def gendurable_clock() -> None:
    """The system clock for `make_engine`: the CLI sees the database's time."""
    return None


@pytest.fixture
def cli(gendurable_dsn: str, gendurable_schema: str) -> Cli:
    """Run the CLI on the test's database and schema."""

    async def run(*args: str, dsn: str | None = gendurable_dsn) -> Run:
        own_schema = not args or args[0] in ("dev", "worker") or "--schema" in args
        extra = [] if own_schema else ["--schema", gendurable_schema]
        return await run_cli(*args, *extra, env=cli_env(dsn))

    return run
