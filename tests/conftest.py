"""Shared test configuration: the kinds of tests as markers, step recordings emptied before
each test, and the `db` fixture (a plain connection for SQL checks).

The tree under tests/ mirrors src/gendurable/ (a test of `gendurable/engine/x.py` is in
tests/engine/); what kind of test it is (`unit`, `database`, `crash`, `race`, `property`,
`slow`, registered in pyproject.toml) is a marker, so `pytest -m unit` runs every test that
needs no database, wherever it is. `unit`, `database` and `property` are set here, from what
a test uses; `crash`, `race` and `slow` are set by the modules themselves (`pytestmark`),
and `database` too where a test starts a server of its own.

The gendurable fixtures (`gendurable_dsn`, `gendurable_schema`, `manual_clock`,
`no_task_leaks`, `make_engine`) come from the `gendurable.testing` plugin, which pytest
loads through its `pytest11` entry point; naming it in `pytest_plugins` as well would
register it twice.
"""

from collections.abc import AsyncIterator

import asyncpg
import pytest

from recordings import reset_recordings

# pytester runs small inner test sessions, to test the plugin's own fixtures.
pytest_plugins = ["pytester"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test `database` (it uses the session's server) or else `unit`, and
    `property` when hypothesis runs it."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "gendurable_dsn" in fixtures and item.get_closest_marker("database") is None:
            item.add_marker(pytest.mark.database)
        if item.get_closest_marker("database") is None:
            item.add_marker(pytest.mark.unit)
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.property)


@pytest.fixture(autouse=True)
def recordings() -> None:
    """Empties what steps recorded in earlier tests (see recordings.py)."""
    reset_recordings()


@pytest.fixture
async def db(gendurable_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection, to check rows with SQL (`"<schema>".instances`, `.signals`)."""
    conn = await asyncpg.connect(gendurable_dsn)
    yield conn
    await conn.close()
