"""`decide()` with a payload limit: an outcome storing more than `max_payload_bytes` of JSON
(state, result, a child's state) is not committed; the error path decides instead."""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest

import gendurable as gd
from gendurable.codec import DEFAULT_MAX_PAYLOAD_BYTES, decode_json
from gendurable.engine.decide import (
    Catalog,
    Finish,
    HandOff,
    MoveTo,
    Park,
    RetryLater,
    SpawnChildren,
    decide,
)

LIMIT = 100


class Text(msgspec.Struct):
    s: str = ""


@gd.workflow(name="limitdecide.child")
class Child:
    State = Text

    @gd.step
    async def only(self, state: Text, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


@gd.workflow(name="limitdecide.flow", max_attempts=3)
class Flow:
    State = Text

    @gd.step(start=True, to=("wait", "after"))
    async def first(self, state: Text, ctx: gd.Context) -> gd.Outcome:
        return gd.done()

    @gd.step
    @gd.await_signals("go")
    async def wait(self, state: Text, ctx: gd.Context) -> gd.Outcome:
        return gd.reawait()

    @gd.step
    async def after(self, state: Text, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


@gd.workflow(name="limitdecide.handled")
class Handled:
    State = Text

    @gd.step
    async def only(self, state: Text, ctx: gd.Context) -> gd.Outcome:
        return gd.done()

    async def handle(self, error: Exception, state: Text, ctx: gd.Context) -> gd.Outcome:
        return gd.stop("handled")


CATALOG = Catalog({s.name: s for s in (Flow.spec, Child.spec, Handled.spec)}, {}, LIMIT)


def run(spec: Any, step: str, produced: Any, state: Any = None, attempt: int = 0) -> Any:
    return decide(
        spec,
        spec.steps[step],
        attempt,
        Text() if state is None else state,
        produced,
        rng=random.Random(1),
        catalog=CATALOG,
    )


def big(n: int = LIMIT) -> Text:
    return Text(s="x" * n)


def error_message(decision: Any) -> str:
    assert isinstance(decision, RetryLater | Finish), decision
    assert decision.error is not None
    message: str = decode_json(decision.error)["message"]
    return message


@pytest.mark.parametrize(
    ("step", "produced", "what"),
    [
        ("first", gd.goto("after", state=big()), "state"),
        ("first", gd.goto("wait", state=big()), "state"),
        ("first", gd.retry(state=big()), "state"),
        ("wait", gd.reawait(state=big()), "state"),
        ("first", gd.done({"r": "x" * LIMIT}), "result"),
        ("first", gd.spawn([Child.new(state=big())], then="after"), "spawn child 0"),
        ("first", gd.spawn([], then="after", state=big()), "state"),
    ],
    ids=["goto", "goto-park", "retry", "reawait", "result", "child-state", "spawn-state"],
)
def test_payload_limit_oversized_outcome_takes_the_error_path(
    step: str, produced: Any, what: str
) -> None:
    decision = run(Flow.spec, step, produced)

    assert isinstance(decision, RetryLater)
    assert decision.state is None  # the stored state is kept as it was
    message = error_message(decision)
    assert message.startswith(what)
    assert f"above the limit of {LIMIT} bytes" in message


def test_payload_limit_counts_the_mutated_state_of_a_plain_goto() -> None:
    decision = run(Flow.spec, "first", gd.goto("after"), state=big())

    assert "state is 108 bytes of JSON, above the limit of 100 bytes" in error_message(decision)


def test_payload_limit_oversized_outcome_on_the_last_attempt_fails() -> None:
    decision = run(Flow.spec, "first", gd.done(), state=big(), attempt=2)

    assert isinstance(decision, Finish)
    assert (decision.status, decision.state, decision.result) == ("failed", None, None)
    assert "above the limit of 100 bytes" in error_message(decision)


def test_payload_limit_oversized_outcome_goes_to_the_handler_first() -> None:
    decision = run(Handled.spec, "only", gd.done(), state=big())

    assert isinstance(decision, HandOff)
    assert "above the limit" in str(decision.error)


def test_payload_limit_exactly_at_the_limit_commits() -> None:
    at = Text(s="x" * (LIMIT - len(b'{"s":""}')))
    assert len(msgspec.json.encode(at)) == LIMIT

    moved = run(Flow.spec, "first", gd.goto("after", state=at))
    parked = run(Flow.spec, "first", gd.goto("wait", state=at))
    spawned = run(Flow.spec, "first", gd.spawn([Child.new(state=at)], then="after", state=at))

    assert isinstance(moved, MoveTo)
    assert isinstance(parked, Park)
    assert isinstance(spawned, SpawnChildren)
    assert len(moved.state) == LIMIT


def test_payload_limit_default_is_one_mebibyte() -> None:
    assert DEFAULT_MAX_PAYLOAD_BYTES == 1_048_576
    assert Catalog({}, {}).max_payload_bytes == DEFAULT_MAX_PAYLOAD_BYTES
