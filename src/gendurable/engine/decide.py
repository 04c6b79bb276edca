"""The transition rules, as one pure function: what a step's result commits.

`decide()` takes the compiled spec, the step that ran, its attempt, the (mutated) state and
what the step produced (an outcome or an exception) and returns a `Decision` value. It does
no I/O; the committer applies the decision in one guarded statement. Every rule is tested as
a table in `tests/engine/test_decide.py`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeAlias

from ..codec import DEFAULT_MAX_PAYLOAD_BYTES, check_size, encode_json, encode_typed, error_record
from ..entries import NO_LIMIT, NewRow, StepLimit, new_rows, step_limit
from ..errors import GenDurableError
from ..limit import Limit
from ..outcome import Done, Goto, Reawait, Retry, Spawn, Stop
from ..spec import StepSpec, WorkflowSpec


class InvalidOutcome(GenDurableError):
    """A step returned something that cannot be committed (unknown step, bad value...)."""


class RetriesExhausted(GenDurableError):
    """`retry()` was returned on the last allowed attempt."""


@dataclass(frozen=True, slots=True)
class MoveTo:
    """Commit `state` and go to `step`; `keep_claim` runs it at once on the same worker.

    `consumed` are the ids of the signals the step saw; they leave the inbox;
    `max_attempts` those `step` may use (None: the row keeps its own).
    """

    step: str
    state: bytes
    delay: timedelta | None
    keep_claim: bool
    consumed: tuple[int, ...] = ()
    limit: StepLimit = NO_LIMIT
    max_attempts: int | None = None


@dataclass(frozen=True, slots=True)
class SpawnChildren:
    """Insert `children` and wait until every one is terminal, then run `then`.

    `limit` is the rate limit `then` takes when it runs; `consumed` leave the inbox;
    `max_attempts` those `then` may use (None: the row keeps its own).
    """

    then: str
    state: bytes
    children: tuple[NewRow, ...]
    consumed: tuple[int, ...] = ()
    limit: StepLimit = NO_LIMIT
    max_attempts: int | None = None


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Run the same step again after `delay`, attempt + 1 (`state` None keeps the stored one).

    `cause` is the exception behind an error retry (what `error` records), for telemetry.
    """

    state: bytes | None
    delay: timedelta
    error: bytes | None
    cause: BaseException | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Finish:
    """End the instance as `done` or `failed` (`cause`: the exception a failure records)."""

    status: str
    state: bytes | None
    result: bytes | None
    error: bytes | None
    cause: BaseException | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Park:
    """Enter the awaiting `step`: wake on one of `names` newer than `seen`, or the deadline.

    The deadline is now + `timeout` (none when None), or the current one when
    `keep_deadline` (a reawait). `consumed` leave the inbox; `max_attempts` are those
    `step` may use (None: the row keeps its own).
    """

    step: str
    state: bytes | None
    names: tuple[str, ...]
    timeout: timedelta | None
    keep_deadline: bool
    seen: int
    consumed: tuple[int, ...] = ()
    limit: StepLimit = NO_LIMIT
    keep_children: bool = True
    max_attempts: int | None = None


def park(
    step: StepSpec,
    state: bytes | None,
    *,
    seen: int = 0,
    consumed: tuple[int, ...] = (),
    reawait: bool = False,
    timed_out: bool = False,
    limit: StepLimit = NO_LIMIT,
    keep_children: bool = True,
) -> Park:
    """Park in the awaiting `step`: entered afresh (deadline from now) or by a reawait.

    A reawait keeps the deadline it had; after that deadline passed it waits for signals
    only, since the passed deadline would otherwise wake it again at once (a busy loop).
    `keep_children` is False when a goto enters the step (ctx.children belong to the step a
    spawn went to).
    """
    assert step.awaits is not None
    timeout = None if reawait and timed_out else step.awaits.timeout
    keep_deadline = reawait and not timed_out
    return Park(
        step.name,
        state,
        step.awaits.names,
        timeout,
        keep_deadline,
        seen,
        consumed,
        limit,
        keep_children,
    )


