"""What a step returns: the outcome values and their constructors.

An outcome is a plain frozen value. The engine's pure `decide()` turns it into one guarded
database statement; nothing here touches the database.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeAlias

import msgspec

StepRef: TypeAlias = "str | Callable[..., Any]"


def step_name(ref: StepRef) -> str:
    """Return the step name a `goto`/`spawn` target refers to (a name, method or function)."""
    if isinstance(ref, str):
        return ref
    name = getattr(ref, "__name__", None)
    if not isinstance(name, str):
        raise TypeError(f"a step target must be a step method or its name, got {ref!r}")
    return name


@dataclass(frozen=True, slots=True)
class Goto:
    """Commit the state and move to `step` (attempt resets to 0)."""

    step: str
    state: Any = None
    delay: timedelta | None = None
    rate_limit: str | None = None
    weight: int | None = None
    partition: str | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """Redo the current step after `delay` with `attempt + 1`."""

    delay: timedelta | None = None
    state: Any = None


@dataclass(frozen=True, slots=True)
class Reawait:
    """Park the awaiting step again, keeping the signals already seen."""

    state: Any = None


class ChildEntry(msgspec.Struct, frozen=True):
    """An instance to insert: built by `Flow.new(...)` for `spawn` or `start_many`.

    `scope` lists the statuses in which the instance keeps its key reserved (default: the
    live ones), as for `Flow.start(scope=...)`. A frozen value (a Struct: a batch of
    `start_many` builds one per entry, and a Struct is made about ten times faster than a
    frozen dataclass).
    """

    workflow: str
    key: str | None
    state: Any
    queue: str | None = None
    priority: int | None = None
    delay: timedelta | None = None
    concurrency_key: str | None = None
    scope: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Spawn:
    """Insert children, park until all are terminal, then run `then`."""

    children: tuple[ChildEntry, ...]
    then: str
    state: Any = None


@dataclass(frozen=True, slots=True)
class Done:
    """Terminal success with an optional result."""

    result: Any = None


@dataclass(frozen=True, slots=True)
class Stop:
    """Terminal failure chosen by the workflow."""

    reason: str


Outcome: TypeAlias = Goto | Retry | Reawait | Spawn | Done | Stop
OUTCOME_TYPES: tuple[type, ...] = (Goto, Retry, Reawait, Spawn, Done, Stop)


def goto(
    step: StepRef,
    state: Any = None,
    *,
    delay: timedelta | None = None,
    rate_limit: str | None = None,
    weight: int | None = None,
    partition: str | None = None,
) -> Goto:
    """Move to `step`, committing `state` (or the mutated state when None).

    `rate_limit`, `weight` and `partition` override, for this move only, the rate limit the
    target step declares: the move takes `weight` tokens from the bucket (limit, partition).
    """
    return Goto(step_name(step), state, delay, rate_limit, weight, partition)


def retry(delay: timedelta | None = None, state: Any = None) -> Retry:
    """Redo this step after `delay` (default: the workflow's backoff), counting an attempt."""
    return Retry(delay, state)


def reawait(state: Any = None) -> Reawait:
    """In an awaiting step: park again and wake only on a new matching signal or the deadline."""
    return Reawait(state)


def spawn(children: Sequence[ChildEntry], then: StepRef, state: Any = None) -> Spawn:
    """Start `children`, wait until every one is terminal, then run `then` with `ctx.children`.

    The children (entries from `Flow.new(...)` or `job.new(...)`, any mix of workflows this
    engine serves) are inserted in the same transaction as this outcome. A failed child does
    not fail the parent: `then` sees every child's status, result and error, in spawn order.
    A child key held by a live instance raises `DuplicateKey` on the error path, and nothing
    of the spawn is inserted.
    """
    return Spawn(tuple(children), step_name(then), state)


def done(result: Any = None) -> Done:
    """Finish successfully, storing `result` (typed when the workflow declares `Result`)."""
    return Done(result)


def stop(reason: str) -> Stop:
    """Finish as failed, for a reason the workflow chose."""
    return Stop(reason)
