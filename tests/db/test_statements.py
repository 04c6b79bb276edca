"""Every named statement parses and plans against the migrated schema (PREPARE)."""

from __future__ import annotations

import re

import asyncpg
import pytest

from gendurable.db.migrator import migrate
from gendurable.db.store import init_connection
from gendurable.sql import statements

# Multi-statement scripts run through the simple protocol and cannot be prepared.
SCRIPTS = {"schema_drop"}
NAMES = sorted(set(statements("gendurable")) - SCRIPTS)


def test_statements_are_found() -> None:
    # The engine's data path depends on these; a rename must be deliberate.
    for name in (
        "instance_claim",
        "outcome_batch",
        "outcome_park",
        "park_recheck",
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
        sql = statements(gendurable_schema)[name]
        prepared = await conn.prepare(sql)
        placeholders = {int(n) for n in re.findall(r"\$(\d+)", sql)}
        assert len(prepared.get_parameters()) == max(placeholders, default=0)
    finally:
        await conn.close()