@dataclass(frozen=True, slots=True)
class HandOff:
    """Let the workflow's `handle(error, state, ctx)` choose; then decide again."""

    error: BaseException


Decision: TypeAlias = MoveTo | RetryLater | Finish | Park | SpawnChildren | HandOff


@dataclass(frozen=True, slots=True)
class Catalog:
    """What a decision may need beyond the step's own workflow: the other workflows this
    engine serves (spawned children) and the configured rate limits (weights above burst)."""

    specs: Mapping[str, WorkflowSpec]
    limits: Mapping[str, Limit]
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES


NO_CATALOG = Catalog({}, {})


def decide(
    spec: WorkflowSpec,
    step: StepSpec,
    attempt: int,
    state: Any,
    produced: Any,
    *,
    handled: bool = False,
    awaited: tuple[int, ...] = (),
    seen: int = 0,
    timed_out: bool = False,
    rng: random.Random | None = None,
    catalog: Catalog = NO_CATALOG,
) -> Decision:
    """Turn what `step` produced on `attempt` into a Decision.

    `produced` is an outcome or an exception. Exceptions, and outcomes that cannot be
    committed, go to the workflow's handler once (`HandOff`) unless `handled`, then to the
    default policy: retry with backoff until the attempts run out, then `failed`.
    `awaited` are the ids of the matched signals the step saw (consumed on progress) and
    `seen` the highest signal id an earlier `reawait` already saw; `timed_out` whether the
    await deadline woke this run; `catalog` the served workflows and configured limits.
    """
    if not isinstance(produced, BaseException):
        try:
            decision = _commit(
                spec, step, attempt, state, produced, awaited, seen, timed_out, rng, catalog
            )
            return _within_limit(_with_attempts(spec, decision), catalog.max_payload_bytes)
        except GenDurableError as exc:
            produced = exc
    if spec.handler is not None and not handled:
        return HandOff(produced)
    return _failure(spec, step, attempt, produced, rng)


def max_attempts(spec: WorkflowSpec, step: StepSpec) -> int:
    """The attempts a step may use: its own `max_attempts`, else the workflow's."""
    return spec.max_attempts(step.name)


def _commit(
    spec: WorkflowSpec,
    step: StepSpec,
    attempt: int,
    state: Any,
    outcome: Any,
    awaited: tuple[int, ...],
    seen: int,
    timed_out: bool,
    rng: random.Random | None,
    catalog: Catalog,
) -> Decision:
    if isinstance(outcome, Goto):
        target = _target(spec, step, outcome.step, "went to")
        value = state if outcome.state is None else outcome.state
        data = _state(spec, outcome.state, state)
        limit = step_limit(
            spec,
            target,
            value if outcome.state is None else data,
            name=outcome.rate_limit,
            weight=outcome.weight,
            partition=outcome.partition,
            limits=catalog.limits,
        )
        if target.awaits is not None and outcome.delay is None:
            return park(target, data, consumed=awaited, limit=limit, keep_children=False)
        keep = target.awaits is None and limit.name is None and outcome.delay is None
        return MoveTo(outcome.step, data, outcome.delay, keep, consumed=awaited, limit=limit)
    if isinstance(outcome, Retry):
        if attempt + 1 >= max_attempts(spec, step):
            raise RetriesExhausted(
                f"step {step.name!r} asked to retry on its last attempt "
                f"({attempt + 1} of {max_attempts(spec, step)})"
            )
        delay = outcome.delay
        if delay is None:
            delay = spec.retry.backoff.delay(attempt + 1, rng)
        return RetryLater(_kept(spec, outcome.state, state), delay, None)
    if isinstance(outcome, Done):
        result = encode_typed(outcome.result, spec.result_type, spec.result_decoder, "result")
        return Finish("done", _kept(spec, None, state), result, None)
    if isinstance(outcome, Stop):
        error = {
            "type": "stop",
            "message": str(outcome.reason),
            "step": step.name,
            "attempt": attempt,
            "max_attempts": max_attempts(spec, step),
        }
        return Finish("failed", _kept(spec, None, state), None, encode_json(error))
    if isinstance(outcome, Reawait):
        if step.awaits is None:
            raise InvalidOutcome(f"step {step.name!r} returned reawait() but awaits no signals")
        data = _state(spec, outcome.state, state)
        return park(step, data, seen=max((seen, *awaited)), reawait=True, timed_out=timed_out)
    if isinstance(outcome, Spawn):
        then = _target(spec, step, outcome.then, "spawned with then=")
        data = _state(spec, outcome.state, state)
        children = new_rows(catalog.specs or {spec.name: spec}, outcome.children, what="spawn")
        limit = step_limit(spec, then, data, limits=catalog.limits)
        return SpawnChildren(outcome.then, data, tuple(children), awaited, limit)
    raise InvalidOutcome(
        f"step {step.name!r} returned {outcome!r}, not an outcome "
        "(return gd.goto/retry/reawait/spawn/done/stop)"
    )


