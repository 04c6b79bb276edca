"""`gendurable status`, `ls` and `show`, run as subprocesses against the test database."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest
from cli_app import Approved, Expense, Flaky
from cli_support import Cli

import gendurable as gd
from gendurable.testing import MakeEngine


@gd.workflow(name="cli.refund", queue="expenses")
class Refund:
    """A second workflow on the expenses queue."""

    @gd.step(start=True)
    async def pay(self, state: object, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


async def _sql(db: asyncpg.Connection, schema: str, statement: str, *args: object) -> None:
    await db.execute(statement.replace("S.", f'"{schema}".'), *args)


# -- status ---------------------------------------------------------------------------------


async def test_cli_status_json_counts_by_workflow_status_and_queue(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Expense, Flaky], queues=None)  # client only: nothing runs
    for key in ("a", "b"):
        await Expense.start(key=key)
    late = await Expense.start(key="late", delay=timedelta(hours=1))
    await Flaky.start(key="f")
    gone = await Flaky.start(key="g")
    await Flaky.cancel(gone.id)
    await _sql(
        db,
        gendurable_schema,
        "UPDATE S.instances SET run_at = now() - interval '1 hour' WHERE key = 'a'",
    )

    rows = (await cli("status", "--json")).json()

    ages = {(r["workflow"], r["status"]): r.pop("oldest_due_seconds") for r in rows}
    assert sorted(rows, key=lambda r: (r["workflow"], r["status"])) == [
        {"workflow": "cli.expense", "status": "available", "queue": "expenses", "count": 3,
         "queue_paused": False},
        {"workflow": "cli.flaky", "status": "available", "queue": "default", "count": 1,
         "queue_paused": False},
        {"workflow": "cli.flaky", "status": "cancelled", "queue": "default", "count": 1,
         "queue_paused": False},
    ]  # fmt: skip
    # The oldest due row of expenses is `a`, an hour behind; `late` is not due yet.
    assert 3600 <= ages[("cli.expense", "available")] < 3600 + 60
    assert 0 <= ages[("cli.flaky", "available")] < 60
    assert ages[("cli.flaky", "cancelled")] is None
    assert late.created


async def test_cli_status_table_shows_counts_queues_behind_and_live_nodes(
    cli: Cli, make_engine: MakeEngine
) -> None:
    await make_engine(workflows=[Expense, Flaky], queues=None, name="web")
    await make_engine(workflows=[Flaky], queues={"default": 3}, name="jobs", start=True)
    await Expense.start(key="a", engine="web")

    run = await cli("status")

    assert run.code == 0, run.err
    counts, queues, nodes = run.out.strip().split("\n\n")
    assert counts.splitlines()[0].split() == [
        "workflow", "queue", "available", "executing", "awaiting", "waiting", "done",
        "failed", "cancelled",
    ]  # fmt: skip
    assert counts.splitlines()[2].split() == ["cli.expense", "expenses", "1", *"000000"]
    queue_lines = {line.split()[0]: line for line in queues.splitlines()[2:]}
    assert queue_lines["expenses"].endswith("0  none: nothing runs this queue")
    assert queue_lines["default"].split() == ["default", "0", "1", "3"]
    assert nodes.splitlines()[0] == "live nodes"
    by_name = {line.split()[0]: line for line in nodes.splitlines()[3:]}
    assert set(by_name) == {"web", "jobs"}
    assert "(client only)" in by_name["web"]
    assert "default=3" in by_name["jobs"]
    assert "ago" in by_name["jobs"]


async def test_cli_status_nodes_json_lists_what_each_live_node_serves(
    cli: Cli, make_engine: MakeEngine
) -> None:
    engine = await make_engine(workflows=[Expense], queues={"expenses": 2}, name="exp")

    nodes = (await cli("status", "--nodes", "--json")).json()

    assert len(nodes) == 1
    node = nodes[0]
    assert engine.nodes is not None
    assert node["id"] == engine.nodes.id
    assert (node["name"], node["queues"]) == ("exp", {"expenses": 2})
    described = node["workflows"]["cli.expense"]
    assert (described["queue"], described["steps"]) == (
        "expenses",
        {"submit": [], "decide": ["approved", "rejected"]},
    )
    assert described["signals"]["approved"]["type"] == "Approved"
    assert described["state"]["type"] == "Expense.State"
    assert node["version"] == gd.__version__
    assert node["heartbeat_seconds"] == 10.0


async def test_cli_status_leaves_out_a_dead_node_not_yet_pruned(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    # An engine that died without stopping keeps its row until a live node's heartbeat
    # prunes it; past its expiry it is not live, and serves nothing.
    await make_engine(workflows=[Flaky], queues={"default": 1}, name="alive")
    await _sql(
        db,
        gendurable_schema,
        "INSERT INTO S.nodes (id, name, host, pid, schema, queues, workflows, version, "
        "heartbeat, started_at, last_seen, expires_at) "
        "SELECT 'dead@h-1-x', 'dead', 'h', 1, $1, '{\"expenses\": 4}', '{}', '0', "
        "interval '10 seconds', now() - interval '1 hour', now() - interval '31 seconds', "
        "now() - interval '1 second'",
        gendurable_schema,
    )

    nodes = (await cli("status", "--nodes", "--json")).json()
    run = await cli("status")

    assert [n["name"] for n in nodes] == ["alive"]
    assert run.code == 0, run.err
    _, queues, listed = run.out.strip().split("\n\n")
    assert [line.split()[0] for line in listed.splitlines()[3:]] == ["alive"]
    assert "expenses" not in queues  # only the dead node ran it


async def test_cli_status_a_queue_with_only_rows_scheduled_later_is_not_behind(
    cli: Cli, make_engine: MakeEngine
) -> None:
    await make_engine(workflows=[Expense], queues=None)
    await Expense.start(key="later", delay=timedelta(hours=1))

    rows = (await cli("status", "--json")).json()
    run = await cli("status")

    assert rows == [
        {
            "workflow": "cli.expense",
            "status": "available",
            "queue": "expenses",
            "count": 1,
            "oldest_due_seconds": None,
            "queue_paused": False,
        }
    ]
    queues = run.out.strip().split("\n\n")[1]
    assert queues.splitlines()[2].split()[:2] == ["expenses", "0"]  # nothing due


async def test_cli_status_a_queue_is_as_far_behind_as_its_oldest_due_row_of_any_workflow(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Expense, Refund], queues=None)  # client only: nothing runs
    oldest = await Expense.start(key="a")
    await Expense.start(key="b")
    newer = await Refund.start(key="r")
    for id, behind in ((oldest.id, "2 hours"), (newer.id, "1 hour")):
        await _sql(
            db,
            gendurable_schema,
            f"UPDATE S.instances SET run_at = now() - interval '{behind}' WHERE id = $1",
            id,
        )

    run = await cli("status")

    assert run.code == 0, run.err
    queues = run.out.strip().split("\n\n")[1]
    [expenses] = [line.split() for line in queues.splitlines()[2:] if line.startswith("expenses")]
    assert expenses[1:3] == ["3", "2h"]  # three due rows of two workflows; the oldest's age


# -- ls -------------------------------------------------------------------------------------


async def test_cli_ls_pages_newest_first_with_after_and_limit(
    cli: Cli, make_engine: MakeEngine
) -> None:
    await make_engine(workflows=[Expense, Flaky], queues=None)
    ids = [(await Expense.start(key=f"ord-{i}")).id for i in range(5)]
    ids += [(await Flaky.start(key=f"job-{i}")).id for i in range(2)]
    newest_first = sorted(ids, reverse=True)

    first = (await cli("ls", "--json", "--limit", "3")).json()
    second = (await cli("ls", "--json", "--limit", "3", "--after", str(first[-1]["id"]))).json()
    third = (await cli("ls", "--json", "--limit", "3", "--after", str(second[-1]["id"]))).json()

    assert [r["id"] for r in first + second + third] == newest_first
    assert first[0] == {
        "id": newest_first[0],
        "workflow": "cli.flaky",
        "key": "job-1",
        "status": "available",
        "step": "work",
        "attempt": 0,
        "queue": "default",
        "priority": 0,
        "run_at": first[0]["run_at"],
        "updated_at": first[0]["updated_at"],
    }
    table = await cli("ls", "--limit", "2")
    lines = table.out.splitlines()
    assert lines[0].split() == ["id", "workflow", "key", "status", "step", "attempt", "queue",
                                "run", "at", "updated"]  # fmt: skip
    assert [int(line.split()[0]) for line in lines[2:4]] == newest_first[:2]
    assert lines[-1] == f"more: add --after {newest_first[1]}"


@pytest.mark.parametrize(
    ("filters", "keys"),
    [
        (["--workflow", "cli.flaky"], ["job-1", "job-0"]),
        (["--key-prefix", "ord-1"], ["ord-10", "ord-1"]),
        (["--queue", "expenses", "--status", "cancelled"], ["ord-10"]),
        (["--status", "cancelled", "--status", "available", "--workflow", "cli.expense"],
         ["ord-10", "ord-2", "ord-1"]),
    ],
)  # fmt: skip
async def test_cli_ls_filters(
    cli: Cli, make_engine: MakeEngine, filters: list[str], keys: list[str]
) -> None:
    await make_engine(workflows=[Expense, Flaky], queues=None)
    for key in ("ord-1", "ord-2", "ord-10"):
        await Expense.start(key=key)
    for key in ("job-0", "job-1"):
        await Flaky.start(key=key)
    await Expense.cancel("ord-10")

    rows = (await cli("ls", "--json", *filters)).json()

    assert [r["key"] for r in rows] == keys


async def test_cli_ls_reports_an_empty_page(cli: Cli, make_engine: MakeEngine) -> None:
    await make_engine(workflows=[Expense], queues=None)

    run = await cli("ls", "--after", "1")

    assert (run.code, run.out) == (0, "no instances after that id\n")


async def test_cli_ls_says_when_no_workflow_of_that_name_is_known(
    cli: Cli, make_engine: MakeEngine
) -> None:
    both = await make_engine(workflows=[Expense, Flaky], queues=None)
    await Flaky.start(key="f")
    await both.stop()  # from here only a row has cli.flaky
    await make_engine(workflows=[Expense], queues=None)  # a live node records cli.expense

    known_to_a_node = await cli("ls", "--workflow", "cli.expense")
    known_to_a_row = await cli("ls", "--workflow", "cli.flaky", "--status", "done")
    nosuch = await cli("ls", "--workflow", "nosuch")
    wrong_case = await cli("ls", "--workflow", "CLI.Flaky", "--json")

    assert (known_to_a_node.code, known_to_a_node.out) == (0, "no instances\n")
    assert (known_to_a_row.code, known_to_a_row.out) == (0, "no instances\n")
    assert (nosuch.code, nosuch.error) == (
        1,
        "gendurable ls: error: no workflow 'nosuch' is known: no live engine records it and "
        "no instance has it (known: cli.expense, cli.flaky)",
    )
    assert wrong_case.error == (
        "gendurable ls: error: no workflow 'CLI.Flaky' is known: no live engine records it and "
        "no instance has it; did you mean 'cli.flaky'?"
    )


# -- show -----------------------------------------------------------------------------------


async def test_cli_show_json_has_state_inbox_children_and_blocked_by(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Expense, Flaky], queues=None)
    parent = await Expense.start(key="e-1", state=Expense.State(amount=120))
    signal_id = await Expense.signal("e-1", "approved", Approved(by="ann"))
    child = await Flaky.start(key="child")
    await _sql(db, gendurable_schema, "UPDATE S.instances SET parent_id = $1 WHERE id = $2",
               parent.id, child.id)  # fmt: skip

    shown = (await cli("show", "e-1", "--json")).json()

    received = shown["inbox"][0].pop("received_at")
    assert {k: shown[k] for k in ("id", "key", "workflow", "status", "step", "attempt")} == {
        "id": parent.id,
        "key": "e-1",
        "workflow": "cli.expense",
        "status": "available",
        "step": "submit",
        "attempt": 0,
    }
    assert shown["state"] == {"amount": 120}  # the stored JSON, not a string
    assert shown["state_version"] == 1  # the version of the code that wrote it
    assert shown["inbox"] == [{"id": signal_id, "name": "approved", "payload": {"by": "ann"}}]
    assert received.endswith("Z")
    assert shown["children"] == {
        "total": 1,
        "pending": 0,
        "first": [
            {"id": child.id, "workflow": "cli.flaky", "key": "child", "status": "available",
             "step": "work"}
        ],
    }  # fmt: skip
    assert shown["error"] is None
    assert shown["blocked_by"] == {
        "reason": "queue",
        "until": None,
        "detail": "no live engine serves queue 'expenses'",
        "text": "queued: no live engine serves queue 'expenses'",
    }


async def test_cli_show_text_of_a_failed_instance_has_the_error_and_traceback(
    cli: Cli, make_engine: MakeEngine
) -> None:
    engine = await make_engine(workflows=[Flaky], queues={"default": 1}, clock=gd.ManualClock())
    handle = await Flaky.start(key="f-1")
    await engine.drain()

    run = await cli("show", str(handle.id))

    assert run.code == 0, run.err
    lines = run.out.splitlines()
    fields = {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip() for line in lines[:6]}
    assert fields == {
        "id": str(handle.id),
        "key": "f-1",
        "workflow": "cli.flaky",
        "status": "failed",
        "step": "work",
        "attempt": "1 of 1",
    }
    error = next(i for i, line in enumerate(lines) if line.startswith("error"))
    assert lines[error].split(None, 1)[1] == (
        "builtins.RuntimeError: the bank is down (step work, attempt 1 of 1)"
    )
    assert lines[error + 1].strip() == "Traceback (most recent call last):"
    assert lines[-1].strip() == "RuntimeError: the bank is down"


async def test_cli_show_text_names_a_state_version_other_than_1(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Expense], queues=None)
    old = await Expense.start(key="v1", state=Expense.State(amount=1))
    new = await Expense.start(key="v4", state=Expense.State(amount=1))
    # As a deploy of @gd.workflow(version=4) would have written it.
    await _sql(db, gendurable_schema, "UPDATE S.instances SET state_version = 4 WHERE id = $1",
               new.id)  # fmt: skip

    shown = {key: (await cli("show", str(h.id))).out for key, h in (("v1", old), ("v4", new))}

    assert "state version" not in shown["v1"]
    (line,) = [line for line in shown["v4"].splitlines() if line.startswith("state version")]
    assert line.split("  ", 1)[1].strip() == "4"


async def test_cli_show_text_of_an_awaiting_instance_says_what_it_awaits(
    cli: Cli, make_engine: MakeEngine
) -> None:
    clock = gd.ManualClock()
    engine = await make_engine(workflows=[Expense], queues={"expenses": 1}, clock=clock)
    await Expense.start(key="e-2")
    await engine.drain()

    run = await cli("show", "e-2")

    assert run.code == 0, run.err
    blocked = next(line for line in run.out.splitlines() if line.startswith("blocked by"))
    assert blocked.split("  ", 1)[1].strip() == (
        "awaiting approved or rejected until 2030-01-03 00:00 UTC"  # the clock's start + 2 days
    )


async def test_cli_show_addresses_keys_ids_and_workflows(cli: Cli, make_engine: MakeEngine) -> None:
    await make_engine(workflows=[Expense, Flaky], queues=None)
    expense = await Expense.start(key="shared")
    flaky = await Flaky.start(key="shared")
    digits = await Flaky.start(key="123456")

    ambiguous = await cli("show", "shared")
    chosen = await cli("show", "shared", "--workflow", "cli.flaky", "--json")
    by_id = await cli("show", str(expense.id), "--json")
    wrong_workflow = await cli("show", str(expense.id), "--workflow", "cli.flaky")
    unknown = await cli("show", "nobody")
    digit_key = await cli("show", "123456", "--key", "--json")

    assert ambiguous.code == 1
    assert ambiguous.error == (
        "gendurable show: error: key 'shared' is used by workflows cli.expense, cli.flaky: "
        "pass --workflow NAME"
    )
    assert chosen.json()["id"] == flaky.id
    assert by_id.json()["id"] == expense.id
    assert wrong_workflow.code == 1
    assert wrong_workflow.error == (
        f"gendurable show: error: instance {expense.id} is a cli.expense, not a cli.flaky"
    )
    assert (unknown.code, unknown.error) == (
        1,
        "gendurable show: error: no instance with key 'nobody'",
    )
    assert digit_key.json()["id"] == digits.id


async def test_cli_show_prefers_the_live_instance_of_a_reused_key(
    cli: Cli, make_engine: MakeEngine
) -> None:
    await make_engine(workflows=[Flaky], queues=None)
    old = await Flaky.start(key="k")
    await Flaky.cancel(old.id)
    new = await Flaky.start(key="k")

    shown = (await cli("show", "k", "--json")).json()

    assert (shown["id"], shown["status"]) == (new.id, "available")
    assert shown["blocked_by"]["reason"] == "queue"


async def test_cli_show_prefers_the_live_instance_over_a_later_ended_one(
    cli: Cli, make_engine: MakeEngine
) -> None:
    # A failed instance frees its key: a later instance takes it and ends; then `retry`
    # makes the first one live again. The key names the live one, not the latest.
    worker = await make_engine(workflows=[Flaky], queues={"default": 1})
    first = await Flaky.start(key="k")
    with pytest.raises(gd.WorkflowFailed):
        await Flaky.result("k", timeout=10)
    await worker.stop()
    await make_engine(workflows=[Flaky], queues=None)
    later = await Flaky.start(key="k")
    await Flaky.cancel(later.id)
    assert (await cli("retry", str(first.id))).code == 0

    shown = (await cli("show", "k", "--json")).json()

    assert later.id > first.id
    assert (shown["id"], shown["status"]) == (first.id, "available")
