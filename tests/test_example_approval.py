"""examples/approval.py runs as a script, and its workflow behaves as the guide says."""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from example_runner import run_script

SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "approval.py"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_approval", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # msgspec resolves the Structs' annotations through it
    spec.loader.exec_module(module)
    return module


approval = _load_example()
Expense: Any = approval.Expense


@pytest.fixture
async def engine(
    gendurable_dsn: str, gendurable_schema: str, manual_clock: gd.ManualClock
) -> AsyncIterator[gd.Engine]:
    """An engine serving the example's Expense workflow on the test's schema."""
    running = gd.Engine(
        gendurable_dsn,
        workflows=[Expense],
        schema=gendurable_schema,
        queues={"expenses": 2},
        clock=manual_clock,
        name=f"approval-{uuid.uuid4().hex[:8]}",
    )
    async with running:
        yield running


async def test_example_approval_script_prints_approved_rejected_and_timed_out(
    gendurable_dsn: str, gendurable_schema: str
) -> None:
    env = {**os.environ, "GENDURABLE_DSN": gendurable_dsn}

    code, out, err = await run_script(SCRIPT, "--schema", gendurable_schema, env=env)

    assert code == 0, err
    assert out.splitlines() == [
        "exp-1: awaiting at step 'decide'",
        "exp-2: awaiting at step 'decide'",
        "exp-3: awaiting at step 'decide'",
        "exp-1: paid 120 EUR, approved by dee",
        "exp-2: rejected by dee (no receipt)",
        "exp-3: failed: no decision within 2 days",
    ]
    conn = await asyncpg.connect(gendurable_dsn)
    try:
        rows = await conn.fetch(
            "SELECT key, status::text, step, attempt, state->>'approver' AS approver,"
            " result::text AS result, error->>'message' AS message"
            f' FROM "{gendurable_schema}".instances ORDER BY key'
        )
        signals = await conn.fetchval(f'SELECT count(*) FROM "{gendurable_schema}".signals')
    finally:
        await conn.close()
    assert [(r["key"], r["status"], r["step"], r["attempt"], r["approver"]) for r in rows] == [
        ("exp-1", "done", "pay", 0, "dee"),
        ("exp-2", "done", "decide", 0, None),
        ("exp-3", "failed", "decide", 0, None),
    ]
    assert rows[2]["message"] == "no decision within 2 days"
    assert signals == 0  # consumed on progress, purged at the end


async def test_example_approval_decision_before_the_deadline_pays(
    engine: gd.Engine, manual_clock: gd.ManualClock
) -> None:
    await Expense.start(key="e-1", state=Expense.State(amount=70, submitter="eve"))
    await engine.drain()
    manual_clock.advance(timedelta(days=2) - timedelta(seconds=1))
    await engine.drain()
    assert (await Expense.get("e-1")).status == "awaiting"  # the deadline has not passed

    await Expense.signal("e-1", "approved", approval.Approved(by="fay"))
    await engine.drain()

    assert await Expense.result("e-1", timeout=5) == Expense.Result(
        paid=True, by="fay", note="70 EUR"
    )
    info = await Expense.get("e-1")
    assert (info.step, info.attempt, info.state.approver) == ("pay", 0, "fay")


async def test_example_approval_decision_sent_before_the_await_counts(
    engine: gd.Engine, manual_clock: gd.ManualClock
) -> None:
    await Expense.start(
        key="e-2", state=Expense.State(amount=10, submitter="gus"), delay=timedelta(hours=1)
    )
    await Expense.signal("e-2", "rejected", {"by": "hal", "reason": "duplicate"})

    await engine.drain()
    assert (await Expense.get("e-2")).status == "available"  # not started yet
    manual_clock.advance(timedelta(hours=1))
    await engine.drain()

    assert await Expense.result("e-2", timeout=5) == Expense.Result(
        paid=False, by="hal", note="duplicate"
    )


async def test_example_approval_refuses_a_bad_approval_and_ends_at_the_deadline(
    engine: gd.Engine, manual_clock: gd.ManualClock
) -> None:
    await Expense.start(key="e-3", state=Expense.State(amount=5, submitter="ida"))
    await engine.drain()

    with pytest.raises(gd.ValidationError):
        await Expense.signal("e-3", "approved", {"by": 42})
    with pytest.raises(gd.ValidationError):
        await Expense.signal("e-3", "paid", None)
    manual_clock.advance(timedelta(days=2, seconds=1))
    await engine.drain()

    with pytest.raises(gd.WorkflowFailed) as failed:
        await Expense.result("e-3", timeout=5)
    assert failed.value.status == "failed"
    assert failed.value.error["message"] == "no decision within 2 days"
    assert (await Expense.get("e-3")).attempt == 0
    with pytest.raises(gd.NoTarget):
        await Expense.signal("e-3", "approved", approval.Approved(by="too late"))
