"""Shared test configuration: the kinds of tests as markers, step recordings emptied before
each test, and the `db` fixture (a plain connection for SQL checks).

The tree under tests/ mirrors src/gendurable/ (a test of `gendurable/engine/x.py` is in
tests/engine/); what kind of test it is (`unit`, `database`, `crash`, `race`, `property`,
`slow`, registered in pyproject.toml) is a marker, so `pytest -m unit` runs every test that
needs no database, wherever it is. `unit`, `database` and `property` are set here, from what
a test uses; `crash`, `race` and `slow` are set by the modules themselves (`pytestmark`),
and `database` too where a test starts a server of its own.

The gendurable fixtures (`gendurable_dsn`, `manual_clock`, `no_task_leaks`, `make_engine`)
come from the `gendurable.testing` plugin, which pytest loads through its `pytest11` entry
point; naming it in `pytest_plugins` as well would register it twice. `gendurable_schema` is
overridden here: a migrated schema reused from test to test (schemas.py), unless the test is
marked `fresh_schema` or the run is given `--fresh-schemas`.
"""

import secrets
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from recordings import reset_recordings
from schemas import SchemaPool

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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fresh-schemas",
        action="store_true",
        help="give every test a schema of its own, created by the test and dropped after it "
        "(instead of a migrated one reused from test to test)",
    )


@pytest.fixture(scope="session")
def schema_pool(gendurable_dsn: str) -> Iterator[SchemaPool]:
    """Migrated schemas, emptied between the tests that use them (see schemas.py)."""
    pool = SchemaPool(gendurable_dsn)
    yield pool
    pool.close()


@pytest.fixture
def gendurable_schema(request: pytest.FixtureRequest, schema_pool: SchemaPool) -> Iterator[str]:
    """The test's schema: a migrated one with empty tables, that the test has to itself.

    It overrides the plugin's fixture (a name nobody used, nothing created, dropped after the
    test), which a test marked `fresh_schema` gets, as every test does under
    `--fresh-schemas`: tests of migrations, deploys and query plans.
    """
    pool = schema_pool
    if request.config.getoption("--fresh-schemas") or request.node.get_closest_marker(
        "fresh_schema"
    ):
        schema = f"t_{secrets.token_hex(6)}"
        yield schema
        pool.drop(schema)
        return
    schema = pool.take()
    yield schema
    pool.give_back(schema)


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
