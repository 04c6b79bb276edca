"""The deploy check and state versions: rows an upgrade will carry are counted, rows none
covers are problems, and an upgrade that breaks on a live state is found before the deploy."""

from __future__ import annotations

import json

import pytest
from deploy_flows import ExpenseV1, ExpenseV3, ExpenseV3Buggy, ExpenseV3From2, Report
from test_check import old_rows
from test_check_command import gendurable

from gendurable.deploy_check import CheckReport, Problem, Upgrade, check_engine
from gendurable.testing import MakeEngine

pytestmark = pytest.mark.fresh_schema


async def test_check_counts_the_rows_an_upgrade_will_carry_and_passes(
    make_engine: MakeEngine,
) -> None:
    ids = await old_rows(make_engine)  # expense rows e1-e4 live, written by version 1
    new = await make_engine(workflows=[ExpenseV3, Report], start=False)

    report = await check_engine(new, full=True)

    # v2's State change failed this check; v3 makes it with upgrades, and every state
    # decodes once upgraded (e3's amount "12" included).
    assert report == CheckReport(
        problems=(),
        live_rows=5,
        states_decoded=4,
        full=True,
        upgrades=(Upgrade("expense", 1, 3, 4, ids["e1"]),),
    )
    assert report.summary() == (
        "checked 5 live row(s) and decoded 4 (every live state): nothing would strand; "
        "4 row(s) will have their state upgraded"
    )
    assert str(report.upgrades[0]) == (
        "state_upgrade: 4 live rows of 'expense' hold a state of version 1, upgraded to "
        f"version 3 when next read (example id {ids['e1']})"
    )


async def test_check_reports_rows_older_than_the_oldest_upgrade(make_engine: MakeEngine) -> None:
    ids = await old_rows(make_engine)
    new = await make_engine(workflows=[ExpenseV3From2, Report], start=False)

    report = await check_engine(new, full=True)

    assert not report.ok
    assert report.problems == (
        Problem(
            "state_version_uncovered",
            "expense",
            4,
            ids["e1"],
            detail="its state is of version 1 and this code's is 3, but its oldest upgrade "
            "starts from version 2: add @gd.upgrade(from_version=1)",
            state_version=1,
        ),
    )
    assert report.states_decoded == 0  # a state no upgrade reaches is not decoded
    assert report.upgrades == ()


async def test_check_reports_rows_newer_than_the_code(make_engine: MakeEngine) -> None:
    newer = await make_engine(workflows=[ExpenseV3])
    id = (await ExpenseV3.start("n1", ExpenseV3.State(amount=3, currency="CHF"))).id
    await newer.drain()
    await newer.stop()
    old = await make_engine(workflows=[ExpenseV1], start=False)  # a rollback

    report = await check_engine(old, full=True)

    (problem,) = report.problems
    assert problem == Problem(
        "state_version_uncovered",
        "expense",
        1,
        id,
        detail="its state was written by version 3 of the workflow, newer than this code's "
        "version 1: run it with the newer code",
        state_version=3,
    )
    assert str(problem) == (
        f"state_version_uncovered: 1 live row of 'expense' hold a state of version 3 (example "
        f"id {id}): its state was written by version 3 of the workflow, newer than this "
        "code's version 1: run it with the newer code"
    )


async def test_check_runs_the_upgrades_and_reports_one_that_breaks(
    make_engine: MakeEngine,
) -> None:
    ids = await old_rows(make_engine)
    new = await make_engine(workflows=[ExpenseV3Buggy, Report], start=False)

    report = await check_engine(new, full=True)

    assert report.problems == (
        Problem(
            "state_undecodable",
            "expense",
            1,
            ids["e3"],
            detail="upgrade 'add_currency_buggy' from version 1 to 2 failed: TypeError: can "
            'only concatenate str (not "int") to str',
        ),
    )
    assert report.upgrades == (Upgrade("expense", 1, 3, 4, ids["e1"]),)


async def test_check_command_lists_upgrades_and_exits_0(
    make_engine: MakeEngine, gendurable_dsn: str, gendurable_schema: str
) -> None:
    ids = await old_rows(make_engine)

    code, out, err = await gendurable(
        "check", "deploy_flows:engine_v3", "--dsn", gendurable_dsn, schema=gendurable_schema
    )

    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "state_upgrade: 4 live rows of 'expense' hold a state of version 1, upgraded to "
        f"version 3 when next read (example id {ids['e1']})",
        "checked 5 live row(s) and decoded 4 (a sample of live states): nothing would strand; "
        "4 row(s) will have their state upgraded",
    ]


async def test_check_command_fails_on_rows_no_upgrade_covers(
    make_engine: MakeEngine, gendurable_dsn: str, gendurable_schema: str
) -> None:
    ids = await old_rows(make_engine)

    code, out, _ = await gendurable(
        "check", "deploy_flows:engine_v3_from2", "--json", "--dsn", gendurable_dsn,
        schema=gendurable_schema,
    )  # fmt: skip

    assert code == 1
    report = json.loads(out)
    assert [(p["kind"], p["state_version"], p["example_id"]) for p in report["problems"]] == [
        ("state_version_uncovered", 1, ids["e1"])
    ]
    assert report["upgrades"] == []
