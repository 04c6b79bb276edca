"""`gendurable pause QUEUE`, `resume QUEUE`, the paused queues in `status`, and
`gendurable signal --idempotency-key`, run as subprocesses against the test database."""

from __future__ import annotations

import asyncpg
from cli_app import Expense, Flaky
from cli_support import Cli

from gendurable.testing import MakeEngine


async def test_cli_pause_stops_a_running_worker_from_starting_steps_until_resume(
    cli: Cli, make_engine: MakeEngine
) -> None:
    worker = await make_engine(workflows=[Flaky], queues={"default": 2})

    paused = await cli("pause", "default", "--by", "ops")
    assert paused.code == 0, paused.err
    assert paused.out.startswith("paused queue 'default' (since ")
    assert "by ops): no engine starts a new step of it until" in paused.out
    handle = await Flaky.start(key="f", state=Flaky.State(fixed=True))
    await worker.drain()  # drain() reads the pauses again: it runs nothing
    shown = await cli("show", str(handle.id))
    assert "paused: queue 'default' since" in shown.out
    assert (await Flaky.get(handle.id)).status == "available"

    resumed = await cli("resume", "default")
    assert resumed.code == 0, resumed.err
    assert resumed.out.startswith("resumed queue 'default' (paused since ")
    assert await Flaky.result(handle.id, timeout=10) == "paid"


async def test_cli_pause_and_resume_json_say_whether_they_changed_anything(
    cli: Cli, make_engine: MakeEngine
) -> None:
    engine = await make_engine(workflows=[Expense], queues=None)

    first = (await cli("pause", "expenses", "--by", "ann", "--json")).json()
    again = (await cli("pause", "expenses", "--by", "bob", "--json")).json()
    resumed = (await cli("resume", "expenses", "--json")).json()
    not_paused = (await cli("resume", "expenses", "--json")).json()

    assert {k: first[k] for k in ("queue", "paused", "paused_by")} == {
        "queue": "expenses", "paused": True, "paused_by": "ann",
    }  # fmt: skip
    assert again == {**first, "paused": False}
    assert resumed == {
        "queue": "expenses", "resumed": True, "paused_at": first["paused_at"], "paused_by": "ann",
    }  # fmt: skip
    assert not_paused == {
        "queue": "expenses", "resumed": False, "paused_at": None, "paused_by": None,
    }  # fmt: skip
    assert await engine.paused_queues() == []


async def test_cli_pause_names_who_paused_and_notes_a_queue_no_live_engine_runs(
    cli: Cli, make_engine: MakeEngine
) -> None:
    engine = await make_engine(workflows=[Expense], queues={"expenses": 1})

    run = await cli("pause", "expences")
    again = await cli("pause", "expences")

    assert run.code == 0, run.err
    assert run.out.splitlines()[-1] == (
        "note: no live engine runs queue 'expences' (the live engines run: expenses)"
    )
    assert "was paused already" in again.out
    [pause] = await engine.paused_queues()
    assert pause.paused_by.startswith("gendurable pause (")


async def test_cli_status_marks_paused_queues(cli: Cli, make_engine: MakeEngine) -> None:
    await make_engine(workflows=[Expense, Flaky], queues=None)
    await Expense.start(key="a")
    await Flaky.start(key="f")
    assert (await cli("pause", "expenses", "--by", "ann")).code == 0
    assert (await cli("pause", "nowhere", "--by", "bob")).code == 0  # no row, no engine

    table = (await cli("status")).out.strip().split("\n\n")[1]
    rows = (await cli("status", "--json")).json()

    header, _, *lines = table.splitlines()
    assert header.split()[-1] == "paused"
    by_queue = {line.split()[0]: line for line in lines}
    assert set(by_queue) == {"default", "expenses", "nowhere"}
    assert by_queue["expenses"].endswith(" by ann")
    assert by_queue["nowhere"].endswith(" by bob")
    assert " by " not in by_queue["default"]
    assert {(r["queue"], r["queue_paused"]) for r in rows} == {
        ("expenses", True), ("default", False),
    }  # fmt: skip


async def test_cli_pause_refuses_a_bad_queue_name(cli: Cli, make_engine: MakeEngine) -> None:
    engine = await make_engine(workflows=[Expense], queues=None)

    empty = await cli("pause", "")
    long = await cli("resume", "q" * 3000)

    assert empty.err.splitlines()[-1] == (
        "gendurable pause: error: queue must be a non-empty string, got ''"
    )
    assert long.err.splitlines()[-1].startswith("gendurable resume: error: queue 'qqq")
    assert (empty.code, long.code) == (2, 2)
    assert await engine.paused_queues() == []


async def test_cli_signal_with_an_idempotency_key_stores_once(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Expense], queues=None)
    handle = await Expense.start(key="e-1")
    args = ("signal", "e-1", "approved", '{"by": "ann"}', "--workflow", "cli.expense")

    first = (await cli(*args, "--idempotency-key", "req-7", "--json")).json()
    again = (await cli(*args, "--idempotency-key", "req-7", "--json")).json()
    text = await cli(*args, "--idempotency-key", "req-7")
    other = await cli(*args[:3], '{"by": "bob"}', *args[4:], "--idempotency-key", "req-7")
    bad = await cli(*args, "--idempotency-key", "")

    assert first == {
        "signal_id": first["signal_id"], "instance_id": handle.id, "woke": False,
        "duplicate": False,
    }  # fmt: skip
    assert again == {**first, "duplicate": True}
    assert text.out.strip() == (
        f"signal 'approved' ({first['signal_id']}) was stored for instance {handle.id} "
        "already, with idempotency key 'req-7'; nothing was stored"
    )
    assert other.code == 1
    assert "idempotency key 'req-7' already stored another signal" in other.error
    assert bad.code == 2
    assert "idempotency_key" in bad.err.splitlines()[-1]
    count = await db.fetchval(f'SELECT count(*) FROM "{gendurable_schema}".signals')
    assert count == 1
