"""A claimed instance: what the scheduler hands the executor."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from .entries import NO_LIMIT, StepLimit


@dataclass(frozen=True, slots=True)
class StoredSignal:
    """A signal as loaded with a claim; its payload is still JSON bytes."""

    id: int
    name: str
    payload: bytes | None
    received_at: datetime
    trace_context: str | None = None


@dataclass(frozen=True, slots=True)
class StoredChild:
    """A child of the claim's latest spawn; its result and error are still JSON bytes."""

    id: int
    key: str | None
    workflow: str
    status: str
    result: bytes | None
    error: bytes | None


@dataclass(frozen=True, slots=True)
class Claimed:
    """One row this worker owns while `locked_by` holds it."""

    id: int
    workflow: str
    step: str
    state: bytes | None
    attempt: int
    priority: int
    key: str | None
    queue: str
    timed_out: bool
    await_seen: int
    locked_by: str
    inbox: tuple[StoredSignal, ...] = ()
    children: tuple[StoredChild, ...] = ()
    limit: StepLimit = NO_LIMIT
    trace_context: str | None = None
    waited: float | None = None
    """Seconds the row was due before this claim took it (None for a chained step)."""
    state_version: int = 1
    """The workflow version `state` was written by (the executor upgrades older ones)."""

    @classmethod
    def from_row(
        cls,
        row: Any,
        locked_by: str,
        inbox: tuple[StoredSignal, ...] = (),
        children: tuple[StoredChild, ...] = (),
    ) -> Claimed:
        """Build from an `instance_claim` row."""
        return cls(
            id=row["id"],
            workflow=row["workflow"],
            step=row["step"],
            state=row["state"],
            attempt=row["attempt"],
            priority=row["priority"],
            key=row["key"],
            queue=row["queue"],
            timed_out=row["timed_out"],
            await_seen=row["await_seen"],
            locked_by=locked_by,
            inbox=inbox,
            children=children,
            limit=StepLimit(row["rate_limit"], row["rate_partition"], row["weight"])
            if row["rate_limit"] is not None
            else NO_LIMIT,
            trace_context=row["trace_context"],
            waited=row["waited"],
            state_version=row["state_version"],
        )

    def moved(self, step: str, state: bytes) -> Claimed:
        """The same claim after a kept-claim move to `step`."""
        return replace(
            self,
            step=step,
            state=state,
            attempt=0,
            timed_out=False,
            await_seen=0,
            inbox=(),
            children=(),
            limit=NO_LIMIT,
            waited=None,
        )
