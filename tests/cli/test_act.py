"""`gendurable signal`, `cancel` and `retry`, run as subprocesses against the test database."""

from __future__ import annotations

import asyncpg
import msgspec
from cli_app import Expense, Flaky
from cli_support import Cli

import gendurable as gd
from gendurable.testing import MakeEngine


class Rows:
    """Plain SQL on the test schema."""

    def __init__(self, db: asyncpg.Connection, schema: str) -> None:
        self.db = db
        self.schema = schema

    async def signals(self) -> list[tuple[int, str, object]]:
        rows = await self.db.fetch(
            f'SELECT instance_id, name, payload::text FROM "{self.schema}".signals ORDER BY id'
        )
        return [(r[0], r[1], None if r[2] is None else msgspec.json.decode(r[2])) for r in rows]

    async def instance(self, id: int) -> asyncpg.Record:
        row = await self.db.fetchrow(
            f"SELECT status::text, step, attempt, error, finished_at, pending_children, run_at "
            f'FROM "{self.schema}".instances WHERE id = $1',
            id,
        )
        assert row is not None
        return row

    async def execute(self, statement: str, *args: object) -> None:
        await self.db.execute(statement.replace("S.", f'"{self.schema}".'), *args)


async def _pause(engine: gd.Engine) -> None:
    """Stop the engine's default queue from claiming, once any claim under way is done."""
    scheduler = engine.schedulers["default"]
    scheduler.stop_claiming()
    await scheduler.run_once()  # takes the claim lock: waits out a claim already under way


# -- signal ---------------------------------------------------------------------------------


async def test_cli_signal_delivers_a_name_the_live_nodes_declare(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    rows = Rows(db, gendurable_schema)
    await make_engine(workflows=[Expense], queues=None)  # a live node that knows cli.expense
    handle = await Expense.start(key="e-1")

    by_key = await cli("signal", "e-1", "approved", '{"by": "ann"}', "--workflow", "cli.expense",
                       "--json")  # fmt: skip
    by_id = await cli("signal", str(handle.id), "rejected", "--workflow", "cli.expense")

    sent = by_key.json()
    assert sent == {
        "signal_id": sent["signal_id"], "instance_id": handle.id, "woke": False,
        "duplicate": False,
    }  # fmt: skip
    assert by_id.code == 0, by_id.err
    assert by_id.out.startswith("signal 'rejected' (")
    assert await rows.signals() == [
        (handle.id, "approved", {"by": "ann"}),
        (handle.id, "rejected", None),
    ]


async def test_cli_signal_key_reads_an_all_digit_target_as_a_key(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    rows = Rows(db, gendurable_schema)
    await make_engine(workflows=[Expense], queues=None)
    other = await Expense.start(key="other")
    digits = await Expense.start(key=str(other.id))  # a key that reads as the other's id

    run = await cli("signal", str(other.id), "rejected", "--workflow", "cli.expense", "--key")

    assert run.code == 0, run.err
    assert await rows.signals() == [(digits.id, "rejected", None)]


async def test_cli_signal_wakes_an_instance_awaiting_it(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Expense], queues={"expenses": 1}, clock=gd.ManualClock())
    handle = await Expense.start(key="e-1")
    await engine.drain()

    sent = (await cli("signal", "e-1", "rejected", "--workflow", "cli.expense", "--json")).json()
    await engine.drain()

    assert sent["woke"] is True
    assert await Expense.result("e-1", timeout=5) == {"decision": "rejected"}
    assert (await Rows(db, gendurable_schema).instance(handle.id))["status"] == "done"


async def test_cli_signal_refuses_a_name_no_step_declares_and_stores_nothing(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Expense], queues=None)
    await Expense.start(key="e-1")

    run = await cli("signal", "e-1", "aproved", "--workflow", "cli.expense")

    assert run.code == 1
    assert run.error == (
        "gendurable signal: error: cli.expense awaits no signal named 'aproved' "
        "(it awaits: approved, rejected, per the live engines)"
    )
    assert await Rows(db, gendurable_schema).signals() == []


