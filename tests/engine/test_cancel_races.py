"""`cancel`, `signal` and `result` racing on one key, for real: three client engines (three
pools) send them at once while a worker runs the instance.

The documented outcomes, checked every round:
- `cancel` returns only if it ended the instance: it ends `cancelled`, `result()` raises
  `WorkflowFailed(status="cancelled")`. If the instance had already ended (the signal woke
  it and it finished first), `cancel` raises `NoTarget` and `result()` returns its result.
- `signal` either lands while the instance is live (it returns the signal's id: the step
  consumes it, or the cancel purges it) or finds it ended and raises `NoTarget`, storing
  nothing. No signal is ever left behind a terminal instance.
- Of two racing cancels, exactly one returns; the other raises `NoTarget`.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable
from typing import Any

import pytest

import gendurable as gd
from gendurable.testing import MakeEngine

pytestmark = pytest.mark.race

ROUNDS = 60


@gd.workflow(name="races.flow")
class Flow:
    @gd.step(start=True)
    @gd.await_signals("go")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done(ctx.awaited[0].payload)


async def later(delay: float, call: Awaitable[Any]) -> Any:
    """`call`, sent after `delay` seconds: spreads the race over the signal's whole course
    (stored, woken, claimed, step run, committed)."""
    await asyncio.sleep(delay)
    return await call


async def parked(engine: gd.Engine, key: str) -> None:
    for _ in range(500):
        if (await Flow.get(key, engine=engine)).status == "awaiting":
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"{key} never parked")


async def test_cancel_signal_and_result_racing_on_one_key_end_as_documented(
    make_engine: MakeEngine, rows: Any
) -> None:
    worker = await make_engine(workflows=[Flow], queues={"default": 4})
    canceller, signaller, waiter = [await make_engine(workflows=[Flow], queues=None) for _ in "csw"]
    seen: Counter[tuple[str, str, str]] = Counter()
    rng = random.Random(11)
    for i in range(ROUNDS):
        key = f"r{i}"
        handle = await Flow.start(key=key, engine=worker)
        await parked(worker, key)
        # The result waiter first (it must see the end, whichever it is), then the two
        # writers at once, in an order that alternates.
        result = asyncio.create_task(Flow.result(key, timeout=10, engine=waiter))
        lead = rng.uniform(-0.01, 0.03)  # > 0: the signal goes first by that much
        cancel = later(max(lead, 0), Flow.cancel(key, engine=canceller))
        signal = later(max(-lead, 0), Flow.signal(key, "go", i, engine=signaller))
        if i % 2:
            cancelled, signalled = await asyncio.gather(cancel, signal, return_exceptions=True)
        else:
            signalled, cancelled = await asyncio.gather(signal, cancel, return_exceptions=True)
        ended: Any = await asyncio.gather(result, return_exceptions=True)
        outcome = ended[0]
        info = await Flow.get(handle.id, engine=worker)

        if cancelled is None:
            assert info.status == "cancelled", (i, info)
            assert isinstance(outcome, gd.WorkflowFailed), (i, outcome)
            assert outcome.status == "cancelled"
        else:
            assert isinstance(cancelled, gd.NoTarget), (i, cancelled)
            assert info.status == "done", (i, info)
            assert isinstance(signalled, int)  # only the signal can have ended it
            assert outcome == i
        if isinstance(signalled, BaseException):
            assert isinstance(signalled, gd.NoTarget), (i, signalled)
            assert info.status == "cancelled"
        assert await rows.signals(handle.id) == [], i
        seen[
            (
                info.status,
                "cancel ok" if cancelled is None else "cancel NoTarget",
                "signal stored" if isinstance(signalled, int) else "signal NoTarget",
            )
        ] += 1
    print(dict(seen))  # the mix of orders this run produced (shown with -s)
    assert sum(seen.values()) == ROUNDS


async def test_cancel_racing_cancel_exactly_one_ends_it(make_engine: MakeEngine) -> None:
    await make_engine(workflows=[Flow], queues={"default": 4})
    first, second = [await make_engine(workflows=[Flow], queues=None) for _ in "ab"]
    for i in range(ROUNDS):
        key = f"c{i}"
        await Flow.start(key=key, engine=first)

        results = await asyncio.gather(
            Flow.cancel(key, engine=first), Flow.cancel(key, engine=second), return_exceptions=True
        )

        assert sorted(type(r).__name__ for r in results) == ["NoTarget", "NoneType"], results
        assert (await Flow.get(key, engine=first)).status == "cancelled"
