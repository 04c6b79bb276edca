"""A signal whose name only a later step awaits, sent while an earlier step awaits.

It is accepted (some step of the workflow declares it) and stored, and it does not wake
the instance: the awaiting step waits on its own names only. When the later step is
entered, the stored signal satisfies its await at once. A name no step declares is refused.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

import gendurable as gd
from gendurable.testing import MakeEngine, RecorderFactory
from recordings import recorded

SEEN: list[tuple[str, list[str], list[str]]] = recorded([])


@gd.workflow(name="later.flow")
class Flow:
    @gd.step(start=True)
    @gd.await_signals("first", timeout=timedelta(days=1))
    async def one(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        SEEN.append(("one", [s.name for s in ctx.awaited], [s.name for s in ctx.inbox]))
        if ctx.timed_out:
            return gd.stop("no first signal")
        return gd.goto(self.two)

    @gd.step
    @gd.await_signals("second")
    async def two(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        SEEN.append(("two", [s.name for s in ctx.awaited], [s.name for s in ctx.inbox]))
        return gd.done([s.payload for s in ctx.awaited])


async def test_signal_for_a_later_step_is_stored_without_waking_the_instance(
    make_engine: MakeEngine,
    recorder: RecorderFactory,
    rows: Any,
    manual_clock: gd.ManualClock,
) -> None:
    engine = await make_engine(workflows=[Flow], start=False)
    events = recorder(engine)
    await engine.start()
    handle = await Flow.start(key="f")
    await engine.drain()
    parked = await rows.instance(handle.id)

    early = await Flow.signal("f", "second", "early")
    manual_clock.advance(timedelta(hours=23))
    await engine.drain()

    row = await rows.instance(handle.id)
    assert (row["status"], row["step"], row["await_names"]) == ("awaiting", "one", ["first"])
    assert row["await_deadline"] == parked["await_deadline"]
    assert [(s["id"], s["name"]) for s in await rows.signals(handle.id)] == [(early, "second")]
    assert SEEN == []
    assert events.of(("step", "start")) == []

    await Flow.signal("f", "first", "go")
    await engine.drain()

    assert await Flow.result("f", timeout=5) == ["early"]
    assert SEEN == [("one", ["first"], ["second", "first"]), ("two", ["second"], ["second"])]
    assert await rows.signal_count() == 0


async def test_signal_for_a_later_step_does_not_stop_the_await_timeout(
    make_engine: MakeEngine, rows: Any, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=[Flow])
    await Flow.start(key="t")
    await engine.drain()
    await Flow.signal("t", "second", "early")

    manual_clock.advance(timedelta(days=1, seconds=1))
    await engine.drain()

    with pytest.raises(gd.WorkflowFailed, match="no first signal"):
        await Flow.result("t", timeout=5)
    assert SEEN == [("one", [], ["second"])]
    assert await rows.signal_count() == 0  # purged at the end


async def test_signal_name_no_step_declares_is_refused_while_awaiting(
    make_engine: MakeEngine, rows: Any
) -> None:
    engine = await make_engine(workflows=[Flow])
    await Flow.start(key="u")
    await engine.drain()

    with pytest.raises(
        gd.ValidationError, match=r"awaits no signal named 'third' \(it awaits: first, second\)"
    ):
        await Flow.signal("u", "third")

    assert await rows.signal_count() == 0
