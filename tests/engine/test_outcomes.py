"""Outcomes on real PostgreSQL, moved by the manual clock and `drain()` (nothing sleeps)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import pytest

import gendurable as gd
from gendurable.testing import MakeEngine
from recordings import recorded

threads_seen: list[threading.Thread] = recorded([])
attempts: list[int] = recorded([])
handler_calls: list[tuple[type[BaseException], str, int]] = recorded([])


@gd.workflow(name="outcomes.pipeline")
class Pipeline:
    class State(msgspec.Struct):
        n: int = 0
        trail: list[str] = msgspec.field(default_factory=list)

    class Result(msgspec.Struct):
        total: int
        trail: list[str]

    @gd.step(start=True)
    async def fetch(self, state: State, ctx: gd.Context) -> gd.Outcome:
        state.n += 1
        state.trail.append("fetch")
        return gd.goto(self.compute)

    @gd.step
    def compute(self, state: State, ctx: gd.Context) -> gd.Outcome:
        threads_seen.append(threading.current_thread())
        state.n *= 10
        state.trail.append("compute")
        return gd.goto(self.finish)

    @gd.step
    async def finish(self, state: State, ctx: gd.Context) -> gd.Outcome:
        state.trail.append("finish")
        return gd.done(Pipeline.Result(total=state.n, trail=list(state.trail)))


@gd.workflow(name="outcomes.patient")
class Patient:
    @gd.step
    async def poll(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        attempts.append(ctx.attempt)
        if ctx.attempt == 0:
            return gd.retry(timedelta(minutes=5), state={"polled": True})
        return gd.done({"attempt": ctx.attempt, "state": state})


@gd.workflow(
    name="outcomes.flaky",
    max_attempts=3,
    backoff=gd.Backoff(base=timedelta(seconds=10), factor=2.0, jitter=0.0),
)
class Flaky:
    @gd.step
    async def call(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        attempts.append(ctx.attempt)
        raise ValueError(f"down on attempt {ctx.attempt}")


@gd.workflow(name="outcomes.handled")
class Handled:
    class State(msgspec.Struct):
        tries: int = 0

    @gd.step
    async def risky(self, state: State, ctx: gd.Context) -> gd.Outcome:
        state.tries += 1
        raise KeyError("missing")

    @gd.step
    async def fallback(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done({"tries": state.tries, "via": ctx.step})

    def handle(self, error: BaseException, state: State, ctx: gd.Context) -> gd.Outcome:
        handler_calls.append((type(error), ctx.step, ctx.attempt))
        return gd.goto(self.fallback)


@gd.workflow(name="outcomes.quitter")
class Quitter:
    @gd.step
    async def judge(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.stop(f"refused {state['who']}")


@gd.workflow(name="outcomes.slow", max_attempts=1)
class Slow:
    @gd.step(timeout=timedelta(seconds=0.05))
    async def hang(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        await asyncio.Event().wait()  # never set: only the step timeout ends this
        return gd.done()


@gd.workflow(name="outcomes.lost", max_attempts=2)
class Lost:
    @gd.step
    async def wander(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        attempts.append(ctx.attempt)
        return gd.goto("no" + "pe")  # built at run time: the compiler cannot see it


@gd.workflow(name="outcomes.broken", max_attempts=1)
class Broken:
    @gd.step
    async def explode(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        raise RuntimeError("kaboom")


async def _error(engine: gd.Engine, flow: Any, key: str) -> Mapping[str, Any]:
    info = await flow.get(key, engine=engine)
    assert isinstance(info.error, dict)
    return info.error


# -- the happy path -----------------------------------------------------------------------


async def test_outcome_three_steps_reach_done_with_typed_result_and_mutated_state(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[Pipeline])
    handle = await Pipeline.start(key="p", state=Pipeline.State(n=4))

    await engine.drain()

    result = await Pipeline.result("p")
    assert isinstance(result, Pipeline.Result)
    assert result == Pipeline.Result(total=50, trail=["fetch", "compute", "finish"])
    info = await Pipeline.get(handle.id)
    assert (info.status, info.step, info.attempt, info.error) == ("done", "finish", 0, None)
    assert info.state == Pipeline.State(n=50, trail=["fetch", "compute", "finish"])
    assert info.result == result
    assert info.finished_at is not None
    assert info.terminal


async def test_outcome_plain_def_step_runs_in_a_worker_thread(make_engine: MakeEngine) -> None:
    engine = await make_engine(workflows=[Pipeline])
    await Pipeline.start(key="t", state=Pipeline.State())

    await engine.drain()

    assert len(threads_seen) == 1
    assert threads_seen[0] is not threading.main_thread()
    assert threads_seen[0] is not threading.current_thread()
    assert (await Pipeline.get("t")).status == "done"


async def test_outcome_result_is_stored_as_real_jsonb(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Pipeline])
    handle = await Pipeline.start(key="j", state=Pipeline.State(n=1))
    await engine.drain()

    row = await db.fetchrow(
        "SELECT jsonb_typeof(result) AS result_type, jsonb_typeof(state) AS state_type,"
        " state->>'n' AS n, result->>'total' AS total, result->'trail'->>1 AS second"
        f' FROM "{gendurable_schema}".instances WHERE id = $1',
        handle.id,
    )

    assert dict(row) == {
        "result_type": "object",
        "state_type": "object",
        "n": "20",
        "total": "20",
        "second": "compute",
    }


# -- retry and the error path -------------------------------------------------------------


async def test_outcome_retry_with_delay_waits_for_the_clock(
    make_engine: MakeEngine, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=[Patient])
    await Patient.start(key="r", state={"polled": False})
    start = manual_clock.now()

    await engine.drain()
    info = await Patient.get("r")
    assert (info.status, info.attempt, info.state) == ("available", 1, {"polled": True})
    assert info.run_at == start + timedelta(minutes=5)
    assert attempts == [0]

    manual_clock.advance(timedelta(minutes=4, seconds=59))
    await engine.drain()
    assert attempts == [0]

    manual_clock.advance(timedelta(seconds=1))
    await engine.drain()
    assert attempts == [0, 1]
    assert await Patient.result("r") == {"attempt": 1, "state": {"polled": True}}


async def test_outcome_exception_retries_with_backoff_then_fails_with_the_error(
    make_engine: MakeEngine, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=[Flaky])
    await Flaky.start(key="f", state={})
    start = manual_clock.now()

    await engine.drain()
    info = await Flaky.get("f")
    assert (info.status, info.attempt) == ("available", 1)
    assert info.run_at == start + timedelta(seconds=10)
    assert info.error["type"] == "builtins.ValueError"
    assert info.error["message"] == "down on attempt 0"

    manual_clock.advance(timedelta(seconds=9))
    await engine.drain()
    assert attempts == [0]

    manual_clock.advance(timedelta(seconds=1))
    await engine.drain()
    info = await Flaky.get("f")
    assert attempts == [0, 1]
    assert (info.status, info.attempt) == ("available", 2)
    assert info.run_at == start + timedelta(seconds=30)  # 10s, then 20s

    manual_clock.advance(timedelta(seconds=20))
    await engine.drain()
    info = await Flaky.get("f")
    assert attempts == [0, 1, 2]
    assert (info.status, info.attempt) == ("failed", 2)
    assert info.error["type"] == "builtins.ValueError"
    assert info.error["message"] == "down on attempt 2"
    assert info.error["step"] == "call"
    assert "Traceback (most recent call last)" in info.error["traceback"]
    assert 'raise ValueError(f"down on attempt {ctx.attempt}")' in info.error["traceback"]

    with pytest.raises(gd.WorkflowFailed, match="down on attempt 2") as failed:
        await Flaky.result("f")
    assert failed.value.status == "failed"
    assert failed.value.error["type"] == "builtins.ValueError"

    manual_clock.advance(timedelta(days=1))
    await engine.drain()
    assert attempts == [0, 1, 2]  # failed is final


async def test_outcome_handler_is_called_and_its_outcome_applied(make_engine: MakeEngine) -> None:
    engine = await make_engine(workflows=[Handled])
    await Handled.start(key="h", state=Handled.State())

    await engine.drain()

    assert handler_calls == [(KeyError, "risky", 0)]
    assert await Handled.result("h") == {"tries": 1, "via": "fallback"}
    info = await Handled.get("h")
    assert (info.step, info.attempt, info.state) == ("fallback", 0, Handled.State(tries=1))


async def test_outcome_stop_ends_failed_with_the_reason(make_engine: MakeEngine) -> None:
    engine = await make_engine(workflows=[Quitter])
    await Quitter.start(key="q", state={"who": "ann"})

    await engine.drain()

    info = await Quitter.get("q")
    assert info.status == "failed"
    assert info.error == {
        "type": "stop",
        "message": "refused ann",
        "step": "judge",
        "attempt": 0,
        "max_attempts": 5,
    }
    assert info.state == {"who": "ann"}
    with pytest.raises(gd.WorkflowFailed, match="refused ann") as failed:
        await Quitter.result("q")
    assert failed.value.status == "failed"


async def test_outcome_step_timeout_goes_to_the_error_path(make_engine: MakeEngine) -> None:
    engine = await make_engine(workflows=[Slow])
    await Slow.start(key="s", state={})

    await engine.drain()

    info = await Slow.get("s")
    assert info.status == "failed"
    assert "StepTimeout" in info.error["type"]
    assert "timeout" in info.error["message"]
    assert info.error["step"] == "hang"


async def test_outcome_unknown_goto_target_goes_to_the_error_path(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[Lost, Pipeline])
    await Lost.start(key="l", state={})
    await Pipeline.start(key="after", state=Pipeline.State(n=1))

    await engine.drain()
    info = await Lost.get("l")
    assert (info.status, info.attempt) == ("available", 1)
    assert info.error["type"].endswith("InvalidOutcome")
    assert "'nope'" in info.error["message"]

    gd_clock = engine.clock
    assert isinstance(gd_clock, gd.ManualClock)
    gd_clock.advance(timedelta(hours=1))
    await engine.drain()

    info = await Lost.get("l")
    assert (info.status, info.step) == ("failed", "wander")
    assert attempts == [0, 1]
    # the engine went on working
    assert await Pipeline.result("after") == Pipeline.Result(20, ["fetch", "compute", "finish"])


# -- result and cancel --------------------------------------------------------------------


async def test_outcome_cancel_of_an_available_instance_ends_it_cancelled(
    make_engine: MakeEngine, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=[Patient])
    handle = await Patient.start(key="c", state={}, delay=timedelta(hours=1))

    await Patient.cancel("c")

    info = await Patient.get(handle.id)
    assert info.status == "cancelled"
    assert info.finished_at == manual_clock.now()
    with pytest.raises(gd.WorkflowFailed, match="cancelled") as failed:
        await Patient.result("c")
    assert failed.value.status == "cancelled"
    manual_clock.advance(timedelta(hours=2))
    await engine.drain()
    assert attempts == []
    with pytest.raises(gd.NoTarget):
        await Patient.cancel("c")
    with pytest.raises(gd.NoTarget):
        await Patient.cancel("never-started")


async def test_outcome_cancel_of_a_finished_instance_raises_no_target(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[Pipeline])
    handle = await Pipeline.start(key="x", state=Pipeline.State())
    await engine.drain()

    with pytest.raises(gd.NoTarget):
        await Pipeline.cancel(handle.id)
    assert (await Pipeline.get(handle.id)).status == "done"


# -- telemetry ----------------------------------------------------------------------------


async def test_outcome_telemetry_reports_step_start_stop_and_exception(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[Pipeline, Broken])
    events: list[tuple[tuple[str, ...], dict[str, Any], dict[str, Any]]] = []
    engine.telemetry.attach(
        "record",
        lambda event, measurements, metadata: events.append(
            (event, dict(measurements), dict(metadata))
        ),
        events=[("step", "start"), ("step", "stop"), ("step", "exception")],
    )
    ok = await Pipeline.start(key="ok", state=Pipeline.State())
    await engine.drain()
    bad = await Broken.start(key="bad", state={})
    await engine.drain()

    assert [(e, m["step"], m["id"]) for e, _, m in events] == [
        (("step", "start"), "fetch", ok.id),
        (("step", "stop"), "fetch", ok.id),
        (("step", "start"), "compute", ok.id),
        (("step", "stop"), "compute", ok.id),
        (("step", "start"), "finish", ok.id),
        (("step", "stop"), "finish", ok.id),
        (("step", "start"), "explode", bad.id),
        (("step", "exception"), "explode", bad.id),
    ]
    for event, measurements, metadata in events:
        assert metadata["workflow"] in ("outcomes.pipeline", "outcomes.broken")
        assert metadata["attempt"] == 0
        if event == ("step", "start"):
            # A fresh claim says how long the row was due before it was claimed (here: not
            # at all, the manual clock stands still); a chained step was not queued.
            chained = metadata["step"] in ("compute", "finish")
            assert measurements == ({} if chained else {"waited": 0.0})
        else:
            assert isinstance(measurements["duration"], float)
            assert 0.0 <= measurements["duration"] < 60.0
    stop_fetch = events[1][2]
    assert (stop_fetch["key"], stop_fetch["queue"], stop_fetch["decision"]) == (
        "ok",
        "default",
        "MoveTo",
    )
    exception = events[-1][2]
    assert isinstance(exception["error"], RuntimeError)
    assert str(exception["error"]) == "kaboom"
    assert exception["decision"] == "Finish"


async def test_outcome_logging_handler_writes_a_line_per_event(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await make_engine(workflows=[Pipeline])
    engine.telemetry.attach("log", gd.logging_handler())
    engine.telemetry.attach(
        "warn", gd.logging_handler(logging.getLogger("myapp.flows"), logging.WARNING)
    )
    caplog.set_level(logging.INFO, logger="gendurable")
    caplog.set_level(logging.INFO, logger="myapp.flows")

    await Pipeline.start(key="log", state=Pipeline.State())
    await engine.drain()

    lines = [r.getMessage() for r in caplog.records if r.name == "gendurable"]
    stops = [line for line in lines if line.startswith("step.stop ")]
    assert len(stops) == 3
    assert "workflow=outcomes.pipeline" in stops[0]
    assert "step=fetch" in stops[0]
    assert "key=log" in stops[0]
    assert "duration=" in stops[0]
    assert any(line.startswith("step.start ") for line in lines)
    custom = [r for r in caplog.records if r.name == "myapp.flows"]
    assert len(custom) == 6
    assert {r.levelno for r in custom} == {logging.WARNING}


# -- routing of the class-level API -------------------------------------------------------


async def test_outcome_class_api_without_an_engine_raises_no_engine(
    make_engine: MakeEngine,
) -> None:
    with pytest.raises(gd.NoEngine, match="no running engine serves workflow"):
        await Pipeline.start(key="n", state=Pipeline.State())
    await make_engine(workflows=[Patient], queues=None)  # serves another workflow only

    with pytest.raises(gd.NoEngine, match=r"outcomes\.pipeline"):
        await Pipeline.start(key="n", state=Pipeline.State())
    with pytest.raises(gd.NoEngine):
        await Pipeline.get("n")
    with pytest.raises(gd.NoEngine):
        await Pipeline.result("n", timeout=1)
    with pytest.raises(gd.NoEngine):
        await Pipeline.cancel("n")
    with pytest.raises(gd.NoEngine):
        await Pipeline.start_many([Pipeline.new("n", Pipeline.State())])
    with pytest.raises(gd.NoEngine, match="no engine named"):
        await Pipeline.start(key="n", state=Pipeline.State(), engine="not-running")


async def test_outcome_class_api_with_two_engines_needs_engine_argument(
    make_engine: MakeEngine,
) -> None:
    first = await make_engine(workflows=[Pipeline], queues=None)
    second = await make_engine(workflows=[Pipeline], queues=None)

    with pytest.raises(gd.NoEngine, match="several running engines"):
        await Pipeline.start(key="two", state=Pipeline.State())
    with pytest.raises(gd.NoEngine, match="pass engine="):
        await Pipeline.get("two")

    by_object = await Pipeline.start(key="two", state=Pipeline.State(), engine=first)
    by_name = await Pipeline.start(key="two", state=Pipeline.State(), engine=second.name)
    assert by_object.created is True
    assert by_name == gd.Handle(by_object.id, "two", False)  # same schema, same instance
