"""A claimed instance: what the scheduler hands the executor."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import msgspec

from ..entries import NO_LIMIT, StepLimit


class ClaimSource(Protocol):
    """A row that comes back claimed: from the claim (`PickedRow`), a start written claimed
    (`InsertedInstance`) or a signal's local wake-up (`WokenInstance`)."""

    @property
    def id(self) -> int: ...
    @property
    def workflow(self) -> str: ...
    @property
    def step(self) -> str: ...
    @property
    def state(self) -> bytes | None: ...
    @property
    def attempt(self) -> int: ...
    @property
    def priority(self) -> int: ...
    @property
    def key(self) -> str | None: ...
    @property
    def queue(self) -> str: ...
    @property
    def timed_out(self) -> bool: ...
    @property
    def await_seen(self) -> int: ...
    @property
    def rate_limit(self) -> str | None: ...
    @property
    def rate_partition(self) -> str | None: ...
    @property
    def weight(self) -> int: ...
    @property
    def trace_context(self) -> str | None: ...
    @property
    def waited(self) -> float: ...
    @property
    def state_version(self) -> int: ...


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


class Claimed(msgspec.Struct, frozen=True, gc=False):
    """One row this worker owns while `locked_by` holds it. A frozen msgspec Struct (one is
    built for every claimed row and every chained step): its `__init__` costs a tenth of a
    frozen dataclass's; `msgspec.structs.replace` copies it with changes."""

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
        row: ClaimSource,
        locked_by: str,
        inbox: tuple[StoredSignal, ...] = (),
        children: tuple[StoredChild, ...] = (),
    ) -> Claimed:
        """Build from a row that came back claimed under `locked_by`."""
        return cls(
            id=row.id,
            workflow=row.workflow,
            step=row.step,
            state=row.state,
            attempt=row.attempt,
            priority=row.priority,
            key=row.key,
            queue=row.queue,
            timed_out=row.timed_out,
            await_seen=row.await_seen,
            locked_by=locked_by,
            inbox=inbox,
            children=children,
            limit=StepLimit(row.rate_limit, row.rate_partition, row.weight)
            if row.rate_limit is not None
            else NO_LIMIT,
            trace_context=row.trace_context,
            waited=row.waited,
            state_version=row.state_version,
        )

    def moved(self, step: str, state: bytes, state_version: int) -> Claimed:
        """The same claim after a kept-claim move to `step` (its state at `state_version`):
        a fresh attempt with nothing seen, its inbox, children and limit left behind."""
        return msgspec.structs.replace(
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
            state_version=state_version,
        )
