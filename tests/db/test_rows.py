"""Every typed row has its statement's result columns as fields, in order.

The stores build rows positionally (`Row(*record)`): a column added, dropped or moved in a
statement without its row would shift values silently. The pairs are read from the stores'
sources (every `db.rows(Row, "statement", ...)` and `db.row(...)`), so a new method is
checked without being listed here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import asyncpg
import pytest

from gendurable.db import rows
from gendurable.db.migrator import migrate
from gendurable.db.pool import init_connection
from gendurable.sql import statements

DB = Path(rows.__file__).parent
STORES = (
    "engine_store.py",
    "maintenance_store.py",
    "operator_store.py",
    "queue_store.py",
    "repair_store.py",
    "schedule_store.py",
)


def pairs() -> list[tuple[str, str]]:
    """(row type, statement) of every `db.rows(...)` and `db.row(...)` call of the stores."""
    found = set()
    for store in STORES:
        for node in ast.walk(ast.parse((DB / store).read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("rows", "row")
                and len(node.args) >= 2
                and isinstance(node.args[0], ast.Name)
                and isinstance(node.args[1], ast.Constant)
            ):
                found.add((node.args[0].id, node.args[1].value))
    return sorted(found)


PAIRS = pairs()


def test_the_stores_build_their_rows_through_the_database() -> None:
    # The scan must find the calls it checks: a refactoring that hides them would leave the
    # test below with nothing to check.
    assert len(PAIRS) >= 30


@pytest.fixture
async def conn(gendurable_dsn: str, gendurable_schema: str) -> asyncpg.Connection:
    await migrate(gendurable_dsn, schema=gendurable_schema)
    connection = await asyncpg.connect(gendurable_dsn)
    await init_connection(connection)
    yield connection
    await connection.close()


async def columns(conn: asyncpg.Connection, schema: str, name: str) -> list[str]:
    prepared = await conn.prepare(statements(schema)[name].sql)
    return [attribute.name for attribute in prepared.get_attributes()]


async def test_every_row_type_matches_its_statements_columns(
    conn: asyncpg.Connection, gendurable_schema: str
) -> None:
    mismatched = {}
    for row, name in PAIRS:
        fields = list(getattr(rows, row).__struct_fields__)
        found = await columns(conn, gendurable_schema, name)
        if found != fields:
            mismatched[f"{row} <- {name}"] = (found, fields)

    assert mismatched == {}


async def test_a_delivery_is_its_columns_then_the_woken_instances(
    conn: asyncpg.Connection, gendurable_schema: str
) -> None:
    head = [f for f in rows.Delivery.__struct_fields__ if f != "woken"]
    woken = list(rows.WokenInstance.__struct_fields__)

    assert rows.Delivery.__struct_fields__[-1] == "woken"
    assert await columns(conn, gendurable_schema, "signal_deliver") == head + woken


async def test_rows_built_in_a_transaction_match_their_statements(
    conn: asyncpg.Connection, gendurable_schema: str
) -> None:
    # The spawn and the schedules' tick run statements on their transaction's connection,
    # not through `db.rows`.
    for name, row in (
        ("instance_insert_many", rows.CreatedInstance),
        ("instances_holding_keys", rows.KeyHolder),
        ("schedule_claim_due", rows.DueSchedule),
    ):
        assert await columns(conn, gendurable_schema, name) == list(row.__struct_fields__), name


def test_every_row_type_is_checked() -> None:
    types = {
        name
        for name, value in vars(rows).items()
        if isinstance(value, type) and issubclass(value, rows.Row) and value is not rows.Row
    }

    assert sorted(types - {row for row, _ in PAIRS}) == ["Delivery", "DueSchedule", "WokenInstance"]
