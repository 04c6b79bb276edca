"""`await check_engine(engine)`: what a deploy of the new code would strand, on real rows."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from deploy_flows import ExpenseV1, ExpenseV2, Report

import gendurable as gd
from gendurable import deploy_check
from gendurable.deploy_check import CheckReport, Problem, check_engine, field_of
from gendurable.engine.engine import Engine
from gendurable.errors import ConfigError, EngineError
from gendurable.testing import MakeEngine

pytestmark = pytest.mark.fresh_schema


@gd.workflow(name="batch.leaf")
class Leaf:
    @gd.step(start=True)
    @gd.await_signals("go")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


@gd.workflow(name="batch")
class BatchV1:
    @gd.step(start=True)
    async def fan(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.spawn([Leaf.new(), Leaf.new()], then=self.collect)

    @gd.step
    async def collect(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()

    @gd.step
    async def audit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


@gd.workflow(name="batch")
class BatchV2:
    """v1 without `collect` and `audit`: it gathers its children in a new step."""

    @gd.step(start=True)
    async def fan(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.spawn([Leaf.new(), Leaf.new()], then=self.gather)

    @gd.step
    async def gather(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


async def old_rows(make_engine: MakeEngine) -> dict[str, int]:
    """Rows left by the running code (v1): parked, delayed, and finished ones. Their ids."""
    old = await make_engine(workflows=[ExpenseV1, Report])
    ids = {}
    for key, amount in [("e1", 10), ("e2", 20), ("e3", "12"), ("e4", 5000), ("e5", 6000)]:
        handle = await ExpenseV1.start(key, ExpenseV1.State(amount=amount), engine=old)
        ids[key] = handle.id
    ids["r1"] = (await Report.start("r1", None, engine=old)).id  # ends at once
    ids["r2"] = (await Report.start("r2", {"wait": True}, engine=old)).id  # delayed two days
    await old.drain()
    await ExpenseV1.signal("e5", "manual", engine=old)  # e5 ends, at the step v2 removes
    await old.drain()
    assert (await ExpenseV1.get("e5", engine=old)).status == "done"
    await old.stop()
    return ids


async def test_check_reports_every_problem_with_count_and_example(
    make_engine: MakeEngine,
) -> None:
    ids = await old_rows(make_engine)
    new = await make_engine(workflows=[ExpenseV2], start=False)

    report = await check_engine(new, full=True)

    assert not report.ok
    assert report.live_rows == 5  # e1-e4 and r2: finished rows are not checked
    assert report.states_decoded == 4
    by_kind = {(p.kind, p.field or p.signal or p.step): p for p in report.problems}
    assert by_kind == {
        ("workflow_not_served", None): Problem("workflow_not_served", "report", 1, ids["r2"]),
        ("step_removed", "legacy"): Problem("step_removed", "expense", 1, ids["e4"], step="legacy"),
        ("signal_removed", "rejected"): Problem(
            "signal_removed", "expense", 3, ids["e1"], step="decide", signal="rejected"
        ),
        ("state_undecodable", "currency"): Problem(
            "state_undecodable",
            "expense",
            3,
            ids["e1"],
            field="currency",
            detail="Object missing required field `currency`",
        ),
        ("state_undecodable", "amount"): Problem(
            "state_undecodable",
            "expense",
            1,
            ids["e3"],
            field="amount",
            detail="Expected `int`, got `str` - at `$.amount`",
        ),
    }
    assert [p.kind for p in report.problems] == [
        "workflow_not_served",
        "step_removed",
        "signal_removed",
        "state_undecodable",
        "state_undecodable",
    ]


async def test_check_reports_rows_waiting_for_children_or_executing_at_a_removed_step(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    # Every live status counts: a parent waiting for its children at the removed step would
    # wake into a step the new code does not have, and so would a row claimed at it.
    old = await make_engine(workflows=[BatchV1, Leaf])
    parent = await BatchV1.start(key="p", engine=old)
    await old.drain()
    await old.stop()
    client = await make_engine(workflows=[BatchV1, Leaf], queues=None)
    running = await BatchV1.start(key="r", engine=client)
    # What a claim of the old code writes when it takes `audit` (and the step then runs).
    await db.execute(
        f"UPDATE \"{gendurable_schema}\".instances SET status = 'executing', step = 'audit', "
        "locked_by = 'old#1', locked_until = now() + interval '1 hour' WHERE id = $1",
        running.id,
    )
    new = await make_engine(workflows=[BatchV2, Leaf], start=False)

    report = await check_engine(new)

    statuses = await db.fetch(
        f'SELECT id, status::text FROM "{gendurable_schema}".instances ORDER BY id'
    )
    assert [r["status"] for r in statuses if r["id"] == parent.id] == ["waiting"]
    assert report.live_rows == 4  # the parent, its two children, the running row
    assert set(report.problems) == {
        Problem("step_removed", "batch", 1, parent.id, step="collect"),
        Problem("step_removed", "batch", 1, running.id, step="audit"),
    }


async def test_check_reports_only_parked_rows_as_awaiting_a_removed_signal(
    make_engine: MakeEngine,
) -> None:
    # A row woken by `approved` keeps its step's awaited names until it runs; it awaits
    # nothing any more, so v2 dropping `rejected` strands only the row still parked.
    old = await make_engine(workflows=[ExpenseV1])
    for key in ("parked", "woken"):
        await ExpenseV1.start(key, ExpenseV1.State(amount=1), engine=old)
    await old.drain()
    await old.stop()
    client = await make_engine(workflows=[ExpenseV1], queues=None)  # runs nothing
    await ExpenseV1.signal("woken", "approved", engine=client)
    parked = await ExpenseV1.get("parked", engine=client)
    assert (await ExpenseV1.get("woken", engine=client)).status == "available"
    new = await make_engine(workflows=[ExpenseV2], start=False)

    report = await check_engine(new)

    assert [p for p in report.problems if p.kind == "signal_removed"] == [
        Problem("signal_removed", "expense", 1, parked.id, step="decide", signal="rejected")
    ]


async def test_check_of_the_running_code_finds_nothing(make_engine: MakeEngine) -> None:
    await old_rows(make_engine)
    same = await make_engine(workflows=[ExpenseV1, Report], start=False)

    report = await check_engine(same, full=True)

    assert report == CheckReport(problems=(), live_rows=5, states_decoded=4, full=True)
    assert report.ok
    assert report.summary() == (
        "checked 5 live row(s) and decoded 4 (every live state): nothing would strand"
    )


async def test_check_reports_rows_on_a_queue_no_engine_runs(make_engine: MakeEngine) -> None:
    client = await make_engine(workflows=[ExpenseV1], queues=None)  # runs no queue
    stuck = await ExpenseV1.start("stuck", ExpenseV1.State(amount=1), queue="nowhere",
                                  engine=client)  # fmt: skip
    await ExpenseV1.start("fine", ExpenseV1.State(amount=1), engine=client)  # on `default`
    checked = await make_engine(workflows=[ExpenseV1], queues={"default": 1}, start=False)
    runs_it = await make_engine(
        workflows=[ExpenseV1], queues={"default": 1, "nowhere": 1}, start=False
    )

    report = await check_engine(checked)
    by_the_checked_engine = await check_engine(runs_it)
    await make_engine(workflows=[ExpenseV1], queues={"nowhere": 1})  # a live engine runs it
    by_a_live_engine = await check_engine(checked)

    assert report.problems == (
        Problem("queue_not_served", "expense", 1, stuck.id, queue="nowhere"),
    )
    assert str(report.problems[0]) == (
        f"queue_not_served: 1 live row of 'expense' on queue 'nowhere' (example id {stuck.id}): "
        "no live engine runs the queue, nor does this engine"
    )
    assert report.problems[0].to_dict()["queue"] == "nowhere"
    assert by_the_checked_engine.ok
    assert by_a_live_engine.ok


async def test_check_sample_decodes_only_the_oldest_rows(make_engine: MakeEngine) -> None:
    ids = await old_rows(make_engine)
    new = await make_engine(workflows=[ExpenseV2], start=False)

    report = await check_engine(new, sample=1)

    assert report.states_decoded == 1
    undecodable = [p for p in report.problems if p.kind == "state_undecodable"]
    assert [(p.field, p.count, p.example_id) for p in undecodable] == [("currency", 1, ids["e1"])]


async def test_check_sample_is_the_states_written_longest_ago(
    make_engine: MakeEngine, manual_clock: gd.ManualClock
) -> None:
    old = await make_engine(workflows=[ExpenseV1])
    first = await ExpenseV1.start("first", ExpenseV1.State(amount="12"), engine=old)
    await old.drain()
    manual_clock.advance(timedelta(minutes=5))
    await ExpenseV1.start("second", ExpenseV1.State(amount=1), engine=old)
    await old.drain()
    await old.stop()
    new = await make_engine(workflows=[ExpenseV2], start=False)

    report = await check_engine(new, sample=1)

    assert report.states_decoded == 1
    undecodable = [p for p in report.problems if p.kind == "state_undecodable"]
    assert [(p.field, p.example_id) for p in undecodable] == [("amount", first.id)]


async def test_check_sample_decodes_live_states_only(make_engine: MakeEngine) -> None:
    await old_rows(make_engine)  # e5 ended, with a state v2 cannot decode either
    new = await make_engine(workflows=[ExpenseV2], start=False)

    report = await check_engine(new)

    assert report.states_decoded == 4
    counts = {p.field: p.count for p in report.problems if p.kind == "state_undecodable"}
    assert counts == {"currency": 3, "amount": 1}


async def test_check_full_reads_every_state_page_by_page(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await old_rows(make_engine)
    monkeypatch.setattr(deploy_check, "PAGE", 2)  # four rows: two full pages, one empty
    new = await make_engine(workflows=[ExpenseV2], start=False)

    report = await check_engine(new, full=True)

    assert report.states_decoded == 4
    counts = {p.field: p.count for p in report.problems if p.kind == "state_undecodable"}
    assert counts == {"currency": 3, "amount": 1}


async def test_check_on_a_stopped_engine_never_starts_it(
    make_engine: MakeEngine, db: Any, gendurable_schema: str
) -> None:
    ids = await old_rows(make_engine)
    client = await make_engine(workflows=[ExpenseV1], queues=None)
    await ExpenseV1.start("due", ExpenseV1.State(amount=1), engine=client)
    # An engine that started would claim the due row at once: no row may move.
    new = await make_engine(workflows=[ExpenseV1, Report], start=False)
    before = await db.fetch(f'SELECT id, status, step FROM "{gendurable_schema}".instances')

    await check_engine(new)

    after = await db.fetch(f'SELECT id, status, step FROM "{gendurable_schema}".instances')
    assert sorted(map(tuple, after)) == sorted(map(tuple, before))
    with pytest.raises(EngineError, match="not running"):
        new.store  # noqa: B018 - the check opened a pool of its own, not the engine's
    assert ids["r2"] in {r["id"] for r in after if r["status"] == "available"}


async def test_check_on_a_running_engine_uses_its_pool(make_engine: MakeEngine) -> None:
    await old_rows(make_engine)
    running = await make_engine(workflows=[ExpenseV2])

    report = await check_engine(running, full=True)

    assert len(report.problems) == 5


async def test_check_refuses_a_schema_that_does_not_exist(gendurable_dsn: str) -> None:
    engine = Engine(gendurable_dsn, workflows=[ExpenseV2], schema="never_migrated_here")

    with pytest.raises(ConfigError, match="'never_migrated_here' does not exist"):
        await check_engine(engine)


async def test_check_refuses_a_sample_below_one(make_engine: MakeEngine) -> None:
    engine = await make_engine(workflows=[ExpenseV2], start=False)

    with pytest.raises(ConfigError, match="sample must be an int of at least 1, got 0"):
        await check_engine(engine, sample=0)


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("Expected `int`, got `str` - at `$.amount`", "amount"),
        ("Object missing required field `currency`", "currency"),
        ("Object missing required field `sku` - at `$.lines[2]`", "lines[2].sku"),
        ("Expected `int`, got `str` - at `$.lines[0].quantity`", "lines[0].quantity"),
        ("Expected `object`, got `array`", None),
    ],
)
def test_check_field_of_names_the_field_a_decode_error_is_about(
    message: str, field: str | None
) -> None:
    assert field_of(message) == field


@pytest.mark.parametrize(
    ("problem", "line"),
    [
        (
            Problem("workflow_not_served", "report", 1, 7),
            "workflow_not_served: 1 live row of 'report' (example id 7): this engine does "
            "not serve the workflow",
        ),
        (
            Problem("step_removed", "expense", 2, 3, step="legacy"),
            "step_removed: 2 live rows of 'expense' at step 'legacy' (example id 3): no such "
            "step any more",
        ),
        (
            Problem("signal_removed", "expense", 3, 1, step="decide", signal="rejected"),
            "signal_removed: 3 live rows of 'expense' await signal 'rejected' at step "
            "'decide' (example id 1): the step no longer declares it",
        ),
        (
            Problem("state_undecodable", "expense", 1, 4, field="amount", detail="Expected"),
            "state_undecodable: 1 live row of 'expense' hold a state that no longer decodes "
            "(field 'amount') (example id 4): Expected",
        ),
    ],
)
def test_check_problem_reads_as_one_line(problem: Problem, line: str) -> None:
    assert str(problem) == line
