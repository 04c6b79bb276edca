"""`gendurable retry --workflow ...` and `gendurable cancel --workflow ...`: every instance a
filter matches, a page at a time, run as subprocesses against the test database."""

from __future__ import annotations

import asyncio
import os
import pty
import signal
import sys

import asyncpg
import pytest
from cli_app import Expense, Flaky
from cli_support import HERE, Cli, cli_env

import gendurable as gd
from gendurable.testing import MakeEngine
from raw_rows import Blocker, lock_waiter


class Rows:
    """Plain SQL on the test schema."""

    def __init__(self, db: asyncpg.Connection, schema: str) -> None:
        self.db = db
        self.schema = schema

    async def statuses(self, *ids: int) -> list[str]:
        rows = await self.db.fetch(
            f'SELECT id, status::text FROM "{self.schema}".instances WHERE id = ANY ($1)',
            list(ids),
        )
        found = {r[0]: r[1] for r in rows}
        return [found[i] for i in ids]

    async def execute(self, statement: str, *args: object) -> None:
        await self.db.execute(statement.replace("S.", f'"{self.schema}".'), *args)


async def _failed_flakies(make_engine: MakeEngine, n: int, prefix: str = "f") -> list[int]:
    """`n` failed cli.flaky instances keyed `<prefix>-<i>`; the engine then claims nothing."""
    engine = await make_engine(workflows=[Flaky, Expense], queues={"default": 1},
                               clock=gd.ManualClock())  # fmt: skip
    ids = [(await Flaky.start(key=f"{prefix}-{i}")).id for i in range(n)]
    await engine.drain()
    scheduler = engine.schedulers["default"]
    scheduler.stop_claiming()
    await scheduler.run_once()
    return ids