async def test_cli_signal_to_a_terminal_or_missing_instance_is_no_target_and_stores_nothing(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Expense], queues=None)
    ended = await Expense.start(key="ended")
    await Expense.cancel("ended")

    terminal = await cli("signal", "ended", "approved", '{"by": "x"}', "--workflow", "cli.expense")
    by_id = await cli("signal", str(ended.id), "approved", '{"by": "x"}', "--workflow",
                      "cli.expense")  # fmt: skip
    missing = await cli("signal", "nobody", "approved", '{"by": "x"}', "--workflow", "cli.expense")

    assert (terminal.code, by_id.code, missing.code) == (1, 1, 1)
    assert terminal.error == (
        "gendurable signal: error: no live cli.expense instance with key 'ended'; "
        "signal 'approved' was not stored"
    )
    assert by_id.error == (
        f"gendurable signal: error: no live cli.expense instance with id {ended.id}; "
        "signal 'approved' was not stored"
    )
    assert "no live cli.expense instance with key 'nobody'" in missing.error
    assert await Rows(db, gendurable_schema).signals() == []


async def test_cli_signal_without_a_live_node_needs_the_app_to_check_the_name(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Expense], queues=None)
    handle = await Expense.start(key="e-1")
    await engine.stop()  # its node row goes with it: nobody records cli.expense now

    unchecked = await cli("signal", "e-1", "approved", '{"by": "ann"}', "--workflow",
                          "cli.expense")  # fmt: skip
    bad_payload = await cli("signal", "e-1", "approved", '{"who": "ann"}', "--workflow",
                            "cli.expense", "--app", "cli_app:engine")  # fmt: skip
    bad_name = await cli("signal", "e-1", "paid", "--workflow", "cli.expense", "--app",
                         "cli_app:engine")  # fmt: skip
    not_served = await cli("signal", "e-1", "go", "--workflow", "other", "--app",
                           "cli_app:engine")  # fmt: skip
    checked = await cli("signal", "e-1", "approved", '{"by": "ann"}', "--workflow",
                        "cli.expense", "--app", "cli_app:engine")  # fmt: skip

    assert unchecked.code == 1
    assert unchecked.error == (
        "gendurable signal: error: no live engine knows workflow 'cli.expense', so the signal "
        "cannot be checked: pass --app MODULE:ENGINE to check it against the code"
    )
    assert bad_payload.code == 1
    assert bad_payload.error == (
        "gendurable signal: error: payload of signal 'approved' does not match Approved: "
        "Object missing required field `by`"
    )
    assert (bad_name.code, bad_name.error) == (
        1,
        "gendurable signal: error: cli.expense awaits no signal named 'paid' "
        "(it awaits: approved, rejected)",
    )
    assert not_served.code == 2
    assert not_served.err.splitlines()[-1] == (
        "gendurable signal: error: cli_app:engine does not serve workflow 'other' "
        "(it serves: cli.expense, cli.flaky)"
    )
    assert checked.code == 0, checked.err
    assert await Rows(db, gendurable_schema).signals() == [(handle.id, "approved", {"by": "ann"})]


