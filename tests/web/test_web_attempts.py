"""The instance page counts attempts against the step's own `max_attempts`, from 1."""

from __future__ import annotations

import html
from datetime import timedelta
from typing import Any

from web_support import WebFactory

import gendurable as gd
from gendurable.testing import MakeEngine


@gd.workflow(name="web.attempts.order", backoff=gd.Backoff(base=timedelta(seconds=1), jitter=0))
class Order:
    @gd.step(start=True)
    async def take(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.charge)

    @gd.step(max_attempts=2)  # the workflow allows 5
    async def charge(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        if ctx.attempt == 0:
            raise RuntimeError("card declined")
        return gd.stop("refused")


async def test_web_instance_page_counts_attempts_of_the_step(
    make_engine: MakeEngine, web: WebFactory
) -> None:
    clock = gd.ManualClock()
    engine = await make_engine(workflows=[Order], queues={"default": 1}, clock=clock)
    handle = await Order.start(key="o-1")
    await engine.drain()
    w = await web(engine=None)

    retrying = html.unescape((await w.client.get(f"/instances/{handle.id}")).text)
    clock.advance(timedelta(seconds=2))
    await engine.drain()
    stopped = html.unescape((await w.client.get(f"/instances/{handle.id}")).text)

    assert "<dt>attempt</dt><dd>2 of 2</dd>" in retrying
    assert "card declined" in retrying
    assert '<span class="where">(step charge, attempt 1 of 2)</span>' in retrying
    assert "<dt>attempt</dt><dd>2 of 2</dd>" in stopped
    assert '<span class="where">(step charge, attempt 2 of 2)</span>' in stopped
    assert "attempt ?" not in stopped