def _with_attempts(spec: WorkflowSpec, decision: Decision) -> Decision:
    """`decision` with the attempts of the step it puts the row on, when it moves the row to
    a step (the row stores them: the reaper's limit, what `show` displays)."""
    if type(decision) is MoveTo:  # the common case, built directly (replace() is slow)
        return MoveTo(
            decision.step,
            decision.state,
            decision.delay,
            decision.keep_claim,
            decision.consumed,
            decision.limit,
            spec.max_attempts(decision.step),
        )
    if isinstance(decision, MoveTo | Park):
        return replace(decision, max_attempts=spec.max_attempts(decision.step))
    if isinstance(decision, SpawnChildren):
        return replace(decision, max_attempts=spec.max_attempts(decision.then))
    return decision


def _within_limit(decision: Decision, limit: int) -> Decision:
    """`decision`, or `ValidationError` when a state, result or child state it would store
    is above `limit` bytes (the error path then decides, before anything is written)."""
    if isinstance(decision, MoveTo | RetryLater | Park) and decision.state is not None:
        check_size(decision.state, limit, "state")
    elif isinstance(decision, Finish):
        if decision.state is not None:
            check_size(decision.state, limit, "state")
        if decision.result is not None:
            check_size(decision.result, limit, "result")
    elif isinstance(decision, SpawnChildren):
        check_size(decision.state, limit, "state")
        for i, child in enumerate(decision.children):
            check_size(child.state, limit, f"spawn child {i} ({child.workflow}) state")
    return decision


def _target(spec: WorkflowSpec, step: StepSpec, name: str, verb: str) -> StepSpec:
    target = spec.steps.get(name)
    if target is None:
        raise InvalidOutcome(
            f"step {step.name!r} {verb} unknown step {name!r} (steps: {', '.join(spec.steps)})"
        )
    return target


def _kept(spec: WorkflowSpec, override: Any, current: Any) -> bytes | None:
    """Like `_state`, but None (the stored state is kept) when a typed workflow has no state
    to commit: the stored one did not decode, and its handler retries or ends the instance."""
    if override is None and current is None and spec.state_type is not None:
        return None
    return _state(spec, override, current)


def _state(spec: WorkflowSpec, override: Any, current: Any) -> bytes:
    value = current if override is None else override
    return encode_typed(value, spec.state_type, spec.state_decoder, "state")


def _failure(
    spec: WorkflowSpec,
    step: StepSpec,
    attempt: int,
    error: BaseException,
    rng: random.Random | None,
) -> Decision:
    record = encode_json(
        error_record(error, step=step.name, attempt=attempt, max_attempts=max_attempts(spec, step))
    )
    if isinstance(error, RetriesExhausted) or attempt + 1 >= max_attempts(spec, step):
        return Finish("failed", None, None, record, error)
    return RetryLater(None, spec.retry.backoff.delay(attempt + 1, rng), record, error)
