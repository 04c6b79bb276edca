"""Properties of `decide()` (pure, no database) over random steps, attempts, outcomes and
inboxes: a decision consumes exactly the signals the step saw when it makes progress and
none otherwise, attempts are counted up to the limit and never past it, a reawait never
lowers its seen mark nor loses its deadline, and the same inputs give the same decision.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from props_support import scaled

import gendurable as gd
from gendurable.engine.decide import (
    Catalog,
    Finish,
    HandOff,
    MoveTo,
    Park,
    RetryLater,
    SpawnChildren,
    decide,
    max_attempts,
)
from gendurable.outcome import Done, Goto, Reawait, Retry, Spawn, Stop

HOUR = timedelta(hours=1)
BACKOFF = gd.Backoff(base=timedelta(seconds=2), factor=2.0, max=timedelta(minutes=5), jitter=0.3)


def _flow(attempts: int, *, handler: bool) -> gd.WorkflowSpec:
    """A workflow whose steps cover every kind of target: plain, awaiting (with and without
    a deadline), rate-limited, and one with its own max_attempts."""

    class Flow:
        @gd.step(start=True)
        async def plain(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

        @gd.step
        @gd.await_signals("a", "b", timeout=HOUR)
        async def waits(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

        @gd.step
        @gd.await_signals("c")
        async def forever(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

        @gd.step(rate_limit=gd.Limit(5))
        async def limited(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

        @gd.step(max_attempts=2)
        async def fragile(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

    if handler:

        def handle(self: Any, error: BaseException, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.stop("handled")

        Flow.handle = handle  # type: ignore[attr-defined]
    name = f"props.decide.{attempts}{'.handled' if handler else ''}"
    decorated: Any = gd.workflow(name=name, max_attempts=attempts, backoff=BACKOFF)(Flow)
    spec: gd.WorkflowSpec = decorated.spec
    return spec


SPECS = [_flow(n, handler=False) for n in (1, 2, 3, 5)] + [_flow(3, handler=True)]
STEPS = ("plain", "waits", "forever", "limited", "fragile")
AWAITING = {"waits": HOUR, "forever": None}


@gd.workflow(name="props.decide.child")
class Child:
    @gd.step
    async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


# Text PostgreSQL can store: no NUL and no lone surrogate (refused up front since the bad-input
# checks; a separate test covers that refusal).
texts = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
delays = st.none() | st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=2))
outcomes = st.one_of(
    st.builds(gd.goto, st.sampled_from(STEPS), delay=delays),
    st.builds(gd.goto, st.just("nowhere")),
    st.builds(gd.retry, delay=delays),
    st.builds(gd.done, st.none() | st.integers() | st.text(texts, max_size=5)),
    st.builds(gd.stop, st.text(texts, max_size=10)),
    st.builds(gd.reawait),
    st.builds(
        lambda keys, then: gd.spawn([Child.new(key=k) for k in keys], then=then),
        st.lists(st.none() | st.text(texts, min_size=1, max_size=4), max_size=3).map(
            lambda ks: [k for i, k in enumerate(ks) if k is None or k not in ks[:i]]
        ),
        st.sampled_from(STEPS),
    ),
    st.builds(RuntimeError, st.text(texts, max_size=10)),
    st.just(42),  # not an outcome
)


class Case:
    """One decide() call, drawn at random."""

    def __init__(self, data: st.DataObject) -> None:
        self.spec: gd.WorkflowSpec = data.draw(st.sampled_from(SPECS), "spec")
        self.step = self.spec.steps[data.draw(st.sampled_from(STEPS), "step")]
        self.limit = max_attempts(self.spec, self.step)
        self.attempt: int = data.draw(st.integers(0, self.limit - 1), "attempt")
        self.produced: Any = data.draw(outcomes, "produced")
        self.awaited: tuple[int, ...] = tuple(
            data.draw(st.lists(st.integers(1, 10**9), unique=True, max_size=4), "awaited")
        )
        self.seen: int = data.draw(st.integers(0, 10**9), "seen")
        self.timed_out: bool = data.draw(st.booleans(), "timed_out")
        self.handled: bool = data.draw(st.booleans(), "handled")
        self.seed: int = data.draw(st.integers(0, 2**32), "seed")
        self.catalog_specs = {self.spec.name: self.spec, Child.spec.name: Child.spec}

    def decide(self) -> Any:
        return decide(
            self.spec,
            self.step,
            self.attempt,
            {"n": 1},
            self.produced,
            handled=self.handled,
            awaited=self.awaited,
            seen=self.seen,
            timed_out=self.timed_out,
            rng=random.Random(self.seed),
            catalog=Catalog(self.catalog_specs, {}),
        )

    @property
    def progresses(self) -> bool:
        """The outcome moves the instance on (and so consumes what the step saw)."""
        p = self.produced
        if isinstance(p, Goto | Spawn):
            target = p.step if isinstance(p, Goto) else p.then
            return target in STEPS
        return False

    @property
    def fails(self) -> bool:
        """The outcome cannot commit: it goes to the error path."""
        p = self.produced
        if isinstance(p, BaseException) or p == 42:
            return True
        if isinstance(p, Goto) and p.step not in STEPS:
            return True
        if isinstance(p, Reawait) and self.step.awaits is None:
            return True
        return isinstance(p, Retry) and self.attempt + 1 >= self.limit


@scaled(300)
@given(st.data())
def test_decide_consumes_exactly_what_the_step_saw_and_only_on_progress(
    data: st.DataObject,
) -> None:
    case = Case(data)
    decision = case.decide()

    if isinstance(decision, MoveTo | SpawnChildren):
        assert case.progresses
        assert decision.consumed == case.awaited
    elif isinstance(decision, Park):
        if isinstance(case.produced, Reawait):
            assert decision.consumed == ()  # a reawait keeps what it saw in the inbox
        else:
            assert case.progresses
            assert decision.consumed == case.awaited
    else:
        # Retries, failures and ends consume nothing (the end purges the whole inbox).
        assert not case.progresses or isinstance(decision, HandOff)
        assert not hasattr(decision, "consumed")


@scaled(300)
@given(st.data())
def test_decide_counts_attempts_up_to_the_limit_and_never_retries_past_it(
    data: st.DataObject,
) -> None:
    case = Case(data)
    decision = case.decide()

    if case.fails and case.spec.handler is not None and not case.handled:
        assert isinstance(decision, HandOff)
        return
    if case.fails:
        if case.attempt + 1 < case.limit:
            assert isinstance(decision, RetryLater)
            low = BACKOFF.base * BACKOFF.factor**case.attempt
            nominal = min(low, BACKOFF.max).total_seconds()
            assert decision.delay.total_seconds() >= nominal * (1 - BACKOFF.jitter) - 1e-6
            assert decision.delay.total_seconds() <= nominal * (1 + BACKOFF.jitter) + 1e-6
            assert decision.error is not None
        else:
            assert isinstance(decision, Finish)
            assert decision.status == "failed"
            assert decision.error is not None
        return
    if isinstance(case.produced, Retry):
        assert isinstance(decision, RetryLater)
        assert case.attempt + 1 < case.limit
        if case.produced.delay is not None:
            assert decision.delay == case.produced.delay
        return
    assert not isinstance(decision, RetryLater | HandOff)
    if isinstance(case.produced, Done):
        assert isinstance(decision, Finish)
        assert decision.status == "done"
    if isinstance(case.produced, Stop):
        assert isinstance(decision, Finish)
        assert decision.status == "failed"  # chosen by the workflow, whatever the attempt


@scaled(300)
@given(st.data())
def test_decide_park_deadlines_and_seen_marks(data: st.DataObject) -> None:
    case = Case(data)
    decision = case.decide()
    if not isinstance(decision, Park):
        return
    p = case.produced
    if isinstance(p, Reawait):
        # Never wakes again on what it saw: the mark covers every awaited id and the old one.
        assert decision.step == case.step.name
        assert decision.seen == max((case.seen, *case.awaited))
        # Before its deadline a reawait keeps it; after, it waits for signals only.
        assert decision.keep_deadline is (not case.timed_out)
        assert decision.timeout == (None if case.timed_out else AWAITING[case.step.name])
        assert decision.keep_children
    else:
        assert isinstance(p, Goto)
        assert p.delay is None  # a delayed goto moves (the await is entered when it runs)
        assert decision.step == p.step
        assert decision.timeout == AWAITING[p.step]
        assert not decision.keep_deadline
        assert decision.seen == 0
        assert not decision.keep_children


@scaled(300)
@given(st.data())
def test_decide_goto_keeps_the_claim_only_when_nothing_is_waited_for(data: st.DataObject) -> None:
    case = Case(data)
    decision = case.decide()
    p = case.produced
    if not isinstance(p, Goto) or p.step not in STEPS:
        return
    if p.step in AWAITING and p.delay is None:
        assert isinstance(decision, Park)
        return
    assert isinstance(decision, MoveTo)
    assert decision.step == p.step
    assert decision.delay == p.delay
    waits = p.step in AWAITING or p.step == "limited" or p.delay is not None
    assert decision.keep_claim is (not waits)
    assert (decision.limit.name is not None) is (p.step == "limited")


@scaled(200)
@given(st.data())
def test_decide_is_deterministic_for_a_seeded_rng(data: st.DataObject) -> None:
    case = Case(data)
    first, second = case.decide(), case.decide()
    if isinstance(first, HandOff):
        assert isinstance(second, HandOff)
        assert type(first.error) is type(second.error)
        assert str(first.error) == str(second.error)
    elif isinstance(first, Finish | RetryLater) and first.error is not None:
        # The error record holds a traceback of this call; everything else is equal.
        assert type(first) is type(second)
        assert first.state == second.state
        if isinstance(first, RetryLater):
            assert isinstance(second, RetryLater)
            assert first.delay == second.delay
    else:
        assert first == second


@scaled(100)
@given(
    st.sampled_from(SPECS),
    st.sampled_from(sorted(AWAITING)),
    st.lists(st.integers(1, 10**9), unique=True, max_size=4),
    st.integers(0, 10**9),
    st.booleans(),
)
def test_decide_reawait_keeps_its_deadline_until_it_passed(
    spec: gd.WorkflowSpec, step: str, awaited: list[int], seen: int, timed_out: bool
) -> None:
    decision = decide(
        spec,
        spec.steps[step],
        0,
        {"n": 1},
        gd.reawait(),
        awaited=tuple(awaited),
        seen=seen,
        timed_out=timed_out,
    )

    assert isinstance(decision, Park)
    assert decision.consumed == ()
    assert decision.seen == max((seen, *awaited))
    if timed_out:  # the deadline passed: wait for signals only, with no deadline at all
        assert (decision.keep_deadline, decision.timeout) == (False, None)
    else:
        assert (decision.keep_deadline, decision.timeout) == (True, AWAITING[step])
