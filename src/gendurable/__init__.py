"""gendurable: durable workflows as finite-state machines whose state lives in PostgreSQL.

The public API is what `__all__` lists; everything else is private and may change.
"""

from .blocked import BlockedBy
from .clock import Clock, ManualClock, SystemClock
from .context import ChildResult, Context, Signal
from .db.migrator import migrate
from .dsl import Job, Workflow, await_signals, job, step, upgrade, workflow
from .engine.engine import Engine
from .errors import (
    ConfigError,
    DefinitionError,
    DefinitionWarning,
    DuplicateKey,
    EngineError,
    GenDurableError,
    IdempotencyConflict,
    NoEngine,
    NoTarget,
    ResultTimeout,
    StateUpgradeError,
    StepTimeout,
    ValidationError,
    WorkflowFailed,
)
from .limit import Backoff, Limit
from .outcome import Outcome, done, goto, reawait, retry, spawn, stop
from .records import Handle, InstanceInfo, QueuePause
from .schedule import Schedule
from .spec import WorkflowSpec
from .telemetry import Telemetry, logging_handler
from .version import __version__

__all__ = [
    "Backoff",
    "BlockedBy",
    "ChildResult",
    "Clock",
    "ConfigError",
    "Context",
    "DefinitionError",
    "DefinitionWarning",
    "DuplicateKey",
    "Engine",
    "EngineError",
    "GenDurableError",
    "Handle",
    "IdempotencyConflict",
    "InstanceInfo",
    "Job",
    "Limit",
    "ManualClock",
    "NoEngine",
    "NoTarget",
    "Outcome",
    "QueuePause",
    "ResultTimeout",
    "Schedule",
    "Signal",
    "StateUpgradeError",
    "StepTimeout",
    "SystemClock",
    "Telemetry",
    "ValidationError",
    "Workflow",
    "WorkflowFailed",
    "WorkflowSpec",
    "__version__",
    "await_signals",
    "done",
    "goto",
    "job",
    "logging_handler",
    "migrate",
    "reawait",
    "retry",
    "spawn",
    "step",
    "stop",
    "upgrade",
    "workflow",
]
