"""The one error tree of gendurable.

```
GenDurableError
├── DefinitionError        a workflow or job definition is invalid (raised at import)
├── ConfigError            an engine, DSN, schema name or option is invalid
├── ValidationError        a state, payload or result does not match its declared type
├── NoTarget               a signal, cancel or lookup found no live instance
├── DuplicateKey           a start (on_conflict="raise") or a spawn met a key held already
├── IdempotencyConflict    a signal's idempotency key stored another signal already
├── NoEngine               no running engine serves a workflow (or several do: pass engine=)
├── WorkflowFailed         result() of an instance that ended failed or cancelled
├── ResultTimeout          result(timeout=) passed before the instance ended
├── StepTimeout            a step ran past its @step(timeout=...)
├── StateUpgradeError      a stored state cannot be brought to this code's version
└── EngineError            the engine could not do what was asked (stopped, not started)
```

Every error a user may catch derives from `GenDurableError`. The one warning,
`DefinitionWarning` (a `UserWarning`), says a definition compiled with something missing.
"""

from __future__ import annotations

from typing import Any


class GenDurableError(Exception):
    """Root of every error raised by gendurable."""


class DefinitionError(GenDurableError):
    """A workflow or job definition is invalid; raised when the class is decorated."""


class DefinitionWarning(UserWarning):
    """A workflow compiled, but with something missing: issued when the class is decorated.

    Today: a step whose source cannot be read (defined through `exec`, on stdin, in a plain
    REPL) and that declares no `@gd.step(to=...)`, so its edges are unknown and the diagram
    and the generated docs show none. One warning per workflow names every such step.
    """


class ConfigError(GenDurableError):
    """An engine option, DSN or schema name is invalid; raised before anything is written."""


class ValidationError(GenDurableError):
    """A state, payload or result does not match its declared type; nothing was written."""


class NoTarget(GenDurableError):
    """No live instance matches the key or id; nothing was stored."""


class DuplicateKey(GenDurableError):
    """A key is held already: `start(..., on_conflict="raise")`, or a `spawn` child's key.

    `existing_id` is the instance holding it, when known.
    """

    def __init__(self, message: str, *, existing_id: int | None = None) -> None:
        super().__init__(message)
        self.existing_id = existing_id


class IdempotencyConflict(GenDurableError):
    """A signal's idempotency key already stored a different signal (another name or
    payload) for the same instance; nothing was stored.

    `signal_id` is the id of the signal the key stored.
    """

    def __init__(self, message: str, *, signal_id: int) -> None:
        super().__init__(message)
        self.signal_id = signal_id


class NoEngine(GenDurableError):
    """No running engine serves the workflow, or several do and `engine=` was not given."""


class EngineError(GenDurableError):
    """The engine cannot do what was asked in its current state."""


class ResultTimeout(GenDurableError, TimeoutError):
    """`result(timeout=...)` passed before the instance reached a terminal status."""


class StepTimeout(GenDurableError, TimeoutError):
    """A step ran longer than its `@gd.step(timeout=...)`; routed to the error path."""


class StateUpgradeError(GenDurableError):
    """A stored state cannot be brought to the workflow's current version: it was written
    by a newer version, no `@gd.upgrade` covers its version, or an upgrade raised.

    A claimed instance goes to the error path with it (the step does not run); `get()`
    raises it. `stored_version` and `version` are the row's version and this code's.
    """

    def __init__(self, message: str, *, stored_version: int, version: int) -> None:
        super().__init__(message)
        self.stored_version = stored_version
        self.version = version


class WorkflowFailed(GenDurableError):
    """The instance ended `failed` or `cancelled`; `status` and `error` say how."""

    def __init__(self, message: str, *, status: str, error: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


__all__ = [
    "ConfigError",
    "DefinitionError",
    "DefinitionWarning",
    "DuplicateKey",
    "EngineError",
    "GenDurableError",
    "NoEngine",
    "NoTarget",
    "ResultTimeout",
    "StateUpgradeError",
    "StepTimeout",
    "ValidationError",
    "WorkflowFailed",
]
