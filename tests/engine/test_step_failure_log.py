"""Every step failure is one WARNING line on `gendurable.steps`, and a forgotten `await` says so.

Every engine attaches `failure_handler()`: a failure names the workflow, key, id, step,
attempt ("n of max", the step's own limit), the error and what follows, in one line; the
traceback only when the logger is enabled for DEBUG.
"""

from __future__ import annotations

import gc
import logging
import warnings
from datetime import timedelta
from typing import Any

import pytest

import gendurable as gd
from gendurable.telemetry import FAILURES, STEP_LOGGER
from gendurable.testing import MakeEngine

BACKOFF = gd.Backoff(base=timedelta(seconds=4), jitter=0)


@gd.workflow(name="log.order", backoff=BACKOFF)  # the workflow allows 5
class Order:
    @gd.step(start=True, max_attempts=2)
    async def charge(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        raise RuntimeError("card\ndeclined")


@gd.workflow(name="log.handled")
class Handled:
    @gd.step(start=True)
    def call(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        raise KeyError("missing")

    @gd.step
    async def fallback(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done("fell back")

    def handle(self, error: BaseException, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.fallback)


async def _later(value: str) -> gd.Outcome:
    return gd.done(value)


@gd.workflow(name="log.forgetful", max_attempts=1)
class Forgetful:
    @gd.step(start=True)
    async def call(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return _later("async")  # type: ignore[return-value]  # the forgotten `await`


@gd.workflow(name="log.forgetful_sync", max_attempts=1)
class ForgetfulSync:
    @gd.step(start=True)
    def call(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return _later("sync")  # type: ignore[return-value]


@gd.workflow(name="log.polite", max_attempts=3)
class Polite:
    @gd.step(start=True)
    async def call(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.retry(delay=timedelta(seconds=1)) if ctx.attempt == 0 else gd.done(1)


def failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == STEP_LOGGER]


async def test_step_failure_log_is_one_warning_line_per_failure_and_retry(
    make_engine: MakeEngine, manual_clock: gd.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=STEP_LOGGER)
    engine = await make_engine(workflows=[Order])
    handle = await Order.start(key="o-1")

    await engine.drain()
    manual_clock.advance(timedelta(seconds=5))
    await engine.drain()

    records = failures(caplog)
    assert [r.getMessage() for r in records] == [
        f"log.order 'o-1' (id {handle.id}): step charge failed on attempt 1 of 2: "
        "RuntimeError: card declined; retrying in 4.0s",
        f"log.order 'o-1' (id {handle.id}): step charge failed on attempt 2 of 2: "
        "RuntimeError: card declined; the instance failed",
    ]
    assert {r.levelno for r in records} == {logging.WARNING}
    assert [r.exc_info for r in records] == [None, None]  # no traceback unless DEBUG


async def test_step_failure_log_carries_the_traceback_at_debug(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=STEP_LOGGER)
    engine = await make_engine(workflows=[Handled])
    await Handled.start(key="h-1")

    await engine.drain()

    (record,) = failures(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage().endswith(
        "step call failed on attempt 1 of 5: KeyError: 'missing'; handle() chose goto"
    )
    assert record.exc_info is not None
    assert "raise KeyError" in caplog.text  # the traceback is in the output


async def test_step_failure_log_is_silent_for_success_and_a_requested_retry(
    make_engine: MakeEngine, manual_clock: gd.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=STEP_LOGGER)
    engine = await make_engine(workflows=[Polite])
    await Polite.start(key="p-1")

    await engine.drain()
    manual_clock.advance(timedelta(seconds=2))
    await engine.drain()

    assert await Polite.result("p-1") == 1
    assert failures(caplog) == []


async def test_step_failure_log_can_be_detached(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=STEP_LOGGER)
    engine = await make_engine(workflows=[Handled], start=False)
    engine.telemetry.detach(FAILURES)
    await engine.start()
    await Handled.start(key="h-2")

    await engine.drain()

    assert await Handled.result("h-2") == "fell back"
    assert failures(caplog) == []


@pytest.mark.parametrize("flow", [Forgetful, ForgetfulSync], ids=["async-step", "sync-step"])
async def test_step_returning_a_coroutine_fails_saying_await_was_forgotten(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture, flow: Any
) -> None:
    caplog.set_level(logging.WARNING, logger=STEP_LOGGER)
    engine = await make_engine(workflows=[flow])
    handle = await flow.start(key="f-1")

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        await engine.drain()
        gc.collect()  # a coroutine left unclosed would warn when collected

    info = await flow.get(handle.id)
    assert info.status == "failed"
    assert info.error is not None
    assert info.error["type"] == "gendurable.engine.decide.InvalidOutcome"
    assert info.error["message"] == (
        "step 'call' returned _later(...), an awaitable, instead of an outcome: "
        "did you forget `await`?"
    )
    assert [str(w.message) for w in seen if issubclass(w.category, RuntimeWarning)] == []
    (record,) = failures(caplog)
    assert "InvalidOutcome: step 'call' returned _later(...)" in record.getMessage()
    assert record.getMessage().endswith("did you forget `await`?; the instance failed")
