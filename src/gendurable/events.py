"""Every telemetry event the engine emits: its name, and the keys it carries.

An event is a tuple of names (`("step", "stop")`, written `step.stop` in logs and docs).
Handlers receive it as `handler(event, measurements, metadata)`; attach one to some events only
with `engine.telemetry.attach("name", handler, events=[events.OUTCOME_STALE])`.

`CATALOGUE` holds one `EventSpec` per event: the measurements (numbers) and metadata keys it
may carry, and what it reports. Emitters, the logging adapter, `gendurable.otel` and the
docs' event table (The engine > Telemetry) all read their names from here; a test keeps them
equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

Event = tuple[str, ...]
"""An event name: `("step", "stop")`."""

STEP_START: Event = ("step", "start")
STEP_STOP: Event = ("step", "stop")
STEP_EXCEPTION: Event = ("step", "exception")
OUTCOME_STALE: Event = ("outcome", "stale")
AWAIT_TIMEOUT: Event = ("await", "timeout")
SIGNAL_DELIVERED: Event = ("signal", "delivered")
SIGNAL_DUPLICATE: Event = ("signal", "duplicate")
QUEUE_PAUSED: Event = ("queue", "paused")
QUEUE_RESUMED: Event = ("queue", "resumed")
REAPER_RESCUED: Event = ("reaper", "rescued")
SCHEDULER_RECLAIMED: Event = ("scheduler", "reclaimed")
WORKFLOW_UNKNOWN: Event = ("workflow", "unknown")
GC_SWEPT: Event = ("gc", "swept")
RATE_LIMIT_THROTTLED: Event = ("rate_limit", "throttled")
RATE_LIMIT_UNKNOWN: Event = ("rate_limit", "unknown")
CONCURRENCY_CONTENDED: Event = ("concurrency", "contended")
LOOP_BLOCKED: Event = ("loop", "blocked")
MAINTENANCE_RUN: Event = ("maintenance", "run")
MAINTENANCE_EXCEPTION: Event = ("maintenance", "exception")
SCHEDULE_STARTED: Event = ("schedule", "started")
SCHEDULE_SKIPPED: Event = ("schedule", "skipped")
SCHEDULE_FAILED: Event = ("schedule", "failed")
SCHEDULE_DISABLED: Event = ("schedule", "disabled")


@dataclass(frozen=True, slots=True)
class EventSpec:
    """What one event carries: the keys it may have, and what it reports."""

    measurements: tuple[str, ...]
    metadata: tuple[str, ...]
    doc: str


_STEP = ("id", "workflow", "step", "attempt", "key", "queue")
_STEP_START = (*_STEP, "trace_context", "signal_trace_contexts")
_LIMITED = ("queue", "limit", "partition", "first_id", "retry_at")

CATALOGUE: Mapping[Event, EventSpec] = MappingProxyType(
    {
        STEP_START: EventSpec(("waited",), _STEP_START, "a step run begins"),
        STEP_STOP: EventSpec(
            ("duration",), (*_STEP_START, "decision", "outcome"), "a step run returned"
        ),
        STEP_EXCEPTION: EventSpec(
            ("duration",),
            (*_STEP_START, "error", "decision", "outcome"),
            "a step run raised (or timed out)",
        ),
        OUTCOME_STALE: EventSpec(
            (),
            ("id", "workflow", "step", "locked_by", "decision"),
            "a commit was dropped: the claim was lost",
        ),
        AWAIT_TIMEOUT: EventSpec(
            (), ("id", "workflow", "step", "key", "queue"), "an await was woken by its deadline"
        ),
        SIGNAL_DELIVERED: EventSpec(
            (), ("workflow", "target", "name", "signal_id"), "this engine sent a signal"
        ),
        SIGNAL_DUPLICATE: EventSpec(
            (),
            ("workflow", "target", "name", "signal_id", "idempotency_key"),
            "this engine resent a signal: its idempotency key had stored it already",
        ),
        QUEUE_PAUSED: EventSpec((), ("queue", "by"), "this engine paused a queue"),
        QUEUE_RESUMED: EventSpec((), ("queue",), "this engine resumed a paused queue"),
        REAPER_RESCUED: EventSpec(
            ("attempt",),
            ("id", "workflow", "step", "queue", "status"),
            "the reaper returned an expired claim (or failed its instance)",
        ),
        SCHEDULER_RECLAIMED: EventSpec(
            ("count",),
            ("queue", "locked_by"),
            "a starting scheduler released its dead predecessor's claims",
        ),
        WORKFLOW_UNKNOWN: EventSpec(
            ("count",),
            ("queue", "workflow", "step", "first_id"),
            "due rows this deploy cannot run",
        ),
        GC_SWEPT: EventSpec(
            ("instances", "buckets", "configs"), (), "a collector run deleted rows"
        ),
        RATE_LIMIT_THROTTLED: EventSpec(
            ("granted", "denied"), _LIMITED, "a rate limit held rows of a claim back"
        ),
        RATE_LIMIT_UNKNOWN: EventSpec(
            ("count",), _LIMITED, "rows wait on a rate limit no engine configures"
        ),
        CONCURRENCY_CONTENDED: EventSpec(
            ("count",), ("queue",), "a claim took concurrency keys with more rows behind them"
        ),
        LOOP_BLOCKED: EventSpec(
            ("duration",),
            ("engine", "workflow", "step", "id", "key", "where"),
            "a step blocked the event loop",
        ),
        MAINTENANCE_RUN: EventSpec(
            ("duration", "rows"), ("task", "queue"), "a background task ran once"
        ),
        MAINTENANCE_EXCEPTION: EventSpec(
            ("duration",), ("task", "queue", "error"), "a background task's run failed"
        ),
        SCHEDULE_STARTED: EventSpec(
            ("late",),
            ("schedule", "workflow", "tick", "key", "id"),
            "this engine started the instance of a schedule's tick",
        ),
        SCHEDULE_SKIPPED: EventSpec(
            ("count",),
            ("schedule", "workflow", "since", "until", "missed"),
            "ticks that came due while no engine ran the schedule were not started",
        ),
        SCHEDULE_FAILED: EventSpec(
            (),
            ("schedule", "workflow", "tick", "key", "error"),
            "a tick started nothing: its state could not be made",
        ),
        SCHEDULE_DISABLED: EventSpec(
            (),
            ("schedule", "workflow", "refreshed_at"),
            "a schedule no running engine declares any more was disabled",
        ),
    }
)
"""Every event, with what it may carry."""


def dotted(event: Event) -> str:
    """The event's name as logs and docs write it: `step.stop`."""
    return ".".join(event)
