"""OpenTelemetry traces and metrics for an engine (the `gendurable[otel]` extra).

```python
from gendurable.otel import instrument

instrument(engine)  # the global tracer and meter providers, or pass your own
```

Traces. Every step run is a span (`"<workflow> <step>"`, kind CONSUMER) with the workflow,
step, attempt, instance id, key and queue as attributes, the outcome it committed, and the
exception when it raised (recorded, status ERROR). `start` and `signal` open a short PRODUCER
span in the caller's trace (`"start <workflow>"`, `"signal <workflow>"`) whose context is
stored with the row: every step of the instance, on whatever node, is a child of its start's
span, so an instance is one trace and each retry is a new span in it; a step woken by a
signal also links to the signal's span. While a step runs its span is the current span, so
spans the step's own code opens (HTTP calls, queries) nest under it.

Each run of a background task (reaper, collector, node heartbeat, poller, claim heartbeat,
startup reclaim) that touched rows or failed is a span of its own (`"gendurable <task>"`,
kind INTERNAL), with the exception recorded when it failed; idle runs are only counted.

Metrics: `gendurable.steps` and `gendurable.step.duration` (by workflow, step and result),
`gendurable.outcomes` (goto, park, retry, done, failed, stale), `gendurable.signals`,
`gendurable.throttles`, `gendurable.rescues`, `gendurable.await.timeouts`,
`gendurable.claim.latency` (how long a due instance waited before a worker claimed it),
`gendurable.maintenance.runs`, `gendurable.maintenance.duration` and
`gendurable.maintenance.rows` (by task).

It listens to the engine's telemetry events, so it costs nothing when not installed;
`import gendurable` never imports OpenTelemetry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from . import events
from .engine.engine import Engine
from .events import Event
from .version import __version__

__all__ = ["HANDLER_NAME", "Instrumentation", "instrument"]

HANDLER_NAME = "opentelemetry"
"""The name of the telemetry handler `instrument` attaches."""

SCOPE = "gendurable"
"""The instrumentation scope of every span and metric."""

_log = logging.getLogger("gendurable.otel")
_propagator = TraceContextTextMapPropagator()
_OpenKey = tuple[Any, Any, Any]


class Instrumentation:
    """OpenTelemetry attached to one engine; `uninstrument()` takes it off again."""

    def __init__(
        self,
        engine: Engine,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.engine = engine
        self.tracer = trace.get_tracer(SCOPE, __version__, tracer_provider)
        meter = metrics.get_meter(SCOPE, __version__, meter_provider)
        self.steps = meter.create_counter(
            "gendurable.steps", unit="{step}", description="Steps run, by outcome and error"
        )
        self.step_duration = meter.create_histogram(
            "gendurable.step.duration", unit="s", description="How long steps ran"
        )
        self.outcomes = meter.create_counter(
            "gendurable.outcomes",
            unit="{outcome}",
            description="Outcomes committed (goto, park, retry, done, failed) or dropped (stale)",
        )
        self.signals = meter.create_counter(
            "gendurable.signals", unit="{signal}", description="Signals delivered"
        )
        self.throttles = meter.create_counter(
            "gendurable.throttles",
            unit="{throttle}",
            description="Instances held back by a rate limit",
        )
        self.rescues = meter.create_counter(
            "gendurable.rescues",
            unit="{instance}",
            description="Expired claims the reaper returned to their queue (or failed)",
        )
        self.await_timeouts = meter.create_counter(
            "gendurable.await.timeouts",
            unit="{instance}",
            description="Awaits woken by their deadline",
        )
        self.claim_latency = meter.create_histogram(
            "gendurable.claim.latency",
            unit="s",
            description="How long a due instance waited before a worker claimed it",
        )
        self.maintenance_runs = meter.create_counter(
            "gendurable.maintenance.runs",
            unit="{run}",
            description="Runs of background tasks (reaper, collector...), by task and error",
        )
        self.maintenance_duration = meter.create_histogram(
            "gendurable.maintenance.duration",
            unit="s",
            description="How long background task runs took",
        )
        self.maintenance_rows = meter.create_counter(
            "gendurable.maintenance.rows",
            unit="{row}",
            description="Rows background task runs touched",
        )
        self._open: dict[_OpenKey, tuple[trace.Span, object]] = {}
        self._routes: dict[Event, _Route] = {
            events.STEP_START: lambda _, m, d: self._step_started(m, d),
            events.STEP_STOP: self._step_ended,
            events.STEP_EXCEPTION: self._step_ended,
            events.OUTCOME_STALE: lambda _, m, d: self.outcomes.add(
                1, _attributes(d, outcome="stale")
            ),
            events.SIGNAL_DELIVERED: lambda _, m, d: self.signals.add(
                1, _attributes(d, signal=d.get("name"))
            ),
            events.RATE_LIMIT_THROTTLED: lambda _, m, d: self.throttles.add(
                int(m.get("denied", 0)), _attributes(d, rate_limit=d.get("limit"))
            ),
            events.REAPER_RESCUED: lambda _, m, d: self.rescues.add(1, _attributes(d)),
            events.AWAIT_TIMEOUT: lambda _, m, d: self.await_timeouts.add(1, _attributes(d)),
            events.MAINTENANCE_RUN: self._maintenance_ran,
            events.MAINTENANCE_EXCEPTION: self._maintenance_ran,
        }
        engine.telemetry.attach(HANDLER_NAME, self.handle)
        engine.telemetry.tracer = self.trace_context

    def uninstrument(self) -> None:
        """Detach from the engine: no more spans, metrics or stored trace contexts."""
        self.engine.telemetry.detach(HANDLER_NAME)
        if self.engine.telemetry.tracer == self.trace_context:
            self.engine.telemetry.tracer = None
        for span, _ in self._open.values():
            span.set_status(Status(StatusCode.ERROR, "instrumentation removed mid-step"))
            span.end()
        self._open.clear()

    # -- the engine asks: what to store with a start or a signal -------------------------

    def trace_context(self, operation: str, metadata: Mapping[str, Any]) -> str | None:
        """Open and close a PRODUCER span for `operation`; its traceparent, to store."""
        workflow = str(metadata.get("workflow", ""))
        attributes = _attributes(metadata, instance=True, signal=metadata.get("signal"))
        span = self.tracer.start_span(
            f"{operation} {workflow}".strip(), kind=SpanKind.PRODUCER, attributes=attributes
        )
        carrier: dict[str, str] = {}
        _propagator.inject(carrier, context=trace.set_span_in_context(span))
        span.end()
        return carrier.get("traceparent")

    # -- the engine tells: telemetry events -----------------------------------------------

    def handle(
        self, event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> None:
        """The telemetry handler: spans for steps and busy background runs, metrics for the
        events `routes` names (the others, `UNMAPPED`, are not turned into anything)."""
        route = self._routes.get(event)
        if route is not None:
            route(event, measurements, metadata)

    @property
    def routes(self) -> frozenset[Event]:
        """The events this instrumentation turns into spans or metrics."""
        return frozenset(self._routes)

    def _step_started(self, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        key = (metadata.get("id"), metadata.get("step"), metadata.get("attempt"))
        abandoned = self._open.pop(key, None)
        if abandoned is not None:  # the earlier run was cancelled mid-step (engine stop)
            abandoned[0].set_status(Status(StatusCode.ERROR, "step did not finish"))
            abandoned[0].end()
        parent = _context(metadata.get("trace_context"))
        links = [
            Link(trace.get_current_span(_context(tc)).get_span_context())
            for tc in metadata.get("signal_trace_contexts") or ()
        ]
        span = self.tracer.start_span(
            f"{metadata.get('workflow')} {metadata.get('step')}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=_attributes(metadata, attempt=metadata.get("attempt"), instance=True),
            links=[link for link in links if link.context.is_valid],
        )
        # The step runs in this task, after this call: its own spans become children.
        token = otel_context.attach(trace.set_span_in_context(span))
        self._open[key] = (span, token)
        waited = measurements.get("waited")
        if waited is not None:
            self.claim_latency.record(float(waited), _attributes(metadata))

    def _step_ended(
        self, event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> None:
        outcome = metadata.get("outcome")
        failed = event == events.STEP_EXCEPTION
        opened = self._open.pop(
            (metadata.get("id"), metadata.get("step"), metadata.get("attempt")), None
        )
        if opened is not None:
            span, token = opened
            if outcome is not None:
                span.set_attribute("gendurable.outcome", str(outcome))
            if failed:
                _record_error(span, metadata)
            span.end()
            try:
                otel_context.detach(token)  # type: ignore[arg-type]
            except Exception:  # pragma: no cover - a context from another task
                _log.debug("could not detach the step's context", exc_info=True)
        result = _attributes(metadata, outcome=outcome, error=failed)
        self.steps.add(1, result)
        duration = measurements.get("duration")
        if duration is not None:
            self.step_duration.record(float(duration), result)
        if outcome is not None:
            self.outcomes.add(1, _attributes(metadata, outcome=outcome))

    def _maintenance_ran(
        self, event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> None:
        failed = event == events.MAINTENANCE_EXCEPTION
        task = metadata.get("task")
        duration = float(measurements.get("duration", 0.0))
        rows = int(measurements.get("rows", 0))
        result = _attributes(metadata, task=task, error=failed)
        self.maintenance_runs.add(1, result)
        self.maintenance_duration.record(duration, result)
        if rows:
            self.maintenance_rows.add(rows, _attributes(metadata, task=task))
        if not failed and not rows:
            # The poller and the heartbeats run every few seconds: a trace for each idle run
            # would bury the traces of work. The counter above still counts them.
            return
        end = time.time_ns()
        span = self.tracer.start_span(
            f"gendurable {task}",
            context=otel_context.Context(),  # a root span: no step or request caused it
            kind=SpanKind.INTERNAL,
            attributes=_attributes(metadata, task=task, rows=rows),
            start_time=end - int(duration * 1e9),
        )
        if failed:
            _record_error(span, metadata)
        span.end(end_time=end)


_Route = Callable[[Event, Mapping[str, Any], Mapping[str, Any]], None]

UNMAPPED: frozenset[Event] = frozenset(
    {
        # Reported by the engine's log at WARNING already, with what to do about it.
        events.WORKFLOW_UNKNOWN,
        events.RATE_LIMIT_UNKNOWN,
        events.LOOP_BLOCKED,
        # Counted by `gendurable.maintenance.rows` (tasks `collector` and `reclaim`).
        events.GC_SWEPT,
        events.SCHEDULER_RECLAIMED,
        # Per claim, already visible as `gendurable.claim.latency` growing.
        events.CONCURRENCY_CONTENDED,
        # An operator's acts and a client's resends: rare, and no metric of them says more
        # than the event (attach `gd.logging_handler()` to log them).
        events.SIGNAL_DUPLICATE,
        events.QUEUE_PAUSED,
        events.QUEUE_RESUMED,
        # Schedules: the instances a tick starts are traced as they run; the ticks started
        # are counted by `gendurable.maintenance.rows` (task `schedules`); skipped and failed
        # ticks and disabled schedules are in the engine's log.
        events.SCHEDULE_STARTED,
        events.SCHEDULE_SKIPPED,
        events.SCHEDULE_FAILED,
        events.SCHEDULE_DISABLED,
    }
)
"""The events `Instrumentation` does not turn into spans or metrics, and why."""


def instrument(
    engine: Engine,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
) -> Instrumentation:
    """Trace and measure `engine` with OpenTelemetry (the global providers unless given).

    Call it before the engine starts or signals anything whose trace should be kept;
    instrumenting an engine twice raises `ValueError`.
    """
    if engine.telemetry.tracer is not None:
        raise ValueError(f"engine {engine.name!r} is already instrumented")
    return Instrumentation(engine, tracer_provider, meter_provider)


_ATTRIBUTES = (
    ("workflow", "gendurable.workflow"),
    ("step", "gendurable.step"),
    ("queue", "gendurable.queue"),
    ("status", "gendurable.status"),
    ("rate_limit", "gendurable.rate_limit"),
    ("partition", "gendurable.partition"),
)


def _attributes(
    metadata: Mapping[str, Any], *, instance: bool = False, **extra: Any
) -> dict[str, Any]:
    """OpenTelemetry attributes from event metadata: bounded ones for metrics; with
    `instance`, also the instance's id and key (spans only: unbounded cardinality)."""
    out: dict[str, Any] = {
        name: str(metadata[k]) for k, name in _ATTRIBUTES if metadata.get(k) is not None
    }
    if instance:
        if metadata.get("id") is not None:
            out["gendurable.instance.id"] = int(metadata["id"])
        if metadata.get("key") is not None:
            out["gendurable.instance.key"] = str(metadata["key"])
    for name, value in extra.items():
        if value is None:
            continue
        out[f"gendurable.{name}"] = value if isinstance(value, bool | int | float) else str(value)
    return out


def _record_error(span: trace.Span, metadata: Mapping[str, Any]) -> None:
    """Mark `span` failed with the event's `error`: the exception, and its type and message
    as the status."""
    error = metadata.get("error")
    if isinstance(error, BaseException):
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def _context(traceparent: Any) -> otel_context.Context | None:
    """The context a stored traceparent stands for; None (a new trace) without one."""
    if not isinstance(traceparent, str) or not traceparent:
        return None
    return _propagator.extract({"traceparent": traceparent})
