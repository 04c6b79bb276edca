"""Run a service's `run_once()` every interval until cancelled, surviving its failures; and
report each run as telemetry (`maintenance.run`, or `maintenance.exception` when it failed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ..db.outage import log_failure
from ..events import MAINTENANCE_EXCEPTION, MAINTENANCE_RUN
from ..telemetry import Telemetry

_log = logging.getLogger("gendurable.maintenance")


async def every(interval: timedelta, run_once: Callable[[], Awaitable[Any]], name: str) -> None:
    """Call `run_once` now and then every `interval`; a failure is logged, not fatal."""
    seconds = interval.total_seconds()
    while True:
        try:
            await run_once()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_failure(_log, exc, "%s failed; trying again in %ss", name, seconds)
        await asyncio.sleep(seconds)


@dataclass(slots=True)
class Run:
    """One run of a background task, while it goes on: set `rows` to the rows it touched."""

    rows: int = 0


@contextmanager
def observed(telemetry: Telemetry, task: str, queue: str | None = None) -> Iterator[Run]:
    """Report the run of `task` the block makes: `maintenance.run` with its duration (s) and
    `rows`, or `maintenance.exception` with the error when it raises (which goes on).

    A cancelled run (the engine stopping) reports nothing.
    """
    run = Run()
    metadata: dict[str, Any] = {"task": task} if queue is None else {"task": task, "queue": queue}
    started = time.perf_counter()
    try:
        yield run
    except Exception as exc:
        duration = time.perf_counter() - started
        telemetry.emit(MAINTENANCE_EXCEPTION, {"duration": duration}, {**metadata, "error": exc})
        raise
    duration = time.perf_counter() - started
    telemetry.emit(MAINTENANCE_RUN, {"duration": duration, "rows": run.rows}, metadata)
