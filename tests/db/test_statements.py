"""Every named statement parses and plans against the migrated schema (PREPARE), with the
parameters its names say."""

from __future__ import annotations

import re

import asyncpg
import pytest

from gendurable.db.migrator import migrate
from gendurable.db.pool import init_connection
from gendurable.sql import statements

# Multi-statement scripts run through the simple protocol and cannot be prepared.
SCRIPTS = {"schema_drop"}
NAMES = sorted(set(statements("gendurable")) - SCRIPTS)


def test_statements_are_found() -> None:
    # The engine's data path depends on these; a rename must be deliberate.
    for name in (
        "instance_claim",
        "outcome_batch",
        "signal_deliver",
        "lease_rescue",
        "await_expire",
        "claims_reclaim",
        "rate_config_write",
        "rate_config_refresh",
        "terminal_sweep",
        "bucket_sweep",
        "rate_config_sweep",
        "instance_explain",
        "instance_retry",
        "node_register",
        "node_beat",
        "node_prune",
        "nodes_live",
        "instances_list",
        "instance_insert",
        "instance_insert_many",
        "outcome_spawn",
        "check_state_versions",
        "check_states_oldest",
        "check_states_page",
    ):
        assert name in NAMES


@pytest.mark.parametrize("name", NAMES)
async def test_statement_prepares_against_the_schema(
    name: str, gendurable_dsn: str, gendurable_schema: str
) -> None:
    await migrate(gendurable_dsn, schema=gendurable_schema)
    conn = await asyncpg.connect(gendurable_dsn)
    try:
        await init_connection(conn)
        statement = statements(gendurable_schema)[name]
        prepared = await conn.prepare(statement.sql)
        assert len(prepared.get_parameters()) == len(statement.params)
    finally:
        await conn.close()


@pytest.mark.parametrize("name", NAMES)
def test_statement_tokens_are_all_substituted(name: str) -> None:
    # A misspelt token (`__chanel__`) would reach PostgreSQL as an identifier.
    statement = statements("gendurable")[name]
    # `__index__` is the migrator's, filled in with the name of the index it drops.
    assert re.findall(r"__[a-z_]+__", statement.sql.replace("__index__", "")) == []
    assert re.findall(r"(?<![\w:]):[a-z_]+", _code(statement.sql)) == []


def test_statement_args_must_name_every_parameter_and_no_other() -> None:
    statement = statements("gendurable")["instance_explain"]

    assert statement.params == ("now", "id")
    assert statement.args(id=7, now=None) == (None, 7)
    with pytest.raises(TypeError, match="missing id"):
        statement.args(now=None)
    with pytest.raises(TypeError, match="unknown nope"):
        statement.args(id=7, now=None, nope=1)


def _code(sql: str) -> str:
    """`sql` without its comments and string literals."""
    return re.sub(r"--[^\n]*|'(?:[^']|'')*'", "", sql)
