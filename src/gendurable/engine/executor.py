"""Run claimed steps: build the context, call the step, decide, commit.

A plain `def` step runs in a worker thread. A state written by an older version of the
workflow is upgraded first (`gendurable.upgrader`). A step that raises, times out, or returns
something that cannot be committed, and a state that cannot be upgraded or decoded, go to the
error path (the workflow's `handle`, then the retry policy), never to the reaper.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import replace
from datetime import timedelta
from typing import Any

import msgspec

from ..codec import decode_json
from ..context import ChildResult, Context, Signal
from ..errors import DuplicateKey, StateUpgradeError, StepTimeout, ValidationError
from ..events import STEP_EXCEPTION, STEP_START, STEP_STOP
from ..spec import StepSpec, WorkflowSpec
from ..telemetry import Telemetry
from ..upgrader import upgrade_state
from .claimed import Claimed, StoredChild, StoredSignal
from .committer import Applied, Committer
from .decide import (
    NO_CATALOG,
    Catalog,
    Decision,
    Finish,
    HandOff,
    InvalidOutcome,
    MoveTo,
    Park,
    RetryLater,
    SpawnChildren,
    decide,
    park,
)

MAX_CHAIN = 100
"""Steps one claim may run back to back before it goes through the queue again."""


class Executor:
    """Executes claims of the workflows it knows and commits their outcomes."""

    def __init__(
        self,
        specs: Mapping[str, WorkflowSpec],
        objects: Mapping[str, Any],
        committer: Committer,
        telemetry: Telemetry,
        engine: Any,
        catalog: Catalog = NO_CATALOG,
    ) -> None:
        self.specs = specs
        self.catalog = catalog if catalog.specs else replace(catalog, specs=specs)
        self.objects = objects
        self.committer = committer
        self.telemetry = telemetry
        self.engine = engine
        self.rng = random.Random()
        self.keep_claims = True
        self.paused: Set[str] = frozenset()
        """The queues this engine knows to be paused: a step of one never keeps its claim
        to run the next at once (the database refuses it too, see `queue_paused`)."""
        self._current: dict[int, Claimed] = {}

    async def run(self, claim: Claimed, on_last_commit: Callable[[], None] | None = None) -> None:
        """Run `claim` and the steps it may chain into, committing each outcome.

        `on_last_commit` is called when the last outcome of the claim goes to its commit
        (nothing more of it will run here). Cancelled (engine stop past its timeout), it
        releases the claim so that another node takes the instance at once instead of
        waiting out the lease.
        """
        try:
            await self._run(claim, on_last_commit)
        except asyncio.CancelledError:
            current = self._current.pop(claim.id, claim)
            with contextlib.suppress(Exception):
                await asyncio.shield(self.committer.release(current))
            raise
        finally:
            self._current.pop(claim.id, None)

    async def _run(self, claim: Claimed, on_last_commit: Callable[[], None] | None) -> None:
        spec = self.specs[claim.workflow]
        for _ in range(MAX_CHAIN):
            self._current[claim.id] = claim
            step = spec.steps[claim.step]
            claim, unreadable = self._upgraded(spec, claim)
            if (
                unreadable is None
                and step.awaits is not None
                and not claim.timed_out
                and not _fresh(step, claim)
            ):
                # Entered without a matching signal yet (a start, a delayed goto, a spawn's
                # children all ended): park, keeping what the entry set.
                decision: Decision = park(
                    step, claim.state, seen=claim.await_seen, limit=claim.limit
                )
                state: Any = None
            else:
                decision, state = await self._run_step(spec, step, claim, unreadable)
            if (
                isinstance(decision, MoveTo)
                and decision.keep_claim
                and (not self.keep_claims or claim.queue in self.paused)
            ):
                # Stopping, or the queue is paused: the next step goes through the queue.
                decision = replace(decision, keep_claim=False)
            if on_last_commit is not None and not (
                isinstance(decision, MoveTo) and decision.keep_claim
            ):
                on_last_commit()
                on_last_commit = None
            try:
                applied = await self.committer.apply(claim, decision)
            except DuplicateKey as exc:
                # A spawn met a key held by a live instance: nothing was inserted, and the
                # error path decides what happens to the parent.
                assert isinstance(decision, SpawnChildren)
                decision = await self._on_error(spec, step, claim, state, exc)
                applied = await self.committer.apply(claim, decision)
            if not (
                applied is Applied.COMMITTED
                and isinstance(decision, MoveTo)
                and decision.keep_claim
            ):
                return
            claim = claim.moved(decision.step, decision.state, spec.version)
        # The chain is long: let the queue's order decide what runs next.
        await self.committer.release(claim)

    def _upgraded(
        self, spec: WorkflowSpec, claim: Claimed
    ) -> tuple[Claimed, StateUpgradeError | None]:
        """The claim with its state at the workflow's version, or why it cannot be."""
        if claim.state_version == spec.version:
            return claim, None
        try:
            data = upgrade_state(
                spec,
                claim.state,
                claim.state_version,
                self.objects.get(spec.name),
                what=f"instance {claim.id}",
            )
        except StateUpgradeError as exc:
            return claim, exc
        return msgspec.structs.replace(claim, state=data, state_version=spec.version), None

    async def _on_error(
        self, spec: WorkflowSpec, step: StepSpec, claim: Claimed, state: Any, exc: Exception
    ) -> Decision:
        """The decision for an error found at commit: the handler, else the retry policy."""
        decision = self._decide(spec, step, claim, state, exc)
        if isinstance(decision, HandOff):
            assert spec.handler is not None
            ctx = self._context(spec, step, claim)
            handled = await self._call(
                step, spec.handler, (self.objects.get(spec.name), decision.error, state, ctx)
            )
            decision = self._decide(spec, step, claim, state, handled, handled=True)
        return decision

    def _decide(
        self,
        spec: WorkflowSpec,
        step: StepSpec,
        claim: Claimed,
        state: Any,
        produced: Any,
        *,
        handled: bool = False,
        awaited: tuple[int, ...] = (),
    ) -> Decision:
        return decide(
            spec,
            step,
            claim.attempt,
            state,
            produced,
            handled=handled,
            awaited=awaited,
            seen=claim.await_seen,
            timed_out=claim.timed_out,
            rng=self.rng,
            catalog=self.catalog,
        )

    async def _run_step(
        self,
        spec: WorkflowSpec,
        step: StepSpec,
        claim: Claimed,
        unreadable: StateUpgradeError | None = None,
    ) -> tuple[Decision, Any]:
        meta = {
            "id": claim.id,
            "workflow": claim.workflow,
            "step": claim.step,
            "attempt": claim.attempt,
            "max_attempts": spec.max_attempts(claim.step),
            "key": claim.key,
            "queue": claim.queue,
            "trace_context": claim.trace_context,
            "signal_trace_contexts": _signal_trace_contexts(step, claim),
        }
        waited = {} if claim.waited is None else {"waited": claim.waited}
        self.telemetry.emit(STEP_START, waited, meta)
        started = time.perf_counter()
        state: Any = None
        produced: Any = None
        try:
            if unreadable is not None:  # no upgrade leads the stored state here
                raise unreadable
            state = _stored_state(spec, claim.state)
            ctx = self._context(spec, step, claim)
        except Exception as exc:  # stored state or a payload no longer decodes (a deploy
            produced = exc  # changed its type): the error path decides, not the reaper
            ctx = self._context(spec, step, msgspec.structs.replace(claim, inbox=(), children=()))
        awaited = tuple([s.id for s in ctx.awaited]) if ctx.awaited else ()
        if not isinstance(produced, BaseException):
            produced = await self._call(step, step.fn, (self.objects.get(spec.name), state, ctx))
        decision = self._decide(spec, step, claim, state, produced, awaited=awaited)
        # What went wrong, if anything: what the step raised, or why what it returned
        # cannot be committed (then known from the decision).
        error = produced if isinstance(produced, BaseException) else None
        if isinstance(decision, HandOff):
            assert spec.handler is not None
            error = decision.error
            handled = await self._call(
                step, spec.handler, (self.objects.get(spec.name), error, state, ctx)
            )
            decision = self._decide(
                spec, step, claim, state, handled, handled=True, awaited=awaited
            )
        if error is None and isinstance(decision, RetryLater | Finish):
            error = decision.cause
        duration = time.perf_counter() - started
        if error is not None:
            measured = {"duration": duration}
            if isinstance(decision, RetryLater):
                measured["retry_in"] = decision.delay.total_seconds()
            self.telemetry.emit(
                STEP_EXCEPTION,
                measured,
                {
                    **meta,
                    "error": error,
                    "decision": type(decision).__name__,
                    "outcome": _outcome(decision),
                },
            )
        else:
            self.telemetry.emit(
                STEP_STOP,
                {"duration": duration},
                {**meta, "decision": type(decision).__name__, "outcome": _outcome(decision)},
            )
        return decision, state

    def _context(self, spec: WorkflowSpec, step: StepSpec, claim: Claimed) -> Context:
        inbox = tuple([_signal(spec, s) for s in claim.inbox]) if claim.inbox else ()
        names = step.awaits.names if step.awaits else ()
        children = tuple([self._child(c) for c in claim.children]) if claim.children else ()
        return Context(
            awaited=tuple([s for s in inbox if s.name in names]) if inbox else (),
            inbox=inbox,
            id=claim.id,
            key=claim.key,
            workflow=spec.name,
            step=claim.step,
            attempt=claim.attempt,
            queue=claim.queue,
            priority=claim.priority,
            timed_out=claim.timed_out,
            children=children,
            engine=self.engine,
        )

    def _child(self, stored: StoredChild) -> ChildResult:
        """A child's outcome, its result decoded with the child workflow's Result type."""
        spec = self.catalog.specs.get(stored.workflow)
        result = decode_json(stored.result, spec.result_decoder if spec else None)
        return ChildResult(
            stored.id,
            stored.key,
            stored.workflow,
            stored.status,
            result,
            decode_json(stored.error),
        )

    async def _call(self, step: StepSpec, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Call a step (or the handler); return its outcome or the exception it raised.

        A coroutine returned instead of an outcome (a forgotten `await`) is closed, so it
        never warns that it was not awaited, and becomes an `InvalidOutcome` saying so.
        """
        timeout = step.timeout.total_seconds() if step.timeout else None
        is_async = step.is_async if fn is step.fn else inspect.iscoroutinefunction(fn)
        try:
            if timeout is None:
                returned = await fn(*args) if is_async else await asyncio.to_thread(fn, *args)
            else:
                async with asyncio.timeout(timeout):
                    if is_async:
                        returned = await fn(*args)
                    else:
                        returned = await asyncio.to_thread(fn, *args)
            if inspect.isawaitable(returned):
                return _not_awaited(step, fn, returned)
            return returned
        except TimeoutError as exc:
            if timeout is not None and not isinstance(exc, StepTimeout):
                return StepTimeout(
                    f"step {step.name!r} ran longer than its timeout {timedelta(seconds=timeout)}"
                )
            return exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return exc


def _not_awaited(step: StepSpec, fn: Callable[..., Any], returned: Any) -> InvalidOutcome:
    """The error of a step (or handler) that returned an awaitable instead of an outcome."""
    what = f"step {step.name!r}" if fn is step.fn else f"handle() of step {step.name!r}"
    name = getattr(returned, "__qualname__", type(returned).__name__)
    if inspect.iscoroutine(returned):
        returned.close()  # never run: no "coroutine ... was never awaited" warning later
    return InvalidOutcome(
        f"{what} returned {name}(...), an awaitable, instead of an outcome: did you forget `await`?"
    )


def _fresh(step: StepSpec, claim: Claimed) -> bool:
    """True when the inbox holds a matching signal newer than those a reawait already saw."""
    assert step.awaits is not None
    names = step.awaits.names
    return any(s.name in names and s.id > claim.await_seen for s in claim.inbox)


def _signal_trace_contexts(step: StepSpec, claim: Claimed) -> tuple[str, ...]:
    """Trace contexts of the awaited signals newer than a reawait saw: the sends that woke
    this step."""
    if not claim.inbox:
        return ()
    names = step.awaits.names if step.awaits else ()
    return tuple(
        s.trace_context
        for s in claim.inbox
        if s.name in names and s.id > claim.await_seen and s.trace_context
    )


def _outcome(decision: Decision) -> str:
    """The outcome a decision commits, as telemetry names it: goto, park, retry, done, failed."""
    if isinstance(decision, Finish):
        return decision.status
    return _OUTCOMES.get(type(decision), type(decision).__name__)


_OUTCOMES: dict[type, str] = {
    MoveTo: "goto",
    Park: "park",
    RetryLater: "retry",
    SpawnChildren: "spawn",
}


def _stored_state(spec: WorkflowSpec, data: bytes | None) -> Any:
    """The stored state decoded as the workflow's State, or `ValidationError` saying which
    field no longer decodes (a deploy changed the type under live rows)."""
    if data is None:
        return None
    try:
        return spec.state_decoder.decode(data)
    except msgspec.DecodeError as exc:
        tp = getattr(spec.state_type, "__qualname__", "its State")
        raise ValidationError(
            f"the stored state of this {spec.name} instance no longer decodes as {tp}: {exc}"
        ) from None


def _signal(spec: WorkflowSpec, stored: StoredSignal) -> Signal:
    """Decode a stored signal's payload with its declared type (plain JSON otherwise)."""
    _, tp, decoder = spec.signal_type(stored.name)
    try:
        payload = decode_json(stored.payload, decoder)
    except msgspec.DecodeError as exc:
        name = getattr(tp, "__qualname__", "its declared type")
        raise ValidationError(
            f"the stored payload of signal {stored.name!r} (id {stored.id}) no longer "
            f"decodes as {name}: {exc}"
        ) from None
    return Signal(stored.id, stored.name, payload, stored.received_at)
