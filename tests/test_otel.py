"""`gendurable.otel.instrument(engine)`: spans and metrics, read from the SDK's in-memory
exporters, on real engines and PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import gendurable as gd
from gendurable.otel import Instrumentation, instrument
from gendurable.testing import MakeEngine, RecorderFactory
from recordings import recorded

FAILS: dict[str, int] = recorded({})
GATE: dict[str, asyncio.Event] = recorded({})


@gd.workflow(name="otel.order")
class Order:
    class State(msgspec.Struct):
        fail_times: int = 0
        wait: bool = False

    @gd.step(start=True)
    async def take(self, state: State, ctx: gd.Context) -> gd.Outcome:
        if ctx.attempt < state.fail_times:
            raise RuntimeError(f"carrier down (attempt {ctx.attempt})")
        with trace.get_tracer("app").start_as_current_span("call carrier"):
            pass
        return gd.goto(self.decide if state.wait else self.ship)

    @gd.step
    @gd.await_signals("approved", timeout=timedelta(days=7))
    async def decide(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.ship)

    @gd.step
    def ship(self, state: State, ctx: gd.Context) -> gd.Outcome:
        # A plain `def` step runs in a thread: its spans still nest under the step's.
        with trace.get_tracer("app").start_as_current_span("print label"):
            pass
        return gd.done()


@gd.workflow(name="otel.gated", lease=timedelta(minutes=10))
class Gated:
    @gd.step
    async def hold(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        if ctx.engine.name.startswith("slow"):
            await GATE["go"].wait()
        return gd.done()


@gd.workflow(name="otel.call")
class Call:
    class State(msgspec.Struct):
        region: str = ""

    @gd.step(start=True, rate_limit="carrier", partition=lambda state: state.region)
    async def call(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


class Telemetry:
    """The SDK's in-memory span exporter and metric reader behind one pair of providers."""

    def __init__(self) -> None:
        self.spans_exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans_exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def instrument(self, engine: gd.Engine) -> Instrumentation:
        return instrument(
            engine, tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        done = self.spans_exporter.get_finished_spans()
        return [s for s in done if name is None or s.name == name]

    def points(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, data point) of every point of `metric` collected now."""
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            (dict(point.attributes or {}), point)
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for m in scope.metrics
            if m.name == metric
            for point in m.data.data_points
        ]

    def total(self, metric: str, **where: Any) -> Any:
        return sum(
            p.value if hasattr(p, "value") else p.sum
            for attrs, p in self.points(metric)
            if all(attrs.get(f"gendurable.{k}") == v for k, v in where.items())
        )


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    # `trace.get_tracer("app")` in the steps: the user's own spans, on the same provider.
    previous = trace._TRACER_PROVIDER
    trace._TRACER_PROVIDER = telemetry.tracer_provider
    yield telemetry
    trace._TRACER_PROVIDER = previous
    telemetry.tracer_provider.shutdown()
    telemetry.meter_provider.shutdown()


def traceparent(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


async def test_otel_a_span_per_step_in_the_trace_of_the_start(
    make_engine: MakeEngine, otel: Telemetry, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Order])
    otel.instrument(engine)

    with otel.tracer_provider.get_tracer("app").start_as_current_span("POST /orders") as request:
        handle = await Order.start("o-1", Order.State())
    await engine.drain()

    [start] = otel.spans("start otel.order")
    assert start.kind == SpanKind.PRODUCER
    assert start.parent is not None
    assert start.parent.span_id == request.get_span_context().span_id
    stored = await db.fetchval(
        f'SELECT trace_context FROM "{gendurable_schema}".instances WHERE id = $1', handle.id
    )
    assert stored == traceparent(start)
    steps = otel.spans("otel.order take") + otel.spans("otel.order ship")
    assert [s.name for s in steps] == ["otel.order take", "otel.order ship"]
    for span in steps:
        assert span.kind == SpanKind.CONSUMER
        assert span.context is not None
        assert span.context.trace_id == request.get_span_context().trace_id
        assert span.parent is not None
        assert span.parent.span_id == start.get_span_context().span_id
        assert span.status.status_code == StatusCode.UNSET
    assert dict(steps[0].attributes or {}) == {
        "gendurable.workflow": "otel.order",
        "gendurable.step": "take",
        "gendurable.queue": "default",
        "gendurable.attempt": 0,
        "gendurable.instance.id": handle.id,
        "gendurable.instance.key": "o-1",
        "gendurable.outcome": "goto",
    }
    assert (steps[1].attributes or {})["gendurable.outcome"] == "done"


async def test_otel_the_steps_own_spans_nest_under_the_step_span(
    make_engine: MakeEngine, otel: Telemetry
) -> None:
    engine = await make_engine(workflows=[Order])
    otel.instrument(engine)

    await Order.start("o-2", Order.State())
    await engine.drain()

    [take] = otel.spans("otel.order take")
    [ship] = otel.spans("otel.order ship")
    [carrier] = otel.spans("call carrier")
    [label] = otel.spans("print label")  # from the worker thread of a plain `def` step
    assert carrier.parent is not None
    assert carrier.parent.span_id == take.get_span_context().span_id
    assert label.parent is not None
    assert label.parent.span_id == ship.get_span_context().span_id


async def test_otel_a_retry_is_a_new_span_in_the_same_trace_with_the_error_recorded(
    make_engine: MakeEngine, otel: Telemetry, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=[Order])
    otel.instrument(engine)

    await Order.start("o-3", Order.State(fail_times=1))
    await engine.drain()
    manual_clock.advance(timedelta(minutes=1))  # past the backoff
    await engine.drain()

    [start] = otel.spans("start otel.order")
    first, second = otel.spans("otel.order take")
    assert [(s.attributes or {})["gendurable.attempt"] for s in (first, second)] == [0, 1]
    trace_ids = {s.get_span_context().trace_id for s in (start, first, second)}
    assert len(trace_ids) == 1
    assert first.get_span_context().span_id != second.get_span_context().span_id
    assert first.status.status_code == StatusCode.ERROR
    assert first.status.description == "RuntimeError: carrier down (attempt 0)"
    [exception] = [e for e in first.events if e.name == "exception"]
    assert (exception.attributes or {})["exception.type"] == "RuntimeError"
    assert (first.attributes or {})["gendurable.outcome"] == "retry"
    assert second.status.status_code == StatusCode.UNSET
    assert otel.total("gendurable.steps", step="take", error=True) == 1
    assert otel.total("gendurable.steps", step="take", error=False) == 1
    assert otel.total("gendurable.outcomes", outcome="retry") == 1


async def test_otel_a_signal_carries_its_context_to_the_step_it_wakes(
    make_engine: MakeEngine, otel: Telemetry, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Order])
    otel.instrument(engine)
    handle = await Order.start("o-4", Order.State(wait=True))
    await engine.drain()  # parked in `decide`

    app = otel.tracer_provider.get_tracer("app")
    with app.start_as_current_span("POST /approve") as webhook:
        await Order.signal("o-4", "approved")
    stored = await db.fetchval(
        f'SELECT trace_context FROM "{gendurable_schema}".signals WHERE instance_id = $1',
        handle.id,
    )
    await engine.drain()

    [send] = otel.spans("signal otel.order")
    assert send.kind == SpanKind.PRODUCER
    assert send.parent is not None
    assert send.parent.span_id == webhook.get_span_context().span_id
    assert stored == traceparent(send)
    [decide] = otel.spans("otel.order decide")
    [start] = otel.spans("start otel.order")
    assert decide.parent is not None
    assert decide.parent.span_id == start.get_span_context().span_id  # the instance's trace
    assert [link.context.span_id for link in decide.links] == [send.get_span_context().span_id]
    assert otel.total("gendurable.signals", signal="approved", workflow="otel.order") == 1


async def test_otel_metrics_for_steps_outcomes_and_claim_latency(
    make_engine: MakeEngine, otel: Telemetry, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=[Order])
    otel.instrument(engine)

    await Order.start("o-5", Order.State(), delay=timedelta(seconds=10))
    await Order.start("o-6", Order.State(), delay=timedelta(seconds=10))
    manual_clock.advance(timedelta(seconds=15))  # both were due for five seconds when claimed
    await engine.drain()

    assert otel.total("gendurable.steps", workflow="otel.order") == 4
    assert otel.total("gendurable.outcomes", outcome="goto") == 2
    assert otel.total("gendurable.outcomes", outcome="done") == 2
    [(attrs, latency)] = otel.points("gendurable.claim.latency")
    assert attrs == {
        "gendurable.workflow": "otel.order",
        "gendurable.step": "take",
        "gendurable.queue": "default",
    }
    assert (latency.count, latency.sum) == (2, 10.0)  # chained steps were not queued again
    durations = {a["gendurable.step"]: p.count for a, p in otel.points("gendurable.step.duration")}
    assert durations == {"take": 2, "ship": 2}


async def test_otel_rescues_and_stale_outcomes_are_counted(
    make_engine: MakeEngine,
    otel: Telemetry,
    manual_clock: gd.ManualClock,
    recorder: RecorderFactory,
) -> None:
    GATE["go"] = asyncio.Event()
    slow = await make_engine(workflows=[Gated], name="slow-otel", queues={"default": 1})
    otel.instrument(slow)
    events = recorder(slow)
    await Gated.start("g-1", None, engine=slow)
    await events.wait(("step", "start"))  # the slow engine holds the claim, waiting
    manual_clock.advance(timedelta(minutes=11))  # past its lease
    fast = await make_engine(workflows=[Gated], name="fast-otel")
    otel.instrument(fast)
    await fast.drain()  # its reaper rescues the instance, and it runs the step

    GATE["go"].set()
    await events.wait(("outcome", "stale"))

    assert otel.total("gendurable.rescues", workflow="otel.gated", status="available") == 1
    assert otel.total("gendurable.outcomes", outcome="stale") == 1
    assert otel.total("gendurable.outcomes", outcome="done") == 2  # fast's, and slow's dropped


async def test_otel_throttles_and_await_timeouts_are_counted(
    make_engine: MakeEngine, otel: Telemetry, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(
        workflows=[Call, Order], rate_limits={"carrier": gd.Limit(1, per=timedelta(minutes=1))}
    )
    otel.instrument(engine)
    for i in range(4):
        await Call.start(f"c-{i}", Call.State(region="eu"))
    await Order.start("o-9", Order.State(wait=True))
    await engine.drain()  # one call goes, three wait for tokens; the order awaits a signal
    assert otel.total("gendurable.throttles", rate_limit="carrier", partition="eu") == 3

    manual_clock.advance(timedelta(days=8))  # past the await's deadline
    await engine.drain()

    assert otel.total("gendurable.await.timeouts", step="decide") == 1


async def test_otel_background_runs_are_spans_when_they_did_something_or_failed(
    make_engine: MakeEngine,
    otel: Telemetry,
    manual_clock: gd.ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    engine = await make_engine(workflows=[Order])
    otel.instrument(engine)
    await Order.start("o-10", Order.State())
    await engine.drain()  # done; the collector ran and found nothing to delete
    manual_clock.advance(timedelta(days=2))  # past the day of retention
    with otel.tracer_provider.get_tracer("app").start_as_current_span("test"):
        await engine.drain()  # the collector deletes it
    assert engine.reaper is not None
    await db.execute(f'ALTER TABLE "{gendurable_schema}".instances RENAME TO instances_away')
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await engine.reaper.run_once()
    finally:
        await db.execute(f'ALTER TABLE "{gendurable_schema}".instances_away RENAME TO instances')

    [collector] = otel.spans("gendurable collector")
    assert collector.kind == SpanKind.INTERNAL
    assert collector.parent is None  # a trace of its own, not the caller's
    assert dict(collector.attributes or {}) == {
        "gendurable.task": "collector",
        "gendurable.rows": 1,
    }
    assert collector.status.status_code == StatusCode.UNSET
    [reaper] = otel.spans("gendurable reaper")  # the runs that found nothing are not spans
    assert reaper.status.status_code == StatusCode.ERROR
    assert (reaper.status.description or "").startswith("UndefinedTableError: relation ")
    [exception] = [e for e in reaper.events if e.name == "exception"]
    assert (exception.attributes or {})["exception.type"].endswith("UndefinedTableError")
    assert otel.total("gendurable.maintenance.runs", task="reaper", error=True) == 1
    assert otel.total("gendurable.maintenance.runs", task="collector", error=False) == 2
    assert otel.total("gendurable.maintenance.rows", task="collector") == 1
    [(_, durations)] = [
        (a, p)
        for a, p in otel.points("gendurable.maintenance.duration")
        if a == {"gendurable.task": "collector", "gendurable.error": False}
    ]
    assert durations.count == 2


async def test_otel_uninstrument_stops_spans_and_stored_contexts(
    make_engine: MakeEngine, otel: Telemetry, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Order])
    otel.instrument(engine).uninstrument()

    handle = await Order.start("o-7", Order.State())
    await engine.drain()

    assert [s.name for s in otel.spans() if s.name.startswith(("start", "otel."))] == []
    stored = await db.fetchval(
        f'SELECT trace_context FROM "{gendurable_schema}".instances WHERE id = $1', handle.id
    )
    assert stored is None
    assert engine.telemetry.tracer is None


async def test_otel_instrumenting_twice_is_refused(
    make_engine: MakeEngine, otel: Telemetry
) -> None:
    engine = await make_engine(workflows=[Order], start=False)
    otel.instrument(engine)

    with pytest.raises(ValueError, match="already instrumented"):
        otel.instrument(engine)


async def test_otel_a_failing_tracer_never_stops_a_start(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    engine = await make_engine(workflows=[Order])

    def broken(operation: str, metadata: Any) -> str | None:
        raise RuntimeError("exporter down")

    engine.telemetry.tracer = broken

    handle = await Order.start("o-8", Order.State())

    assert handle.created
    assert "telemetry tracer failed for start" in caplog.text


def test_otel_import_gendurable_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, gendurable, gendurable.cli, gendurable.testing\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
