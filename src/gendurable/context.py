"""What a running step can see: `gd.Context` and the signals in it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Signal:
    """A signal in an instance's inbox; `payload` is decoded to its declared type."""

    id: int
    name: str
    payload: Any
    received_at: datetime


@dataclass(frozen=True, slots=True)
class ChildResult:
    """A finished child of a `spawn`: its key, terminal status and result or error."""

    id: int
    key: str | None
    workflow: str
    status: str
    result: Any
    error: Any


@dataclass(frozen=True, slots=True)
class Context:
    """The facts of one step execution.

    `awaited` holds the matched signals in arrival order (accumulated across `reawait`),
    `inbox` every pending signal, `timed_out` whether the await deadline woke the step.
    `engine` is the engine running the step, to start or signal other workflows.
    """

    id: int
    key: str | None
    workflow: str
    step: str
    attempt: int
    queue: str
    priority: int
    awaited: tuple[Signal, ...] = ()
    inbox: tuple[Signal, ...] = ()
    timed_out: bool = False
    children: tuple[ChildResult, ...] = ()
    engine: Any = field(default=None, repr=False, compare=False)
