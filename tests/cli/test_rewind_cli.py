"""`gendurable retry KEY --step S [--state JSON]`: restarting a failed or cancelled instance
at a named step, run as subprocesses against the test database.

Without `--app` the step and the state are checked against what the live nodes record, so
the first test holds the row it writes to the row the code itself writes.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
from cli_app import Expense
from cli_rewind_app import Ledger, Zoned
from cli_support import Cli

import gendurable as gd
from gendurable.testing import MakeEngine

APP = "cli_rewind_app:engine"
COLUMNS = (
    "status::text, step, state::text, state_version, attempt, max_attempts, rate_limit, "
    "rate_partition, weight, error IS NULL AS cleared, finished_at IS NULL AS unfinished, "
    "pending_children"
)


class Rows:
    """Plain SQL on the test schema."""

    def __init__(self, db: asyncpg.Connection, schema: str) -> None:
        self.db = db
        self.schema = schema

    async def get(self, id: int) -> dict[str, Any]:
        row = await self.db.fetchrow(
            f'SELECT {COLUMNS} FROM "{self.schema}".instances WHERE id = $1', id
        )
        assert row is not None
        found = dict(row)
        found["state"] = msgspec.json.decode(found["state"])
        return found

    async def execute(self, statement: str, *args: object) -> None:
        await self.db.execute(statement.replace("S.", f'"{self.schema}".'), *args)


async def _failed_ledgers(make_engine: MakeEngine, *keys: str) -> tuple[gd.Engine, list[int]]:
    """Ledgers failed at `charge`, and the engine, no longer claiming (resume it to run)."""
    engine = await make_engine(workflows=[Ledger, Zoned], queues={"default": 1},
                               clock=gd.ManualClock())  # fmt: skip
    ids = [(await Ledger.start(key=k, state=Ledger.State(amount=5))).id for k in keys]
    await engine.drain()
    scheduler = engine.schedulers["default"]
    scheduler.stop_claiming()
    await scheduler.run_once()
    return engine, ids


async def test_cli_rewind_without_the_code_writes_what_the_code_would(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    rows = Rows(db, gendurable_schema)
    engine, (a, b) = await _failed_ledgers(make_engine, "a", "b")
    state = '{"amount": 7, "fixed": true}'

    by_code = await cli("retry", "a", "--step", "confirm", "--state", state, "--app", APP,
                        "--json")  # fmt: skip
    by_nodes = await cli("retry", "b", "--step", "confirm", "--state", state)

    assert by_code.json() == {"id": a, "workflow": "cli.ledger", "status": "available",
                              "step": "confirm", "state": "given"}  # fmt: skip
    assert by_nodes.out == (
        f"cli.ledger instance {b} restarts at step 'confirm' with attempt 0 and the state given\n"
    )
    written = await rows.get(a)
    assert written == await rows.get(b)
    assert written["state"] == {"amount": 7, "fixed": True}
    assert {k: written[k] for k in ("status", "step", "state_version", "attempt", "max_attempts",
                                    "weight", "cleared", "unfinished")} == {
        "status": "available", "step": "confirm", "state_version": 2, "attempt": 0,
        "max_attempts": 4, "weight": 2, "cleared": True, "unfinished": True,
    }  # fmt: skip
    assert written["rate_limit"] is not None
    engine.schedulers["default"].resume_claiming()
    await engine.drain()
    assert [await Ledger.result(k, timeout=5) for k in ("a", "b")] == [7, 7]


async def test_cli_rewind_keeps_the_stored_state_and_the_steps_own_attempts(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    rows = Rows(db, gendurable_schema)
    engine, (a,) = await _failed_ledgers(make_engine, "a")
    await rows.execute(
        'UPDATE S.instances SET state = \'{"amount": 5, "fixed": true}\' WHERE id = $1', a
    )

    run = await cli("retry", str(a), "--step", "reserve")

    assert run.code == 0, run.err
    assert run.out.endswith("with attempt 0 and its stored state\n")
    written = await rows.get(a)
    assert (written["step"], written["state"], written["max_attempts"], written["rate_limit"]) == (
        "reserve", {"amount": 5, "fixed": True}, 1, None,
    )  # fmt: skip
    engine.schedulers["default"].resume_claiming()
    await engine.drain()
    assert await Ledger.result("a", timeout=5) == 5


async def test_cli_rewind_refuses_an_unknown_step_or_a_wrong_state_and_writes_nothing(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    rows = Rows(db, gendurable_schema)
    _, (a,) = await _failed_ledgers(make_engine, "a")
    before = await rows.get(a)

    typo = await cli("retry", "a", "--step", "confrim")
    typo_app = await cli("retry", "a", "--step", "confrim", "--app", APP)
    wrong = await cli("retry", "a", "--step", "confirm", "--state", '{"amount": "seven"}')
    wrong_app = await cli("retry", "a", "--state", '{"amount": "seven"}', "--app", APP)
    not_json = await cli("retry", "a", "--step", "confirm", "--state", "{amount")

    for run in (typo, typo_app):
        assert run.code == 1
        assert run.error == (
            "gendurable retry: error: cli.ledger has no step 'confrim'; did you mean 'confirm'? "
            "(its steps: charge, confirm, reserve)"
        )
    assert wrong.code == wrong_app.code == 1
    assert "cli.ledger state does not match Ledger.State" in wrong.error
    assert "`$.amount`" in wrong.error
    assert "Expected `int`, got `str`" in wrong_app.error
    assert not_json.code == 2
    assert "STATE_JSON is not valid JSON" in not_json.err
    assert await rows.get(a) == before


async def test_cli_rewind_restarts_a_cancelled_instance_and_refuses_a_live_one(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    rows = Rows(db, gendurable_schema)
    await make_engine(workflows=[Expense], queues=None)
    cancelled = await Expense.start(key="e-1")
    live = await Expense.start(key="e-2")
    await Expense.cancel("e-1")

    back = await cli("retry", "e-1", "--step", "decide")
    refused = await cli("retry", "e-2", "--step", "decide")
    plain_retry = await cli("retry", "e-1")

    assert back.code == 0, back.err
    written = await rows.get(cancelled.id)
    assert (written["status"], written["step"], written["unfinished"]) == (
        "available", "decide", True,
    )  # fmt: skip
    assert refused.code == 1
    assert refused.error == (
        f"gendurable retry: error: cli.expense instance {live.id} is available: only a failed "
        "or cancelled instance can be rewound"
    )
    assert (await rows.get(live.id))["step"] == "submit"
    assert plain_retry.code == 1
    assert plain_retry.error.endswith("only a failed instance can be retried")
    await Expense.cancel("e-1")
    again = await cli("retry", "e-1")
    assert again.error.endswith(
        "is cancelled: only a failed instance can be retried (rewind it: --step STEP)"
    )


async def test_cli_rewind_is_refused_naming_the_live_holder_of_its_key(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    rows = Rows(db, gendurable_schema)
    _, (old,) = await _failed_ledgers(make_engine, "a")
    new = await Ledger.start(key="a")  # a failed instance does not keep its key

    run = await cli("retry", str(old), "--step", "reserve")

    assert new.created
    assert run.code == 1
    assert run.error == (
        f"gendurable retry: error: cli.ledger instance {old} cannot be rewound: live instance "
        f"{new.id} now holds its key (cancel it first, or start a new instance)"
    )
    assert (await rows.get(old))["status"] == "failed"


async def test_cli_rewind_of_a_child_needs_its_parent_still_waiting_for_it(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    # Children are set up with SQL: each cancelled child counted its parent down already.
    rows = Rows(db, gendurable_schema)
    await make_engine(workflows=[Expense], queues=None)
    waiting = await Expense.start(key="parent-waits")
    ended = await Expense.start(key="parent-cancelled")
    kept = await Expense.start(key="child-kept")
    orphan = await Expense.start(key="child-orphan")
    await rows.execute(
        "UPDATE S.instances SET status = 'waiting', pending_children = 1 WHERE id = $1",
        waiting.id,
    )
    await rows.execute("UPDATE S.instances SET parent_id = $1 WHERE id = $2", waiting.id, kept.id)
    await rows.execute("UPDATE S.instances SET parent_id = $1 WHERE id = $2", ended.id, orphan.id)
    await Expense.cancel("child-kept")  # the parent's count falls to 0: it is due again
    await rows.execute(
        "UPDATE S.instances SET status = 'waiting', pending_children = 1 WHERE id = $1",
        waiting.id,
    )  # ... and another child of the same spawn keeps it waiting
    await Expense.cancel("parent-cancelled")  # takes its child with it

    kept_run = await cli("retry", "child-kept", "--step", "submit")
    orphan_run = await cli("retry", "child-orphan", "--step", "submit")

    assert kept_run.code == 0, kept_run.err
    assert (await rows.get(kept.id))["status"] == "available"
    assert (await rows.get(waiting.id))["pending_children"] == 2
    assert orphan_run.code == 1
    assert orphan_run.error == (
        f"gendurable retry: error: cli.expense instance {orphan.id} cannot be rewound: its "
        f"parent {ended.id} no longer waits for it (rewind the parent to the step that spawns "
        "it instead)"
    )
    assert (await rows.get(orphan.id))["status"] == "cancelled"


async def test_cli_rewind_into_a_partitioned_step_needs_the_code(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    rows = Rows(db, gendurable_schema)
    engine = await make_engine(workflows=[Ledger, Zoned], queues={"default": 1},
                               clock=gd.ManualClock())  # fmt: skip
    zoned = await Zoned.start(key="z", state=Zoned.State(region="eu"))
    await engine.drain()
    engine.schedulers["default"].stop_claiming()
    await engine.schedulers["default"].run_once()

    without = await cli("retry", "z", "--step", "call")
    with_code = await cli("retry", "z", "--step", "call", "--state", '{"region": "us"}',
                          "--app", APP)  # fmt: skip

    assert without.code == 1
    assert without.error == (
        "gendurable retry: error: step 'call' of cli.zoned has a rate limit partitioned by a "
        "function of the state that only the code can run: pass --app MODULE:ENGINE"
    )
    assert with_code.code == 0, with_code.err
    assert (await rows.get(zoned.id))["rate_partition"] == "us"


async def test_cli_rewind_without_a_live_engine_needs_the_app(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine, _ = await _failed_ledgers(make_engine, "a")
    await engine.stop()  # no live node records cli.ledger any more

    run = await cli("retry", "a", "--step", "confirm")
    with_code = await cli("retry", "a", "--step", "confirm", "--app", APP)

    assert run.code == 1
    assert run.error == (
        "gendurable retry: error: no live engine knows workflow 'cli.ledger', so the step and "
        "state cannot be checked: pass --app MODULE:ENGINE to check them against the code"
    )
    assert with_code.code == 0, with_code.err
