"""Values the API returns: `Handle` from start, `InstanceInfo` from get, `QueuePause` from
`Engine.paused_queues`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .blocked import BlockedBy

LIVE_STATUSES: tuple[str, ...] = ("available", "executing", "awaiting", "waiting")
TERMINAL_STATUSES: tuple[str, ...] = ("done", "failed", "cancelled")
ALL_STATUSES: tuple[str, ...] = LIVE_STATUSES + TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class Handle:
    """A started instance: its id, key, and whether this call created it."""

    id: int
    key: str | None
    created: bool


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """A snapshot of one instance as stored; `state` and `result` are decoded when typed.

    `blocked_by` says why a live instance that is not executing waits (see `BlockedBy`);
    it is None while the instance executes and once it is terminal.
    """

    id: int
    workflow: str
    key: str | None
    status: str
    step: str
    attempt: int
    state: Any
    result: Any
    error: Any
    queue: str
    priority: int
    run_at: datetime
    inserted_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    blocked_by: BlockedBy | None = None

    @property
    def terminal(self) -> bool:
        """True once the instance is done, failed or cancelled."""
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class QueuePause:
    """A paused queue: since when, and who paused it (an engine's node id, `gendurable
    pause`, the dashboard, or what `Engine.pause(by=...)` was given)."""

    queue: str
    paused_at: datetime
    paused_by: str
