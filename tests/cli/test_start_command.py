"""`gendurable start` and `gendurable --version`, run as subprocesses against the test database.

Without `--app` the row is built from what the live nodes record, so the first test holds it
to the row the code itself builds.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
import pytest
from cli_app import Expense, Metered, Regional
from cli_support import Cli

import gendurable as gd
from gendurable.codec import DEFAULT_MAX_PAYLOAD_BYTES
from gendurable.db.operator_store import OperatorStore
from gendurable.errors import ValidationError
from gendurable.start_check import row_by_nodes
from gendurable.testing import MakeEngine

COLUMNS = (
    "workflow, queue, step, state::text, status::text, attempt, max_attempts, priority, key, "
    "scope::text, concurrency_key, rate_limit, rate_partition, weight, state_version"
)


async def _row(db: asyncpg.Connection, schema: str, id: int) -> dict[str, Any]:
    row = await db.fetchrow(f'SELECT {COLUMNS} FROM "{schema}".instances WHERE id = $1', id)
    assert row is not None
    found = dict(row)
    found["state"] = msgspec.json.decode(found["state"])
    return found


async def _count(db: asyncpg.Connection, schema: str) -> int:
    count = await db.fetchval(f'SELECT count(*) FROM "{schema}".instances')
    assert isinstance(count, int)
    return count


async def test_cli_start_without_the_code_inserts_the_row_the_code_would(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Metered], queues=None)  # records cli.metered, runs nothing
    by_code = await Metered.start(key="by-code", state=Metered.State(region="eu", units=3))

    run = await cli("start", "cli.metered", "by-cli", '{"region": "eu", "units": 3}', "--json")

    started = run.json()
    assert started == {"id": started["id"], "workflow": "cli.metered", "key": "by-cli",
                       "created": True}  # fmt: skip
    expected = await _row(db, gendurable_schema, by_code.id)
    assert await _row(db, gendurable_schema, started["id"]) == {**expected, "key": "by-cli"}
    assert (expected["weight"], expected["state_version"], expected["priority"]) == (2, 2, 3)


async def test_cli_start_refuses_a_state_of_the_wrong_type_and_writes_nothing(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Metered], queues=None)

    wrong = await cli("start", "cli.metered", "m-1", '{"region": 5}')
    missing = await cli("start", "cli.metered", "m-1")
    not_json = await cli("start", "cli.metered", "m-1", "{region")
    bad_key = await cli("start", "cli.metered", "m\x01" * 1200, '{"region": "eu"}')

    assert (wrong.code, wrong.error) == (
        1,
        "gendurable start: error: cli.metered state does not match Metered.State: Expected "
        "`str`, got `int` - at `$.region`",
    )
    assert (missing.code, missing.error) == (
        1,
        "gendurable start: error: cli.metered state does not match Metered.State: Object "
        "missing required field `region`",
    )
    assert not_json.code == 2
    assert "STATE_JSON is not valid JSON" in not_json.err.splitlines()[-1]
    assert bad_key.code == 1
    assert "above the limit of 2,000" in bad_key.error
    assert await _count(db, gendurable_schema) == 0


async def test_cli_start_with_defaults_without_key_and_with_a_held_key(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Expense], queues={"expenses": 1}, clock=gd.ManualClock())

    first = await cli("start", "cli.expense", "e-1")
    again = await cli("start", "cli.expense", "e-1", '{"amount": 9}')
    keyless = await cli("start", "cli.expense", "", '{"amount": 4}', "--json")
    await engine.drain()

    assert first.code == 0, first.err
    id = int(first.out.split()[3])
    assert first.out == f"started cli.expense instance {id} with key 'e-1'\n"
    assert again.out == (
        f"cli.expense instance {id} already holds key 'e-1' (live); nothing was started\n"
    )
    row = await _row(db, gendurable_schema, id)
    assert (row["state"], row["step"]) == ({"amount": 0}, "decide")  # it ran: now awaiting
    started = keyless.json()
    assert (started["key"], started["created"]) == (None, True)
    assert (await _row(db, gendurable_schema, started["id"]))["state"] == {"amount": 4}


async def test_cli_start_with_the_app_checks_against_the_code(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Expense], queues=None)
    await engine.stop()  # no live node: only the code can check

    unchecked = await cli("start", "cli.expense", "e-1", '{"amount": 1}')
    wrong = await cli("start", "cli.expense", "e-1", '{"amount": "x"}', "--app", "cli_app:engine")
    fine = await cli("start", "cli.expense", "e-1", '{"amount": 1}', "--app", "cli_app:engine")

    assert unchecked.error == (
        "gendurable start: error: no live engine knows workflow 'cli.expense', so the state "
        "cannot be checked: pass --app MODULE:ENGINE to start it with the code"
    )
    assert wrong.error == (
        "gendurable start: error: cli.expense state does not match Expense.State: Expected "
        "`int`, got `str` - at `$.amount`"
    )
    assert fine.code == 0, fine.err
    assert await _count(db, gendurable_schema) == 1


async def test_cli_start_refuses_what_the_node_records_cannot_build(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Regional, Metered], queues=None)
    await db.execute(  # a second live node records another priority (a deploy under way)
        f'INSERT INTO "{gendurable_schema}".nodes (id, name, host, pid, schema, queues, '
        "workflows, version, heartbeat, started_at, last_seen, expires_at) "
        "SELECT id || '-new', name, host, pid, schema, queues, jsonb_set(workflows, "
        "'{cli.metered,priority}', '7'), version, heartbeat, started_at, last_seen, expires_at "
        f'FROM "{gendurable_schema}".nodes'
    )

    partitioned = await cli("start", "cli.regional", "r-1", '{"region": "eu"}')
    disagreeing = await cli("start", "cli.metered", "m-1", '{"region": "eu"}')
    wrong_case = await cli("start", "CLI.Metered", "m-1", '{"region": "eu"}')

    assert partitioned.error == (
        "gendurable start: error: cli.regional starts at step 'call', whose rate limit is "
        "partitioned by a function of the state that only the code can run: pass --app "
        "MODULE:ENGINE"
    )
    assert disagreeing.error == (
        "gendurable start: error: the live engines record different definitions of "
        "cli.metered (a deploy under way?): pass --app MODULE:ENGINE to start it with the code"
    )
    assert wrong_case.error == (
        "gendurable start: error: no live engine knows workflow 'CLI.Metered'; did you mean "
        "'cli.metered'?"
    )
    assert await _count(db, gendurable_schema) == 0


async def test_start_by_nodes_refuses_an_older_record_and_a_state_above_the_payload_limit(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Expense, Metered], queues=None)
    huge = {"region": "x" * DEFAULT_MAX_PAYLOAD_BYTES}
    await db.execute(  # cli.expense as a node of an older gendurable records it: no start
        f"UPDATE \"{gendurable_schema}\".nodes SET workflows = workflows #- '{{cli.expense,start}}'"
    )

    with pytest.raises(ValidationError, match=r"cli.expense do not record how it starts"):
        await row_by_nodes(OperatorStore(engine.store.db), "cli.expense", "e-1", {"amount": 1})
    with pytest.raises(ValidationError, match=r"cli.metered state is 1,048,5\d\d bytes of JSON"):
        await row_by_nodes(OperatorStore(engine.store.db), "cli.metered", "m-1", huge)
    assert await _count(db, gendurable_schema) == 0


async def test_cli_version_prints_the_library_version(cli: Cli) -> None:
    run = await cli("--version")

    assert (run.code, run.out) == (0, f"gendurable {gd.__version__}\n")
