"""Telemetry: named events with measurements and metadata, delivered to attached handlers.

Events are tuples of names, each defined once in `gendurable.events` with the keys it
carries (`events.STEP_STOP` is `step.stop`). A handler that raises is detached after being
logged, so a broken handler never breaks the engine.
Every engine has `failure_handler()` attached as `FAILURES`: each step failure is one
WARNING line on the `gendurable.steps` logger.

Trace context: a `tracer` (set by `gendurable.otel.instrument`) is asked for a context to
store with each start and signal; the steps those cause get it back in the metadata of
`step.start` (`trace_context`, `signal_trace_contexts`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .attempts import attempt_of
from .durations import format_duration
from .events import MAINTENANCE_EXCEPTION, MAINTENANCE_RUN, STEP_EXCEPTION, Event, dotted

Handler = Callable[[Event, Mapping[str, Any], Mapping[str, Any]], None]
Tracer = Callable[[str, Mapping[str, Any]], "str | None"]
"""`tracer(operation, metadata)`: the trace context to store with a start or signal, or None."""

_log = logging.getLogger("gendurable.telemetry")


@dataclass
class _Attached:
    handler: Handler
    events: frozenset[Event] | None


@dataclass
class Telemetry:
    """The event bus of one engine: `attach` handlers, the engine `emit`s."""

    _handlers: dict[str, _Attached] = field(default_factory=dict)
    tracer: Tracer | None = None

    def attach(self, name: str, handler: Handler, events: Iterable[Event] | None = None) -> None:
        """Call `handler(event, measurements, metadata)` for `events` (all when None)."""
        if name in self._handlers:
            raise ValueError(f"a telemetry handler named {name!r} is already attached")
        self._handlers[name] = _Attached(handler, frozenset(events) if events else None)

    def detach(self, name: str) -> None:
        """Remove the handler attached under `name` (no error when absent)."""
        self._handlers.pop(name, None)

    def emit(
        self, event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> None:
        """Deliver one event to every handler that wants it."""
        for name, attached in list(self._handlers.items()):
            if attached.events is not None and event not in attached.events:
                continue
            try:
                attached.handler(event, measurements, metadata)
            except Exception:
                _log.exception("telemetry handler %r failed; detaching it", name)
                self._handlers.pop(name, None)

    def trace_context(self, operation: str, metadata: Mapping[str, Any]) -> str | None:
        """The context to store with a row `operation` ("start", "signal") writes, or None.

        None without a `tracer`, and when the tracer fails (logged): tracing never stops a
        start or a signal.
        """
        if self.tracer is None:
            return None
        try:
            return self.tracer(operation, metadata)
        except Exception:
            _log.exception("telemetry tracer failed for %s; storing no trace context", operation)
            return None


def logging_handler(logger: logging.Logger | None = None, level: int = logging.INFO) -> Handler:
    """A handler that logs each event as one line: `step.stop workflow=... duration=...`.

    At `level`, except background runs: `maintenance.exception` (a failed run) at WARNING at
    least, `maintenance.run` at DEBUG (routine: the poller runs every second).
    """
    target = logger or logging.getLogger("gendurable")

    def handle(event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        at = _maintenance_level(event, level)
        if not target.isEnabledFor(at):
            return
        fields = " ".join(f"{k}={_field(v)}" for k, v in {**metadata, **measurements}.items())
        target.log(at, "%s %s", dotted(event), fields)

    return handle


def _maintenance_level(event: Event, level: int) -> int:
    if event == MAINTENANCE_EXCEPTION:
        return max(level, logging.WARNING)
    if event == MAINTENANCE_RUN:
        return min(level, logging.DEBUG)
    return level


def _field(value: Any) -> str:
    """A value on one log line: an exception as `Type: message`, newlines escaped."""
    text = f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else str(value)
    return text.replace("\n", "\\n")


FAILURES = "gendurable.failures"
"""The name under which every engine attaches `failure_handler()` (detach it to silence)."""

STEP_LOGGER = "gendurable.steps"
"""The logger of step failures."""


def failure_handler(logger: logging.Logger | None = None) -> Handler:
    """A handler of `step.exception` that logs each step failure as one WARNING line.

    The line names the workflow, key, instance id, step, attempt (`2 of 5`, counted from 1
    against the step's limit), the error's type and message, and what follows: `retrying in
    4.0s`, `the instance failed`, or the outcome `handle()` chose instead. When the logger
    is enabled for DEBUG, the line carries the traceback too.
    """
    target = logger or logging.getLogger(STEP_LOGGER)

    def handle(event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        if event != STEP_EXCEPTION or not target.isEnabledFor(logging.WARNING):
            return
        error = metadata.get("error")
        outcome = metadata.get("outcome")
        if outcome == "retry" and "retry_in" in measurements:
            retry_in = timedelta(seconds=measurements["retry_in"])
            then = f"retrying in {format_duration(retry_in, approximate=True)}"
        elif outcome == "failed":
            then = "the instance failed"
        else:
            then = f"handle() chose {outcome}"
        key = metadata.get("key")
        target.warning(
            "%s %s (id %s): step %s failed on attempt %s: %s: %s; %s",
            metadata.get("workflow"),
            "(no key)" if key is None else repr(key),
            metadata.get("id"),
            metadata.get("step"),
            attempt_of(int(metadata.get("attempt") or 0), metadata.get("max_attempts")),
            type(error).__qualname__,
            " ".join(str(error).split())[:500],
            then,
            exc_info=error if target.isEnabledFor(logging.DEBUG) else None,
        )

    return handle