async def test_cli_bulk_retry_puts_back_every_failed_instance_page_by_page(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    rows = Rows(db, gendurable_schema)
    ids = await _failed_flakies(make_engine, 7)
    holder = await Flaky.start(key="f-3")  # a live instance took the key of a failed one
    live = await Flaky.start(key="f-live")

    run = await cli("retry", "--workflow", "cli.flaky", "--batch-size", "3", "--json")
    again = await cli("retry", "--workflow", "cli.flaky")

    assert run.json() == {
        "workflow": "cli.flaky", "dry_run": False, "action": "retry", "matched": 7,
        "retried": 6, "skipped": {"key_held": 1}, "skipped_ids": {"key_held": [ids[3]]},
        "finished": True,
    }  # fmt: skip
    assert run.err == ""  # no progress: stderr is not a terminal
    assert await rows.statuses(*ids) == ["available"] * 3 + ["failed"] + ["available"] * 3
    assert await rows.statuses(holder.id, live.id) == ["available", "available"]
    assert again.out == (
        "retry cli.flaky: 1 matched, 0 retried, 1 skipped (1 key now held by another live "
        f"instance)\n  key now held by another live instance: {ids[3]}\n"
    )


async def test_cli_bulk_retry_selects_by_step_error_key_prefix_and_age(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    rows = Rows(db, gendurable_schema)
    a, b, c, d = await _failed_flakies(make_engine, 4, prefix="inv")
    await rows.execute(
        "UPDATE S.instances SET error = jsonb_set(error, '{message}', '\"card declined\"') "
        "WHERE id = $1",
        b,
    )
    await rows.execute("UPDATE S.instances SET key = 'ord-1' WHERE id = $1", c)
    await rows.execute(
        "UPDATE S.instances SET finished_at = now() - interval '3 hours' WHERE id = $1", d
    )

    by_error = await cli("retry", "--workflow", "cli.flaky", "--error-contains", "CARD",
                         "--json")  # fmt: skip
    by_prefix = await cli("retry", "--workflow", "cli.flaky", "--key-prefix", "ord-", "--json")
    by_age = await cli("retry", "--workflow", "cli.flaky", "--since", "2h", "--step", "work",
                       "--json")  # fmt: skip
    rest = await cli("retry", "--workflow", "cli.flaky", "--json")

    assert [r.json()["retried"] for r in (by_error, by_prefix, by_age, rest)] == [1, 1, 1, 1]
    assert await rows.statuses(a, b, c, d) == ["available"] * 4
    none = await cli("retry", "--workflow", "cli.flaky", "--step", "other", "--json")
    assert none.json()["matched"] == 0


async def test_cli_bulk_retry_with_a_limit_can_be_run_again_for_the_rest(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    rows = Rows(db, gendurable_schema)
    ids = await _failed_flakies(make_engine, 5)

    dry = await cli("retry", "--workflow", "cli.flaky", "--dry-run")
    dry_capped = await cli("retry", "--workflow", "cli.flaky", "--dry-run", "--limit", "2",
                           "--json")  # fmt: skip
    first = await cli("retry", "--workflow", "cli.flaky", "--limit", "2", "--json")
    statuses = await rows.statuses(*ids)
    second = await cli("retry", "--workflow", "cli.flaky", "--json")

    assert dry.out == (
        "retry cli.flaky: 5 instances match; nothing was changed (dry run)\n"
    )  # fmt: skip
    assert dry_capped.json() == {"workflow": "cli.flaky", "dry_run": True, "action": "retry",
                                 "matched": 2}  # fmt: skip
    assert (first.json()["matched"], first.json()["retried"]) == (2, 2)
    assert statuses == ["available"] * 2 + ["failed"] * 3
    assert (second.json()["matched"], second.json()["retried"]) == (3, 3)
    assert await rows.statuses(*ids) == ["available"] * 5


async def test_cli_bulk_cancel_ends_the_live_instances_matching(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    rows = Rows(db, gendurable_schema)
    engine = await make_engine(workflows=[Expense], queues={"expenses": 2},
                               clock=gd.ManualClock())  # fmt: skip
    waiting = [(await Expense.start(key=f"e-{i}")).id for i in range(4)]
    other = (await Expense.start(key="o-1")).id
    await engine.drain()  # each awaits its decision
    scheduler = engine.schedulers["expenses"]
    scheduler.stop_claiming()
    await scheduler.run_once()
    new = (await Expense.start(key="e-new")).id  # available: not among --status awaiting
    await Expense.cancel("e-0")

    dry = await cli("cancel", "--workflow", "cli.expense", "--key-prefix", "e-", "--dry-run",
                    "--json")  # fmt: skip
    run = await cli("cancel", "--workflow", "cli.expense", "--key-prefix", "e-",
                    "--status", "awaiting", "--batch-size", "2")  # fmt: skip

    assert dry.json()["matched"] == 4  # three awaiting, one available
    assert run.code == 0, run.err
    assert run.out == "cancel cli.expense: 3 matched, 3 cancelled\n"
    assert await rows.statuses(*waiting, other, new) == ["cancelled"] * 4 + [
        "awaiting",
        "available",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["retry"], "name an instance (KEY_OR_ID), or the instances' --workflow NAME"),
        (["retry", "f-1", "--limit", "3"], "--limit select many instances: drop KEY_OR_ID"),
        (["retry", "--workflow", "cli.flaky", "--status", "cancelled"],
         "only failed instances can be retried (a cancelled one can be rewound on its own"),
        (["cancel", "--workflow", "cli.flaky", "--status", "done"],
         "only live instances can be cancelled, not done"),
        (["cancel", "f-1", "--step", "work"], "--step selects many instances"),
        (["retry", "--workflow", "cli.flaky", "--state", "{}"],
         "--state go with one instance's KEY_OR_ID"),
        (["retry", "--workflow", "cli.flaky", "--key"], "--key reads KEY_OR_ID as a key"),
        (["retry", "--workflow", "cli.flaky", "--since", "2 hours"], "is not a duration"),
        (["retry", "--workflow", "cli.flaky", "--batch-size", "20000"], "at most 10000"),
    ],
)  # fmt: skip
async def test_cli_bulk_refuses_options_that_do_not_go_together(
    cli: Cli, args: list[str], message: str
) -> None:
    run = await cli(*args)

    assert run.code == 2
    assert message in run.err


async def test_cli_bulk_names_an_unknown_workflow(cli: Cli, make_engine: MakeEngine) -> None:
    await _failed_flakies(make_engine, 1)

    run = await cli("retry", "--workflow", "CLI.flaky")

    assert run.code == 1
    assert "no workflow 'CLI.flaky' is known" in run.error
    assert "did you mean 'cli.flaky'?" in run.error


async def test_cli_bulk_shows_progress_on_a_terminal_only(
    make_engine: MakeEngine, gendurable_dsn: str, gendurable_schema: str
) -> None:
    await _failed_flakies(make_engine, 3)
    leader, follower = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gendurable", "retry", "--workflow", "cli.flaky",
            "--batch-size", "2", "--schema", gendurable_schema,
            env=cli_env(gendurable_dsn), cwd=HERE, stdout=asyncio.subprocess.PIPE,
            stderr=follower,
        )  # fmt: skip
        os.close(follower)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)

    assert proc.returncode == 0
    assert out.decode() == "retry cli.flaky: 3 matched, 3 retried\n"
    assert b"\r\x1b[Kretry cli.flaky: 2 matched, 2 retried" in shown
    assert b"\r\x1b[Kretry cli.flaky: 3 matched, 3 retried" in shown


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def test_cli_bulk_interrupted_says_how_far_it_got_and_a_second_run_finishes(
    cli: Cli, make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str,
    gendurable_dsn: str,
) -> None:  # fmt: skip
    # A transaction holds one failed row: its page passes over it and the run then waits for
    # it alone, where Ctrl-C stops it. Nothing is half done; the next run retries that row.
    rows = Rows(db, gendurable_schema)
    ids = await _failed_flakies(make_engine, 4)
    blocker = await Blocker.open(gendurable_dsn)
    try:
        await blocker.hold(
            f'SELECT 1 FROM "{gendurable_schema}".instances WHERE id = $1 FOR UPDATE', ids[1]
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gendurable", "retry", "--workflow", "cli.flaky",
            "--schema", gendurable_schema, env=cli_env(gendurable_dsn), cwd=HERE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            # As from a terminal: a suite started in the background (`pytest &` in a shell
            # without job control) ignores SIGINT, and its children would inherit that.
            preexec_fn=_default_sigint,
        )  # fmt: skip
        await lock_waiter(db, behind=blocker)
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await blocker.release()

    assert (proc.returncode, out, err.decode()) == (
        130,
        b"",
        "gendurable retry cli.flaky: interrupted after 4 matched, 3 retried, 1 not done yet; "
        "nothing is half "
        "done: run the same command again to go on\n",
    )
    assert await rows.statuses(*ids) == ["available", "failed", "available", "available"]
    again = await cli("retry", "--workflow", "cli.flaky", "--json")
    assert (again.json()["matched"], again.json()["retried"]) == (1, 1)
