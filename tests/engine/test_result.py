"""result(), get() and jobs against engines running in the background (not drained)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import msgspec
import pytest

import gendurable as gd
from gendurable.records import TERMINAL_STATUSES
from gendurable.testing import MakeEngine
from recordings import recorded

GATES: dict[str, asyncio.Event] = recorded({})
SENT: list[tuple[str, int]] = recorded([])
SLOW_POLL = timedelta(seconds=60)
"""A poll interval no test waits out: work and results must arrive through NOTIFY."""


@gd.workflow(name="result.gated")
class Gated:
    @gd.step
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        await GATES[ctx.key or ""].wait()
        return gd.goto(self.finish)

    @gd.step
    async def finish(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done({"key": ctx.key, "state": state})


class Mail(msgspec.Struct):
    to: str


@gd.job(queue="default", max_attempts=3)
async def send_mail(args: Any, ctx: gd.Context) -> Any:
    SENT.append((args["to"], ctx.attempt))
    return {"sent": args["to"], "attempt": ctx.attempt}


@gd.job(max_attempts=2, backoff=gd.Backoff(base=timedelta(minutes=1), jitter=0.0))
def send_typed(args: Mail, ctx: gd.Context) -> Any:
    SENT.append((args.to, ctx.attempt))
    if ctx.attempt == 0:
        raise ConnectionError("smtp down")
    return f"sent to {args.to}"


def _on_step_start(engine: gd.Engine) -> asyncio.Event:
    started = asyncio.Event()
    engine.telemetry.attach("started", lambda *_: started.set(), events=[("step", "start")])
    return started


# -- result waits on notifications --------------------------------------------------------


async def test_result_returns_when_a_background_engine_finishes_through_notify(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await make_engine(workflows=[Gated], clock=None, poll_interval=SLOW_POLL)
    started = _on_step_start(engine)
    checked = asyncio.Event()
    original = engine.store.instance_status

    async def instance_status(*, id: int) -> Any:
        row = await original(id=id)
        if row is not None and row.status not in TERMINAL_STATUSES:
            checked.set()  # result() saw the instance live: from here on it must wait
        return row

    monkeypatch.setattr(engine.store, "instance_status", instance_status)
    GATES["g"] = asyncio.Event()
    await Gated.start(key="g", state={"n": 1})
    # The scheduler polls once a minute: the step starts this soon only through NOTIFY.
    await asyncio.wait_for(started.wait(), 10)

    loop = asyncio.get_running_loop()
    waiting = asyncio.create_task(Gated.result("g", timeout=30))
    await asyncio.wait_for(checked.wait(), 10)
    assert not waiting.done()
    released_at = loop.time()
    GATES["g"].set()
    result = await waiting

    assert result == {"key": "g", "state": {"n": 1}}
    # Woken by the instance's notification, long before the 30 s timeout or a 60 s poll.
    assert loop.time() - released_at < 10
    assert (await Gated.get("g")).status == "done"


async def test_result_of_a_finished_instance_returns_at_once(make_engine: MakeEngine) -> None:
    engine = await make_engine(workflows=[Gated])
    GATES["f"] = asyncio.Event()
    GATES["f"].set()
    handle = await Gated.start(key="f", state=None)
    await engine.drain()

    assert await Gated.result(handle.id, timeout=0) == {"key": "f", "state": None}
    assert await Gated.result("f") == {"key": "f", "state": None}


async def test_result_timeout_raises_result_timeout(make_engine: MakeEngine) -> None:
    await make_engine(workflows=[Gated], queues=None, clock=None, poll_interval=SLOW_POLL)
    await Gated.start(key="t", state={})

    with pytest.raises(gd.ResultTimeout, match="did not end within") as caught:
        await Gated.result("t", timeout=0.2)

    assert isinstance(caught.value, TimeoutError)
    assert (await Gated.get("t")).status == "available"


# -- get ----------------------------------------------------------------------------------


async def test_result_get_of_a_missing_instance_raises_no_target(make_engine: MakeEngine) -> None:
    await make_engine(workflows=[Gated, send_mail], queues=None)
    other = await send_mail.enqueue({"to": "x"}, key="job-1")

    with pytest.raises(gd.NoTarget, match="'missing'"):
        await Gated.get("missing")
    with pytest.raises(gd.NoTarget, match="id 999999"):
        await Gated.get(999_999)
    with pytest.raises(gd.NoTarget):
        await Gated.get(other.id)  # an id of another workflow
    with pytest.raises(gd.NoTarget):
        await Gated.result("missing", timeout=1)
    with pytest.raises(gd.ValidationError, match="key"):
        await Gated.get(1.5)  # type: ignore[arg-type]


async def test_result_get_reports_the_stored_instance(
    make_engine: MakeEngine, manual_clock: gd.ManualClock
) -> None:
    await make_engine(workflows=[Gated], queues=None)
    handle = await Gated.start(key="i", state={"a": [1]}, priority=4, delay=timedelta(minutes=3))

    info = await Gated.get("i")

    assert (info.id, info.workflow, info.key) == (handle.id, "result.gated", "i")
    assert (info.status, info.step, info.attempt) == ("available", "wait", 0)
    assert (info.state, info.result, info.error) == ({"a": [1]}, None, None)
    assert (info.queue, info.priority) == ("default", 4)
    assert info.run_at == manual_clock.now() + timedelta(minutes=3)
    assert info.inserted_at == manual_clock.now()
    assert info.finished_at is None
    assert not info.terminal


# -- jobs ---------------------------------------------------------------------------------


async def test_result_job_enqueue_runs_and_returns_its_value(make_engine: MakeEngine) -> None:
    engine = await make_engine(workflows=[send_mail])

    handle = await send_mail.enqueue({"to": "ann@example.com"}, key="mail-1")
    again = await send_mail.enqueue({"to": "bob@example.com"}, key="mail-1")
    await engine.drain()

    assert handle.created is True
    assert again == gd.Handle(handle.id, "mail-1", False)
    assert await send_mail.result("mail-1") == {"sent": "ann@example.com", "attempt": 0}
    assert SENT == [("ann@example.com", 0)]
    info = await send_mail.get(handle.id)
    assert (info.workflow, info.step, info.status) == ("send_mail", "perform", "done")


async def test_result_job_in_a_background_engine(make_engine: MakeEngine) -> None:
    await make_engine(workflows=[send_mail], clock=None, poll_interval=SLOW_POLL)

    handle = await send_mail.enqueue({"to": "cy@example.com"})

    assert await send_mail.result(handle.id, timeout=30) == {
        "sent": "cy@example.com",
        "attempt": 0,
    }


async def test_result_job_with_delay_waits_for_the_clock(
    make_engine: MakeEngine, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=[send_mail])

    await send_mail.enqueue({"to": "later@example.com"}, key="d", delay=timedelta(hours=1))
    await engine.drain()
    assert SENT == []

    manual_clock.advance(timedelta(hours=1))
    await engine.drain()
    assert SENT == [("later@example.com", 0)]


async def test_result_typed_job_retries_with_backoff_then_succeeds(
    make_engine: MakeEngine, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=[send_typed])

    with pytest.raises(gd.ValidationError):
        await send_typed.enqueue({"to": 5}, key="bad")
    await send_typed.enqueue(Mail(to="dee@example.com"), key="t")
    await engine.drain()
    info = await send_typed.get("t")
    assert (info.status, info.attempt) == ("available", 1)
    assert info.error["type"] == "builtins.ConnectionError"

    manual_clock.advance(timedelta(minutes=1))
    await engine.drain()

    assert await send_typed.result("t") == "sent to dee@example.com"
    assert SENT == [("dee@example.com", 0), ("dee@example.com", 1)]
    assert (await send_typed.get("t")).state == Mail(to="dee@example.com")


# -- stopping a background engine ---------------------------------------------------------


async def test_engine_stop_returns_when_a_step_ends_during_stop(make_engine: MakeEngine) -> None:
    engine = await make_engine(workflows=[Gated], clock=None, poll_interval=SLOW_POLL)
    started = _on_step_start(engine)
    GATES["s"] = asyncio.Event()
    await Gated.start(key="s", state={})
    await asyncio.wait_for(started.wait(), 10)

    stopping = asyncio.create_task(engine.stop(timeout=10))
    GATES["s"].set()  # the step ends while stop() waits for running steps
    done, _ = await asyncio.wait({stopping}, timeout=10)

    if not done:  # a loop swallowed its cancel: unstick it so the test ends cleanly
        for task in list(engine._loops):
            task.cancel()
        await stopping
    assert done, "engine.stop() hung: the scheduler loop swallowed its cancellation"
    await make_engine(workflows=[Gated], queues=None)
    assert (await Gated.get("s")).status == "done"  # the step's outcome was committed
