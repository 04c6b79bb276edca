"""Flow.signal on real PostgreSQL: validation, NoTarget, storage, wake-up, telemetry.

A refused signal (bad payload, unknown name, no live target) must store nothing: each test
counts the rows of `"<schema>".signals`. Time only moves with the manual clock.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import msgspec
import pytest

import gendurable as gd
from gendurable.testing import MakeEngine, RecorderFactory

# Steps of `Hold.first` block on these events (by instance key) until the test lets them go.
STARTED: dict[str, asyncio.Event] = {}
RELEASE: dict[str, asyncio.Event] = {}


class Approved(msgspec.Struct):
    by: str


@gd.workflow(name="sigdeliv.expense")
class Expense:
    class State(msgspec.Struct):
        approver: str | None = None
        rejected: bool = False

    @gd.step(start=True)
    async def submit(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.decide)

    @gd.step
    @gd.await_signals(approved=Approved, rejected=None, timeout=timedelta(days=2))
    async def decide(self, state: State, ctx: gd.Context) -> gd.Outcome:
        if ctx.timed_out:
            return gd.stop("no decision in time")
        sig = ctx.awaited[0]
        if sig.name == "rejected":
            state.rejected = True
            return gd.done({"paid": False})
        state.approver = sig.payload.by
        return gd.done({"paid": True, "by": sig.payload.by})


@gd.workflow(name="sigdeliv.ender")
class Ender:
    """Ends as told by its state; `wait` is never entered but makes "poke" a known signal."""

    class State(msgspec.Struct):
        fail: bool = False

    @gd.step(start=True)
    async def end(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.stop("told to fail") if state.fail else gd.done("ok")

    @gd.step
    @gd.await_signals("poke")
    async def wait(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done("poked")


@gd.workflow(name="sigdeliv.hold")
class Hold:
    """`first` runs until the test releases it; `wait` then needs the "go" signal."""

    @gd.step(start=True)
    async def first(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        assert ctx.key is not None
        STARTED[ctx.key].set()
        await RELEASE[ctx.key].wait()
        return gd.goto(self.wait)

    @gd.step
    @gd.await_signals("go")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done([s.payload for s in ctx.awaited])


async def _parked(engine: gd.Engine, key: str) -> gd.Handle:
    """Start an Expense and run it until it awaits its decision."""
    handle = await Expense.start(key=key, engine=engine)
    await engine.drain()
    info = await Expense.get(key, engine=engine)
    assert (info.status, info.step) == ("awaiting", "decide")
    return handle


# -- validation: refused before anything is written --------------------------------------


@pytest.mark.parametrize(
    "payload",
    [{"by": 5}, "ann", None, {"name": "ann"}, Approved(by=7)],
    ids=["wrong-field-type", "not-an-object", "missing", "missing-field", "bad-struct"],
)
async def test_signal_bad_payload_raises_and_stores_nothing(
    make_engine: MakeEngine, rows: Any, payload: Any
) -> None:
    engine = await make_engine(workflows=[Expense])
    handle = await _parked(engine, "exp-bad")

    with pytest.raises(gd.ValidationError, match="approved"):
        await Expense.signal("exp-bad", "approved", payload)
    with pytest.raises(gd.ValidationError):
        await Expense.signal(handle.id, "approved", payload)

    assert await rows.signal_count() == 0
    assert (await rows.instance(handle.id))["status"] == "awaiting"


async def test_signal_typed_payload_accepts_a_matching_dict(
    make_engine: MakeEngine, rows: Any
) -> None:
    engine = await make_engine(workflows=[Expense])
    await _parked(engine, "exp-dict")

    await Expense.signal("exp-dict", "approved", {"by": "ann"})
    await engine.drain()

    assert await Expense.result("exp-dict", timeout=5) == {"paid": True, "by": "ann"}
    assert await rows.signal_count() == 0


async def test_signal_unknown_name_is_refused_and_stores_nothing(
    make_engine: MakeEngine, rows: Any
) -> None:
    engine = await make_engine(workflows=[Expense])
    handle = await _parked(engine, "exp-name")

    with pytest.raises(gd.ValidationError, match="aproved") as refused:
        await Expense.signal("exp-name", "aproved", Approved(by="ann"))
    with pytest.raises(gd.ValidationError):
        await Expense.signal(handle.id, "", None)

    assert "approved" in str(refused.value)  # the message lists the names it does await
    assert await rows.signal_count() == 0
    assert (await rows.instance(handle.id))["status"] == "awaiting"


async def test_signal_untyped_payload_that_is_not_json_raises_and_stores_nothing(
    make_engine: MakeEngine, rows: Any
) -> None:
    engine = await make_engine(workflows=[Expense])
    await _parked(engine, "exp-json")

    with pytest.raises(gd.ValidationError, match="JSON"):
        await Expense.signal("exp-json", "rejected", {"why": object()})

    assert await rows.signal_count() == 0


# -- NoTarget: missing or terminal instances, by key and by id ---------------------------


async def test_signal_missing_key_or_id_raises_no_target_and_stores_nothing(
    make_engine: MakeEngine, rows: Any
) -> None:
    await make_engine(workflows=[Expense, Ender], queues=None)
    other = await Ender.start(key="ender-1")  # an id of another workflow

    with pytest.raises(gd.NoTarget, match="nobody"):
        await Expense.signal("nobody", "approved", Approved(by="ann"))
    with pytest.raises(gd.NoTarget):
        await Expense.signal(987_654_321, "rejected")
    with pytest.raises(gd.NoTarget):
        await Expense.signal(other.id, "rejected")

    assert await rows.signal_count() == 0


@pytest.mark.parametrize("ending", ["done", "failed", "cancelled"])
async def test_signal_terminal_instance_raises_no_target_by_key_and_id(
    make_engine: MakeEngine, rows: Any, ending: str
) -> None:
    engine = await make_engine(workflows=[Ender])
    if ending == "cancelled":  # not due yet, so no step can end it first
        handle = await Ender.start(key="end-1", delay=timedelta(hours=1))
        await Ender.cancel("end-1")
    else:
        handle = await Ender.start(key="end-1", state=Ender.State(fail=ending == "failed"))
        await engine.drain()
    assert (await Ender.get(handle.id)).status == ending

    with pytest.raises(gd.NoTarget, match="end-1"):
        await Ender.signal("end-1", "poke")
    with pytest.raises(gd.NoTarget):
        await Ender.signal(handle.id, "poke", {"any": "payload"})

    assert await rows.signal_count() == 0
    assert (await Ender.get(handle.id)).status == ending


async def test_signal_by_key_reaches_the_live_instance_not_an_ended_one(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[Expense])
    old = await _parked(engine, "exp-again")
    await Expense.signal("exp-again", "rejected")
    await engine.drain()
    assert (await Expense.get(old.id)).status == "done"
    new = await _parked(engine, "exp-again")

    await Expense.signal("exp-again", "approved", Approved(by="bo"))
    await engine.drain()

    assert await Expense.result(new.id, timeout=5) == {"paid": True, "by": "bo"}
    assert await Expense.result(old.id, timeout=5) == {"paid": False}


# -- storage and wake-up -----------------------------------------------------------------


async def test_signal_to_awaiting_instance_flips_it_to_available(
    make_engine: MakeEngine, rows: Any
) -> None:
    worker = await make_engine(workflows=[Expense])
    handle = await _parked(worker, "exp-flip")
    await worker.stop()  # nothing claims it now: the flip itself is observable
    await make_engine(workflows=[Expense], queues=None)  # a client only

    signal_id = await Expense.signal("exp-flip", "approved", Approved(by="cy"))

    row = await rows.instance(handle.id)
    assert (row["status"], row["step"], row["timed_out"]) == ("available", "decide", False)
    stored = await rows.signals(handle.id)
    assert [(r["id"], r["name"]) for r in stored] == [(signal_id, "approved")]
    assert msgspec.json.decode(stored[0]["payload"]) == {"by": "cy"}  # a jsonb object


async def test_signal_wakes_a_parked_instance_on_another_engine_through_notify(
    make_engine: MakeEngine,
) -> None:
    # The worker polls once an hour: only the delivery's NOTIFY can wake its scheduler.
    worker = await make_engine(workflows=[Expense], poll_interval=timedelta(hours=1))
    await _parked(worker, "exp-notify")
    client = await make_engine(workflows=[Expense], queues=None)

    await Expense.signal("exp-notify", "approved", Approved(by="ned"), engine=client)

    result = await Expense.result("exp-notify", timeout=10, engine=worker)
    assert result == {"paid": True, "by": "ned"}


async def test_signal_by_id_is_delivered_like_by_key(make_engine: MakeEngine) -> None:
    engine = await make_engine(workflows=[Expense])
    handle = await _parked(engine, "exp-id")

    await Expense.signal(handle.id, "approved", Approved(by="di"))
    await engine.drain()

    assert await Expense.result(handle.id, timeout=5) == {"paid": True, "by": "di"}
    assert (await Expense.get(handle.id)).state == Expense.State(approver="di")


async def test_signal_sent_before_the_await_is_entered_satisfies_it(
    make_engine: MakeEngine, rows: Any, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=[Expense])
    handle = await Expense.start(key="exp-early", delay=timedelta(minutes=1))

    signal_id = await Expense.signal("exp-early", "approved", Approved(by="ed"))

    row = await rows.instance(handle.id)
    assert (row["status"], row["step"]) == ("available", "submit")  # not awaiting yet
    assert [r["id"] for r in await rows.signals(handle.id)] == [signal_id]
    manual_clock.advance(timedelta(minutes=1))
    await engine.drain()
    assert await Expense.result("exp-early", timeout=5) == {"paid": True, "by": "ed"}
    assert await rows.signal_count() == 0


async def test_signal_to_executing_instance_is_kept_for_the_next_await(
    make_engine: MakeEngine, rows: Any
) -> None:
    engine = await make_engine(workflows=[Hold])
    STARTED["hold-1"], RELEASE["hold-1"] = asyncio.Event(), asyncio.Event()
    handle = await Hold.start(key="hold-1")
    draining = asyncio.create_task(engine.drain())
    try:
        await asyncio.wait_for(STARTED["hold-1"].wait(), 30)
        assert (await rows.instance(handle.id))["status"] == "executing"

        await Hold.signal("hold-1", "go", {"n": 1})

        assert (await rows.instance(handle.id))["status"] == "executing"
        assert len(await rows.signals(handle.id)) == 1
    finally:
        RELEASE["hold-1"].set()
        await draining
    assert await Hold.result("hold-1", timeout=5) == [{"n": 1}]
    assert await rows.signal_count() == 0


# -- telemetry ---------------------------------------------------------------------------


async def test_signal_delivered_emits_telemetry_only_when_stored(
    make_engine: MakeEngine, recorder: RecorderFactory
) -> None:
    engine = await make_engine(workflows=[Expense])
    handle = await Expense.start(key="exp-tel", delay=timedelta(hours=1))  # stays live
    recorder = recorder(engine)

    first = await Expense.signal("exp-tel", "approved", Approved(by="fa"))
    second = await Expense.signal(handle.id, "rejected", {"why": "late"})
    with pytest.raises(gd.NoTarget):
        await Expense.signal("nobody", "rejected")
    with pytest.raises(gd.ValidationError):
        await Expense.signal("exp-tel", "approved", "not a struct")

    assert recorder.of(("signal", "delivered")) == [
        {"workflow": "sigdeliv.expense", "target": "exp-tel", "name": "approved",
         "signal_id": first},
        {"workflow": "sigdeliv.expense", "target": handle.id, "name": "rejected",
         "signal_id": second},
    ]  # fmt: skip
    assert second > first
