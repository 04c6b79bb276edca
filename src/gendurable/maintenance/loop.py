"""Run a service's `run_once()` every interval until cancelled, surviving its failures."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from ..db.outage import log_failure

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