async def test_cli_signal_refuses_a_payload_of_the_wrong_type_per_the_live_nodes(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    # No --app: the type comes from the JSON Schema the live node records for `approved`.
    await make_engine(workflows=[Expense], queues=None)
    handle = await Expense.start(key="e-1")

    wrong = await cli("signal", "e-1", "approved", '{"by": 7}', "--workflow", "cli.expense")
    missing = await cli("signal", "e-1", "approved", "--workflow", "cli.expense")
    fine = await cli("signal", "e-1", "approved", '{"by": "ann"}', "--workflow", "cli.expense")
    untyped = await cli("signal", "e-1", "rejected", "[1, 2]", "--workflow", "cli.expense")

    assert (wrong.code, wrong.error) == (
        1,
        "gendurable signal: error: payload of signal 'approved' does not match Approved: "
        "Expected `str`, got `int` - at `$.by`",
    )
    assert (missing.code, missing.error) == (
        1,
        "gendurable signal: error: payload of signal 'approved' does not match Approved: "
        "Expected `object`, got `null`",
    )
    assert (fine.code, untyped.code) == (0, 0), fine.err + untyped.err
    assert await Rows(db, gendurable_schema).signals() == [
        (handle.id, "approved", {"by": "ann"}),
        (handle.id, "rejected", [1, 2]),
    ]


async def test_cli_signal_checks_the_payload_against_every_live_nodes_record(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    # Two live nodes running different code (a deploy under way): each record must pass.
    await make_engine(workflows=[Expense], queues=None)
    await Expense.start(key="e-1")
    rows = Rows(db, gendurable_schema)
    await rows.execute(
        "INSERT INTO S.nodes (id, name, host, pid, schema, queues, workflows, version, "
        "heartbeat, started_at, last_seen, expires_at) "
        "SELECT id || '-new', name, host, pid, schema, queues, jsonb_set(workflows, "
        "'{cli.expense,signals,approved,schema}', "
        """'{"type": "object", "required": ["by", "at"]}'), version, heartbeat, """
        "started_at, last_seen, expires_at FROM S.nodes"
    )

    run = await cli("signal", "e-1", "approved", '{"by": "ann"}', "--workflow", "cli.expense")
    await rows.execute(  # the other node now runs a gendurable that recorded no types
        "UPDATE S.nodes SET workflows = workflows #- '{cli.expense,signals}' WHERE id LIKE '%-new'"
    )
    untyped_node = await cli("signal", "e-1", "approved", '{"by": "ann"}')

    assert run.code == 1
    assert run.error.endswith("does not match Approved: Object missing required field `at`")
    assert untyped_node.error == (
        "gendurable signal: error: the live engines running cli.expense do not record payload "
        "types (an older gendurable): pass --app MODULE:ENGINE to check the payload"
    )
    assert await rows.signals() == []


async def test_cli_signal_finds_the_workflow_of_a_key_or_id_without_workflow(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Expense, Flaky], queues=None)
    handle = await Expense.start(key="e-1")
    await Flaky.start(key="shared")
    await Expense.start(key="shared")

    by_key = await cli("signal", "e-1", "approved", '{"by": "ann"}')
    by_id = await cli("signal", str(handle.id), "rejected")
    bad = await cli("signal", "e-1", "approved", '{"by": 1}')
    ambiguous = await cli("signal", "shared", "rejected")
    with_app = await cli("signal", "e-1", "approved", '{"by": 2}', "--app", "cli_app:engine")

    assert (by_key.code, by_id.code) == (0, 0), by_key.err + by_id.err
    assert "at `$.by`" in bad.error
    assert ambiguous.error == (
        "gendurable signal: error: key 'shared' is used by workflows cli.expense, cli.flaky: "
        "pass --workflow NAME"
    )
    assert with_app.error == (
        "gendurable signal: error: payload of signal 'approved' does not match Approved: "
        "Expected `str`, got `int` - at `$.by`"
    )
    assert await Rows(db, gendurable_schema).signals() == [
        (handle.id, "approved", {"by": "ann"}),
        (handle.id, "rejected", None),
    ]


async def test_cli_suggests_the_workflow_a_wrongly_cased_name_means(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Expense], queues=None)
    await Expense.start(key="e-1")

    signal = await cli("signal", "e-1", "rejected", "--workflow", "CLI.Expense")
    show = await cli("show", "e-1", "--workflow", "CLI.EXPENSE")  # no near spelling: its case
    app = await cli("signal", "e-1", "rejected", "--workflow", "CLI.Expense", "--app",
                    "cli_app:engine")  # fmt: skip

    assert signal.error == (
        "gendurable signal: error: no live engine knows workflow 'CLI.Expense'; "
        "did you mean 'cli.expense'?"
    )
    assert show.error == (
        "gendurable show: error: no CLI.EXPENSE instance with key 'e-1'; "
        "did you mean 'cli.expense'?"
    )
    assert app.err.splitlines()[-1] == (
        "gendurable signal: error: cli_app:engine does not serve workflow 'CLI.Expense'; "
        "did you mean 'cli.expense'? (it serves: cli.expense, cli.flaky)"
    )
    assert await Rows(db, gendurable_schema).signals() == []


# -- cancel ---------------------------------------------------------------------------------


async def test_cli_cancel_ends_a_live_instance_and_refuses_an_ended_one(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Expense], queues=None)
    handle = await Expense.start(key="e-1")
    await Expense.signal("e-1", "approved", {"by": "ann"})

    first = await cli("cancel", "e-1", "--json")
    again = await cli("cancel", "e-1")

    assert first.json() == {
        "id": handle.id,
        "workflow": "cli.expense",
        "status": "cancelled",
        "descendants_cancelled": 0,
    }
    row = await Rows(db, gendurable_schema).instance(handle.id)
    assert (row["status"], row["finished_at"] is not None) == ("cancelled", True)
    assert await Rows(db, gendurable_schema).signals() == []  # the inbox went with it
    assert again.code == 1
    assert again.error == (
        f"gendurable cancel: error: cli.expense instance {handle.id} is cancelled, not live; "
        "nothing was cancelled"
    )


