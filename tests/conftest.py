"""Shared test configuration and the `db` fixture (a plain connection for SQL checks).

The gendurable fixtures (`gendurable_dsn`, `gendurable_schema`, `manual_clock`,
`no_task_leaks`, `make_engine`) come from the `gendurable.testing` plugin, which pytest
loads through its `pytest11` entry point; naming it in `pytest_plugins` as well would
register it twice.
"""

from collections.abc import AsyncIterator

import asyncpg
import pytest

# pytester runs small inner test sessions, to test the plugin's own fixtures.
pytest_plugins = ["pytester"]


@pytest.fixture
async def db(gendurable_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection, to check rows with SQL (`"<schema>".instances`, `.signals`)."""
    conn = await asyncpg.connect(gendurable_dsn)
    yield conn
    await conn.close()
