"""`decide()` as a table: what each step result commits, without a database."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import msgspec
import pytest

import gendurable as gd
from gendurable.engine.decide import (
    Finish,
    HandOff,
    InvalidOutcome,
    MoveTo,
    Park,
    RetriesExhausted,
    RetryLater,
    SpawnChildren,
    decide,
    max_attempts,
)
from gendurable.entries import NO_LIMIT, StepLimit
from gendurable.errors import ValidationError

BACKOFF = gd.Backoff(base=timedelta(seconds=10), factor=3.0, jitter=0.5)


@gd.workflow(name="decide-typed", max_attempts=4, backoff=BACKOFF)
class Typed:
    class State(msgspec.Struct):
        n: int = 0
        tags: list[str] = msgspec.field(default_factory=list)

    class Result(msgspec.Struct):
        class Inner(msgspec.Struct):
            total: int

        inner: Inner
        ok: bool

    @gd.step(start=True, to=("awaiting", "limited", "limited_inline"))
    async def first(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.plain)

    @gd.step
    async def plain(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done()

    @gd.step
    @gd.await_signals("go", timeout=timedelta(hours=1))
    async def awaiting(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.reawait()

    @gd.step(rate_limit="bank")
    async def limited(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.stop("no")

    @gd.step(rate_limit=gd.Limit(5))
    async def limited_inline(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.retry()

    @gd.step(max_attempts=2)
    async def fragile(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.retry()

    @gd.step(max_attempts=8)
    async def sturdy(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.retry()


@gd.workflow(name="decide-untyped", max_attempts=3)
class Untyped:
    @gd.step
    async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


@gd.workflow(name="decide-handled", max_attempts=3)
class Handled:
    @gd.step
    async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.after)

    @gd.step
    async def after(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()

    def handle(self, error: BaseException, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.after)


TYPED = Typed.spec
UNTYPED = Untyped.spec
HANDLED = Handled.spec


def _run(
    spec: gd.WorkflowSpec,
    step: str,
    produced: Any,
    *,
    attempt: int = 0,
    state: Any = None,
    handled: bool = False,
    seen: int = 0,
    seed: int = 7,
) -> Any:
    if state is None and spec.state_type is not None:
        state = spec.state_type()
    return decide(
        spec,
        spec.steps[step],
        attempt,
        state,
        produced,
        handled=handled,
        seen=seen,
        rng=random.Random(seed),
    )


def _raised(exc: BaseException) -> BaseException:
    """`exc` with a real traceback, as the executor hands it over."""
    try:
        raise exc
    except BaseException as caught:
        return caught


def _error(data: bytes | None) -> dict[str, Any]:
    assert data is not None
    record = msgspec.json.decode(data)
    assert isinstance(record, dict)
    return record


def _backoff_bounds(backoff: gd.Backoff, retry_number: int) -> tuple[timedelta, timedelta]:
    nominal = min(
        backoff.base.total_seconds() * backoff.factor ** (retry_number - 1),
        backoff.max.total_seconds(),
    )
    return (
        timedelta(seconds=nominal * (1 - backoff.jitter)),
        timedelta(seconds=nominal * (1 + backoff.jitter)),
    )


# -- goto ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "step", "delay", "keep_claim", "limit"),
    [
        (gd.goto("plain"), "plain", None, True, NO_LIMIT),
        (
            gd.goto("plain", delay=timedelta(seconds=5)),
            "plain",
            timedelta(seconds=5),
            False,
            NO_LIMIT,
        ),
        (gd.goto("plain", delay=timedelta(0)), "plain", timedelta(0), False, NO_LIMIT),
        (
            gd.goto("awaiting", delay=timedelta(hours=2)),
            "awaiting",
            timedelta(hours=2),
            False,
            NO_LIMIT,
        ),
        (gd.goto("limited"), "limited", None, False, StepLimit("bank", None, 1)),
        (
            gd.goto("limited_inline"),
            "limited_inline",
            None,
            False,
            StepLimit("decide-typed.limited_inline", None, 1),
        ),
        (gd.goto("plain", rate_limit="bank"), "plain", None, False, StepLimit("bank", None, 1)),
    ],
    ids=[
        "plain",
        "delay",
        "zero-delay",
        "delayed-awaiting-target",
        "limited-target",
        "inline-limit-target",
        "limit-override",
    ],
)
def test_decide_goto_moves_and_keeps_claim_only_when_nothing_to_wait_for(
    outcome: Any, step: str, delay: timedelta | None, keep_claim: bool, limit: StepLimit
) -> None:
    state = Typed.State(n=3, tags=["a"])

    decision = _run(TYPED, "first", outcome, state=state)

    assert decision == MoveTo(
        step, b'{"n":3,"tags":["a"]}', delay, keep_claim, limit=limit, max_attempts=4
    )


@pytest.mark.parametrize(
    ("outcome", "kind", "attempts"),
    [
        (gd.goto("fragile"), MoveTo, 2),
        (gd.goto("sturdy", delay=timedelta(seconds=1)), MoveTo, 8),
        (gd.goto("plain"), MoveTo, 4),
        (gd.goto("awaiting"), Park, 4),
        (gd.spawn([], then="fragile"), SpawnChildren, 2),
    ],
)
def test_decide_a_move_carries_the_attempts_of_the_step_it_enters(
    outcome: Any, kind: type, attempts: int
) -> None:
    decision = _run(TYPED, "first", outcome, state=Typed.State())

    assert isinstance(decision, kind)
    assert decision.max_attempts == attempts


def test_decide_goto_awaiting_target_parks_instead_of_keeping_the_claim() -> None:
    decision = _run(TYPED, "first", gd.goto("awaiting"), state=Typed.State(n=3))

    assert isinstance(decision, Park)
    assert decision.step == "awaiting"
    assert decision.state == b'{"n":3,"tags":[]}'
    assert decision.seen == 0
    assert decision.keep_deadline is False  # a fresh await: the deadline starts now
    awaits = TYPED.steps["awaiting"].awaits
    assert awaits is not None
    assert (decision.names, decision.timeout) == (awaits.names, awaits.timeout)


def test_decide_goto_commits_the_given_state_over_the_mutated_one() -> None:
    decision = _run(TYPED, "first", gd.goto("plain", Typed.State(n=9)), state=Typed.State(n=1))

    assert isinstance(decision, MoveTo)
    assert msgspec.json.decode(decision.state, type=Typed.State) == Typed.State(n=9)


def test_decide_goto_accepts_a_dict_state_that_converts_to_the_state_type() -> None:
    decision = _run(TYPED, "first", gd.goto("plain", {"n": 4}))

    assert isinstance(decision, MoveTo)
    assert msgspec.json.decode(decision.state) == {"n": 4, "tags": []}


def test_decide_goto_unknown_step_takes_the_error_path() -> None:
    decision = _run(TYPED, "first", gd.goto("no" + "pe"), attempt=1)

    assert isinstance(decision, RetryLater)
    assert decision.state is None
    error = _error(decision.error)
    assert error["type"].endswith("InvalidOutcome")
    assert "'nope'" in error["message"]
    assert error["step"] == "first"
    assert error["attempt"] == 1


def test_decide_goto_unknown_step_on_the_last_attempt_fails() -> None:
    decision = _run(TYPED, "first", gd.goto("nope" + "!"), attempt=3)

    assert isinstance(decision, Finish)
    assert decision.status == "failed"
    assert _error(decision.error)["type"].endswith("InvalidOutcome")


# -- retry --------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [0, 1, 2])
def test_decide_retry_without_delay_uses_the_workflow_backoff(attempt: int) -> None:
    decision = _run(TYPED, "first", gd.retry(), attempt=attempt, state=Typed.State(n=2))

    assert isinstance(decision, RetryLater)
    low, high = _backoff_bounds(BACKOFF, attempt + 1)
    assert low <= decision.delay <= high
    # the same seed gives the same jitter: the rng passed in is the one used
    assert decision.delay == BACKOFF.delay(attempt + 1, random.Random(7))
    assert decision.error is None
    assert decision.state == b'{"n":2,"tags":[]}'


def test_decide_retry_jitter_varies_with_the_seed_within_bounds() -> None:
    delays = {_run(TYPED, "first", gd.retry(), attempt=1, seed=seed).delay for seed in range(50)}

    low, high = _backoff_bounds(BACKOFF, 2)
    assert all(low <= d <= high for d in delays)
    assert len(delays) > 40  # jittered, not constant
    assert min(delays) < timedelta(seconds=30) < max(delays)


@pytest.mark.parametrize(
    "delay", [timedelta(seconds=7), timedelta(0), timedelta(days=3)], ids=["7s", "zero", "3d"]
)
def test_decide_retry_keeps_an_explicit_delay(delay: timedelta) -> None:
    decision = _run(TYPED, "first", gd.retry(delay), attempt=1)

    assert isinstance(decision, RetryLater)
    assert decision.delay == delay


def test_decide_retry_commits_a_given_state() -> None:
    decision = _run(TYPED, "first", gd.retry(state=Typed.State(n=5)))

    assert isinstance(decision, RetryLater)
    assert decision.state == b'{"n":5,"tags":[]}'


def test_decide_retry_on_the_last_attempt_fails_with_retries_exhausted() -> None:
    assert max_attempts(TYPED, TYPED.steps["first"]) == 4

    decision = _run(TYPED, "first", gd.retry(), attempt=3)

    assert isinstance(decision, Finish)
    assert decision.status == "failed"
    assert decision.result is None
    error = _error(decision.error)
    assert error["type"] == f"{RetriesExhausted.__module__}.RetriesExhausted"
    assert "last attempt" in error["message"]
    assert error["attempt"] == 3


@pytest.mark.parametrize(
    ("step", "attempt", "expected"),
    [
        ("fragile", 0, RetryLater),
        ("fragile", 1, Finish),  # the step's 2 attempts, not the workflow's 4
        ("sturdy", 3, RetryLater),  # the step's 8 attempts, past the workflow's 4
        ("sturdy", 6, RetryLater),
        ("sturdy", 7, Finish),
        ("first", 2, RetryLater),
        ("first", 3, Finish),
    ],
)
def test_decide_step_max_attempts_overrides_the_workflow(
    step: str, attempt: int, expected: type
) -> None:
    assert isinstance(_run(TYPED, step, gd.retry(), attempt=attempt), expected)
    assert isinstance(_run(TYPED, step, _raised(ValueError("x")), attempt=attempt), expected)


# -- exceptions ---------------------------------------------------------------------------


def _failing_step() -> None:
    raise ValueError("card declined")


def _exception() -> BaseException:
    try:
        _failing_step()
    except ValueError as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize("attempt", [0, 1, 2])
def test_decide_exception_retries_with_backoff_and_records_the_error(attempt: int) -> None:
    decision = _run(TYPED, "plain", _exception(), attempt=attempt, state=Typed.State(n=8))

    assert isinstance(decision, RetryLater)
    assert decision.state is None  # the stored state stays: the step's changes are dropped
    low, high = _backoff_bounds(BACKOFF, attempt + 1)
    assert low <= decision.delay <= high
    error = _error(decision.error)
    assert error["type"] == "builtins.ValueError"
    assert error["message"] == "card declined"
    assert error["step"] == "plain"
    assert error["attempt"] == attempt
    assert "_failing_step" in error["traceback"]
    assert "ValueError: card declined" in error["traceback"]


def test_decide_exception_on_the_last_attempt_fails_with_the_error() -> None:
    decision = _run(TYPED, "plain", _exception(), attempt=3)

    assert decision == Finish("failed", None, None, decision.error)
    error = _error(decision.error)
    assert error["type"] == "builtins.ValueError"
    assert error["message"] == "card declined"
    assert "Traceback (most recent call last)" in error["traceback"]
    assert error["attempt"] == 3


def test_decide_exception_in_a_single_attempt_workflow_fails_at_once() -> None:
    @gd.workflow(name="decide-once", max_attempts=1)
    class Once:
        @gd.step
        async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

    decision = _run(Once.spec, "only", _raised(KeyError("k")))

    assert isinstance(decision, Finish)
    assert _error(decision.error)["type"] == "builtins.KeyError"


# -- done and stop ------------------------------------------------------------------------


def test_decide_done_encodes_a_typed_nested_result() -> None:
    result = Typed.Result(inner=Typed.Result.Inner(total=3), ok=True)

    decision = _run(TYPED, "plain", gd.done(result), state=Typed.State(n=1))

    assert decision == Finish(
        "done", b'{"n":1,"tags":[]}', b'{"inner":{"total":3},"ok":true}', None
    )


def test_decide_done_converts_a_dict_matching_the_result_type() -> None:
    decision = _run(TYPED, "plain", gd.done({"inner": {"total": 5}, "ok": False}))

    assert isinstance(decision, Finish)
    assert decision.status == "done"
    assert msgspec.json.decode(decision.result, type=Typed.Result) == Typed.Result(
        inner=Typed.Result.Inner(total=5), ok=False
    )


@pytest.mark.parametrize(
    "result",
    [
        {"inner": {"total": "three"}, "ok": True},
        {"ok": True},
        Typed.Result(inner=Typed.Result.Inner(total="three"), ok=True),  # type: ignore[arg-type]
        None,
        42,
    ],
    ids=["dict-wrong-type", "dict-missing-field", "struct-wrong-type", "none", "int"],
)
def test_decide_done_with_an_invalid_result_takes_the_error_path(result: Any) -> None:
    decision = _run(TYPED, "plain", gd.done(result), attempt=0)

    assert isinstance(decision, RetryLater)
    error = _error(decision.error)
    assert error["type"] == f"{ValidationError.__module__}.ValidationError"
    assert "result" in error["message"]


def test_decide_done_untyped_result_is_stored_as_given() -> None:
    decision = _run(UNTYPED, "only", gd.done({"a": [1, 2]}), state={"s": 1})

    assert decision == Finish("done", b'{"s":1}', b'{"a":[1,2]}', None)


def test_decide_done_without_result_stores_json_null() -> None:
    decision = _run(UNTYPED, "only", gd.done(), state={})

    assert isinstance(decision, Finish)
    assert decision.result == b"null"


def test_decide_stop_fails_with_the_reason() -> None:
    decision = _run(TYPED, "limited", gd.stop("customer left"), state=Typed.State(n=6))

    assert isinstance(decision, Finish)
    assert decision.status == "failed"
    assert decision.state == b'{"n":6,"tags":[]}'
    assert decision.result is None
    assert _error(decision.error) == {
        "type": "stop",
        "message": "customer left",
        "step": "limited",
        "attempt": 0,
        "max_attempts": 4,
    }


# -- reawait ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seen", "awaited", "expected"),
    [(41, (), 41), (41, (3, 50), 50), (0, (7,), 7), (60, (7, 9), 60)],
)
def test_decide_reawait_in_an_awaiting_step_parks_with_the_seen_mark(
    seen: int, awaited: tuple[int, ...], expected: int
) -> None:
    step = TYPED.steps["awaiting"]

    decision = decide(TYPED, step, 0, Typed.State(n=2), gd.reawait(), awaited=awaited, seen=seen)

    assert isinstance(decision, Park)
    assert decision.step == "awaiting"
    assert decision.state == b'{"n":2,"tags":[]}'
    assert decision.seen == expected
    assert decision.keep_deadline is True


@pytest.mark.parametrize(("timed_out", "keep_deadline"), [(False, True), (True, False)])
def test_decide_reawait_after_its_deadline_waits_for_signals_only(
    timed_out: bool, keep_deadline: bool
) -> None:
    step = TYPED.steps["awaiting"]
    assert step.awaits is not None

    decision = decide(TYPED, step, 0, Typed.State(n=2), gd.reawait(), timed_out=timed_out)

    assert isinstance(decision, Park)
    assert decision.keep_deadline is keep_deadline
    # Past the deadline a reawait gets none: the passed one would wake it at once, forever.
    assert decision.timeout == (None if timed_out else step.awaits.timeout)


def test_decide_reawait_in_a_step_that_awaits_nothing_takes_the_error_path() -> None:
    decision = _run(TYPED, "plain", gd.reawait())

    assert isinstance(decision, RetryLater)
    error = _error(decision.error)
    assert error["type"].endswith("InvalidOutcome")
    assert "reawait" in error["message"]


# -- things that are not outcomes, and states that cannot be encoded ------------------------


@pytest.mark.parametrize(
    "produced", [None, 42, "goto", gd.goto], ids=["none", "int", "str", "constructor"]
)
def test_decide_non_outcome_takes_the_error_path(produced: Any) -> None:
    decision = _run(TYPED, "plain", produced, attempt=0)

    assert isinstance(decision, RetryLater)
    error = _error(decision.error)
    assert error["type"] == f"{InvalidOutcome.__module__}.InvalidOutcome"
    assert "not an outcome" in error["message"]

    last = _run(TYPED, "plain", produced, attempt=3)
    assert isinstance(last, Finish)
    assert last.status == "failed"


@pytest.mark.parametrize(
    ("spec", "state", "outcome"),
    [
        (UNTYPED, {"x": object()}, gd.done()),
        (UNTYPED, {"x": 1j}, gd.retry()),
        (UNTYPED, {"x": object()}, gd.stop("why")),
        (TYPED, Typed.State(n="many"), gd.goto("plain")),  # type: ignore[arg-type]
        (TYPED, Typed.State(tags=[1, 2]), gd.done(Typed.Result(Typed.Result.Inner(1), True))),  # type: ignore[list-item]
        (TYPED, Typed.State(), gd.goto("plain", {"n": "x"})),
        (TYPED, Typed.State(), gd.goto("plain", object())),
    ],
    ids=[
        "object-done",
        "complex-retry",
        "object-stop",
        "struct-field-type",
        "struct-list-item",
        "dict-override",
        "object-override",
    ],
)
def test_decide_unencodable_state_takes_the_error_path_not_a_commit(
    spec: gd.WorkflowSpec, state: Any, outcome: Any
) -> None:
    step = next(iter(spec.steps)) if spec is UNTYPED else "first"

    decision = _run(spec, step, outcome, state=state)

    assert isinstance(decision, RetryLater)
    assert decision.state is None  # the bad state is never committed
    error = _error(decision.error)
    assert error["type"] == f"{ValidationError.__module__}.ValidationError"
    assert "state" in error["message"]


# -- the workflow's handler ---------------------------------------------------------------


def test_decide_exception_goes_to_the_handler_first() -> None:
    exc = _raised(RuntimeError("boom"))

    decision = _run(HANDLED, "only", exc, state={})

    assert isinstance(decision, HandOff)
    assert decision.error is exc


@pytest.mark.parametrize(
    "produced", [gd.goto("no" + "where"), 42, gd.reawait()], ids=["unknown", "int", "reawait"]
)
def test_decide_uncommittable_outcome_goes_to_the_handler_first(produced: Any) -> None:
    decision = _run(HANDLED, "only", produced, state={})

    assert isinstance(decision, HandOff)
    assert isinstance(decision.error, InvalidOutcome)


def test_decide_handled_outcome_is_applied() -> None:
    decision = _run(HANDLED, "only", gd.goto("after"), state={"x": 1}, handled=True)

    assert decision == MoveTo("after", b'{"x":1}', None, True, max_attempts=3)


def test_decide_handled_failure_falls_back_to_the_default_policy() -> None:
    exc = _raised(RuntimeError("handler broke"))

    retried = _run(HANDLED, "only", exc, state={}, handled=True, attempt=0)
    failed = _run(HANDLED, "only", exc, state={}, handled=True, attempt=2)

    assert isinstance(retried, RetryLater)
    low, high = _backoff_bounds(HANDLED.retry.backoff, 1)
    assert low <= retried.delay <= high
    assert _error(retried.error)["message"] == "handler broke"
    assert isinstance(failed, Finish)
    assert failed.status == "failed"


def test_decide_handler_returning_a_non_outcome_is_not_handed_off_again() -> None:
    decision = _run(HANDLED, "only", None, state={}, handled=True)

    assert isinstance(decision, RetryLater)
    assert _error(decision.error)["type"].endswith("InvalidOutcome")