# -- retry ----------------------------------------------------------------------------------


async def test_cli_retry_puts_a_failed_instance_back_on_its_step_with_attempt_0(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    rows = Rows(db, gendurable_schema)
    engine = await make_engine(workflows=[Flaky], queues={"default": 1}, clock=gd.ManualClock())
    handle = await Flaky.start(key="f-1")
    await engine.drain()
    failed = await rows.instance(handle.id)
    assert (failed["status"], failed["error"] is not None) == ("failed", True)
    await _pause(engine)  # look at the row before it runs again

    run = await cli("retry", "f-1", "--json")

    assert run.json() == {"id": handle.id, "workflow": "cli.flaky", "status": "available",
                          "step": "work"}  # fmt: skip
    row = await rows.instance(handle.id)
    assert (row["status"], row["step"], row["attempt"], row["error"], row["finished_at"]) == (
        "available", "work", 0, None, None,
    )  # fmt: skip
    await rows.execute("UPDATE S.instances SET state = '{\"fixed\": true}' WHERE id = $1",
                       handle.id)  # fmt: skip
    engine.schedulers["default"].resume_claiming()
    await engine.drain()
    assert await Flaky.result("f-1", timeout=5) == "paid"


async def test_cli_retry_refuses_an_instance_that_did_not_fail(
    cli: Cli, make_engine: MakeEngine
) -> None:
    await make_engine(workflows=[Flaky], queues=None)
    handle = await Flaky.start(key="f-1")

    run = await cli("retry", str(handle.id))

    assert run.code == 1
    assert run.error == (
        f"gendurable retry: error: cli.flaky instance {handle.id} is available: only a failed "
        "instance can be retried"
    )


async def test_cli_retry_refuses_when_another_live_instance_now_holds_the_key(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    rows = Rows(db, gendurable_schema)
    engine = await make_engine(workflows=[Flaky], queues={"default": 1}, clock=gd.ManualClock())
    old = await Flaky.start(key="f-1")
    await engine.drain()
    await _pause(engine)  # the new one stays live
    new = await Flaky.start(key="f-1")  # a failed row does not hold its key

    run = await cli("retry", str(old.id))

    assert new.created
    assert run.code == 1
    assert run.error == (
        f"gendurable retry: error: cli.flaky instance {old.id} cannot be retried: live instance "
        f"{new.id} now holds its key (cancel it first, or start a new instance)"
    )
    assert (await rows.instance(old.id))["status"] == "failed"


async def test_cli_retry_of_a_child_needs_its_parent_still_waiting_for_it(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    # Children are set up with SQL: a parent `waiting` for its spawn from `children_from`.
    rows = Rows(db, gendurable_schema)
    engine = await make_engine(workflows=[Flaky], queues={"default": 1}, clock=gd.ManualClock())
    scheduler = engine.schedulers["default"]
    await _pause(engine)
    waiting = await Flaky.start(key="parent-waits")
    moved_on = await Flaky.start(key="parent-moved-on")  # stays available: not waiting
    kept = await Flaky.start(key="child-kept")
    orphan = await Flaky.start(key="child-orphan")
    await rows.execute(
        "UPDATE S.instances SET status = 'waiting', pending_children = 1, children_from = 0 "
        "WHERE id = $1",
        waiting.id,
    )
    await rows.execute(
        "UPDATE S.instances SET run_at = run_at + interval '1 day' WHERE id = $1", moved_on.id
    )
    scheduler.resume_claiming()
    await engine.drain()  # both children fail; neither parent runs
    await _pause(engine)
    await rows.execute("UPDATE S.instances SET parent_id = $1 WHERE id = $2", waiting.id, kept.id)
    await rows.execute(
        "UPDATE S.instances SET parent_id = $1 WHERE id = $2", moved_on.id, orphan.id
    )

    kept_run = await cli("retry", "child-kept")
    orphan_run = await cli("retry", "child-orphan")

    assert kept_run.code == 0, kept_run.err
    assert (await rows.instance(kept.id))["status"] == "available"
    assert (await rows.instance(waiting.id))["pending_children"] == 2
    assert orphan_run.code == 1
    assert orphan_run.error == (
        f"gendurable retry: error: cli.flaky instance {orphan.id} cannot be retried: its parent "
        f"{moved_on.id} no longer waits for it"
    )
    assert (await rows.instance(orphan.id))["status"] == "failed"
