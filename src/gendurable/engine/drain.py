"""Running an engine until nothing is due: how `engine.drain()` moves a manual clock's world.

With a manual clock no loop runs on its own: a drain runs, round after round, what the loops
would (the node's refresh, the reaper, the schedules' ticker, a claim per queue) and waits
for the steps it started, until a round changes nothing. Then it reports the due rows no
deploy knows and collects garbage once, which only deletes, so nothing becomes due.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from ..errors import EngineError
from ..maintenance.collector import Collector
from ..maintenance.nodes import Nodes
from ..maintenance.reaper import Reaper
from ..maintenance.ticker import Ticker
from .pauses import Pauses
from .scheduler import Scheduler


async def drain(
    schedulers: Mapping[str, Scheduler],
    *,
    pauses: Pauses | None,
    reaper: Reaper | None,
    ticker: Ticker | None,
    collector: Collector | None,
    nodes: Nodes | None,
    max_rounds: int,
) -> None:
    """Run everything due until nothing is (due schedule ticks start their instances), and
    no step is in flight; `EngineError` when it has not settled within `max_rounds`
    rounds."""
    if nodes is not None:  # a manual clock may have moved past this node's expiry
        await nodes.run_once()
    if pauses is not None and schedulers:  # as paused as the database says
        await pauses.listed()
    for _ in range(max_rounds):
        before = _progress(schedulers, ticker)
        reaped = await reaper.run_once() if reaper and schedulers else None
        if ticker is not None and schedulers:
            await ticker.run_once()
        for scheduler in schedulers.values():
            await scheduler.run_once()
        await asyncio.gather(*(s.idle() for s in schedulers.values()))
        after = _progress(schedulers, ticker)
        if after == before and not (reaped and (reaped.rescued or reaped.timed_out)):
            for scheduler in schedulers.values():
                await scheduler.report_unknown()
            if collector and schedulers:
                await collector.run_once()
            return
    raise EngineError(f"drain() did not settle within {max_rounds} rounds")


def _progress(
    schedulers: Mapping[str, Scheduler], ticker: Ticker | None
) -> tuple[int, int, int, int]:
    """Claims made, rows deferred, steps finished and ticks started so far: a drain goes on
    while any moves."""
    return (
        sum(s.claimed_total for s in schedulers.values()),
        sum(s.deferred_total for s in schedulers.values()),
        sum(s.finished_total for s in schedulers.values()),
        ticker.started_total if ticker is not None else 0,
    )
