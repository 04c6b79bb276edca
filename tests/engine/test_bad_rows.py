"""Rows this deploy cannot run as they are: unknown workflows and steps, stored values that
no longer decode.

A row of a workflow or at a step this deploy does not know is never claimed: it stays as it
is (status, attempt, claim, timestamps) and is reported, at start and by `drain()`, with a
warning and `workflow.unknown`. A stored state (or signal payload) that no longer decodes is
an error of the step: it goes to the error path with a message naming the field, and
`get()` still shows the row.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import pytest

import gendurable as gd
from gendurable.testing import MakeEngine, RecorderFactory
from recordings import recorded

HANDLED: list[tuple[str, Any]] = recorded([])


class Amount(msgspec.Struct):
    amount: int = 0
    note: str = ""


@gd.workflow(name="badrows.flow", max_attempts=2)
class Flow:
    State = Amount

    @gd.step(start=True)
    async def first(self, state: Amount, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.wait)

    @gd.step
    @gd.await_signals(paid=Amount)
    async def wait(self, state: Amount, ctx: gd.Context) -> gd.Outcome:
        return gd.done(state.amount + ctx.awaited[0].payload.amount)


@gd.workflow(name="badrows.handled", max_attempts=5)
class Handled:
    State = Amount

    @gd.step(start=True)
    async def first(self, state: Amount, ctx: gd.Context) -> gd.Outcome:
        return gd.done(state.amount)

    async def handle(self, error: Exception, state: Any, ctx: gd.Context) -> gd.Outcome:
        HANDLED.append((str(error), state))
        return gd.stop("cannot read my state")


@gd.workflow(name="badrows.ghost")
class Ghost:
    """Served only by a client engine here: its rows belong to another deploy."""

    @gd.step(start=True)
    async def haunt(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


class Rows:
    def __init__(self, db: asyncpg.Connection, schema: str) -> None:
        self.db = db
        self.s = f'"{schema}"'

    async def get(self, id: int) -> dict[str, Any]:
        row = await self.db.fetchrow(
            f"SELECT status::text AS status, step, attempt, locked_by, locked_until, run_at, "
            f"updated_at, state::text AS state FROM {self.s}.instances WHERE id = $1",
            id,
        )
        assert row is not None
        return dict(row)

    async def execute(self, sql: str, *args: Any) -> None:
        await self.db.execute(sql.replace("S.", f"{self.s}."), *args)


@pytest.fixture
def rows(db: asyncpg.Connection, gendurable_schema: str) -> Rows:
    return Rows(db, gendurable_schema)


async def test_bad_rows_unknown_workflow_and_step_are_left_untouched_and_reported(
    make_engine: MakeEngine,
    recorder: RecorderFactory,
    manual_clock: gd.ManualClock,
    rows: Rows,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gendurable.engine")
    other_deploy = await make_engine(workflows=[Ghost, Flow], queues=None)
    ghost = await Ghost.start(key="g", priority=10, engine=other_deploy)
    renamed = await Flow.start(key="r", priority=10, engine=other_deploy)
    await rows.execute("UPDATE S.instances SET step = 'vanished' WHERE id = $1", renamed.id)
    known = await Flow.start(key="k", engine=other_deploy)  # behind both, by priority
    before = {id: await rows.get(id) for id in (ghost.id, renamed.id)}

    worker = await make_engine(workflows=[Flow], start=False)
    events = recorder(worker)
    await worker.start()
    at_start = list(events.of(("workflow", "unknown")))
    manual_clock.advance(timedelta(hours=1))
    await worker.drain()

    for id in (ghost.id, renamed.id):  # not a column changed, the clock moved an hour
        assert await rows.get(id) == before[id]
    assert (await rows.get(known.id))["step"] == "wait"  # the rows ahead did not block it
    reported = {(e["workflow"], e["step"], e["count"], e["first_id"]) for e in at_start}
    assert reported == {
        ("badrows.ghost", "haunt", 1, ghost.id),
        ("badrows.flow", "vanished", 1, renamed.id),
    }
    assert len(events.of(("workflow", "unknown"))) == 4  # at start, and again by drain()
    logged = [r.getMessage() for r in caplog.records if "does not know" in r.getMessage()]
    assert any("badrows.ghost at step 'haunt'" in m and "left untouched" in m for m in logged)
    assert any("badrows.flow at step 'vanished'" in m for m in logged)
    blocked = (await Flow.get("r", engine=worker)).blocked_by
    assert blocked is not None
    assert blocked.reason == "unknown"


async def test_bad_rows_unknown_rows_are_not_claimed_by_a_deploy_that_knows_them_not(
    make_engine: MakeEngine, recorder: RecorderFactory, rows: Rows
) -> None:
    other_deploy = await make_engine(workflows=[Ghost], queues=None)
    handles = await Ghost.start_many(
        [Ghost.new(key=f"g{i}") for i in range(5)], engine=other_deploy
    )
    worker = await make_engine(workflows=[Flow], start=False)
    events = recorder(worker)
    await worker.start()

    await worker.drain()
    await worker.drain()

    assert {(await rows.get(h.id))["status"] for h in handles} == {"available"}
    assert events.of(("step", "start")) == []
    [first, *_] = events.of(("workflow", "unknown"))
    assert (first["count"], first["first_id"]) == (5, handles[0].id)


async def test_bad_rows_stored_state_that_no_longer_decodes_fails_naming_the_field(
    make_engine: MakeEngine, rows: Rows, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=[Flow])
    handle = await Flow.start(key="s", state=Amount(amount=5))
    # A deploy changed `amount` from str to int under a live row (or someone edited it).
    await rows.execute(
        """UPDATE S.instances SET state = '{"amount": "five", "note": "x"}' WHERE id = $1""",
        handle.id,
    )

    info = await Flow.get("s")  # still readable, as plain JSON
    await engine.drain()
    manual_clock.advance(timedelta(hours=1))  # past the retry's backoff
    await engine.drain()

    assert info.state == {"amount": "five", "note": "x"}
    with pytest.raises(gd.WorkflowFailed) as failed:
        await Flow.result("s", timeout=5)
    error = failed.value.error
    assert error["type"] == "gendurable.errors.ValidationError"
    assert error["message"] == (
        "the stored state of this badrows.flow instance no longer decodes as Amount: "
        "Expected `int`, got `str` - at `$.amount`"
    )
    assert (error["step"], error["attempt"]) == ("first", 1)  # retried, then failed
    assert (await rows.get(handle.id))["state"] == '{"note": "x", "amount": "five"}'


async def test_bad_rows_undecodable_state_reaches_the_handler_with_no_state(
    make_engine: MakeEngine, rows: Rows
) -> None:
    engine = await make_engine(workflows=[Handled])
    handle = await Handled.start(key="h")
    await rows.execute("""UPDATE S.instances SET state = '[1, 2]' WHERE id = $1""", handle.id)

    await engine.drain()

    with pytest.raises(gd.WorkflowFailed, match="cannot read my state"):
        await Handled.result("h", timeout=5)
    [(message, state)] = HANDLED
    assert "no longer decodes as Amount: Expected `object`, got `array`" in message
    assert state is None


async def test_bad_rows_stored_signal_payload_that_no_longer_decodes_fails_naming_it(
    make_engine: MakeEngine, rows: Rows, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=[Flow])
    await Flow.start(key="p")
    await engine.drain()
    # Nothing claims the woken instance until its stored payload has been broken.
    engine.schedulers["default"].stop_claiming()
    signal_id = await Flow.signal("p", "paid", Amount(amount=1))
    await rows.execute(
        """UPDATE S.signals SET payload = '{"amount": [1]}' WHERE id = $1""", signal_id
    )
    engine.schedulers["default"].resume_claiming()

    await engine.drain()
    manual_clock.advance(timedelta(hours=1))
    await engine.drain()

    with pytest.raises(gd.WorkflowFailed) as failed:
        await Flow.result("p", timeout=5)
    assert failed.value.error["message"] == (
        f"the stored payload of signal 'paid' (id {signal_id}) no longer decodes as Amount: "
        "Expected `int`, got `array` - at `$.amount`"
    )
