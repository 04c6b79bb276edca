"""`gendurable worker MODULE:ENGINE`: run an engine until SIGTERM or SIGINT, then drain.

On the first SIGTERM/SIGINT the worker stops claiming, lets running steps finish within the
drain timeout, and releases the claims of the rest so another node takes them at once.
Unless the application configured logging itself, the worker logs to stderr at WARNING, one
line a record: every step failure (see `gendurable.telemetry.failure_handler`) and database
outage; `--log-level debug` adds tracebacks.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from ..engine.engine import Engine
from ..errors import ConfigError

READY = "gendurable worker ready"
"""Printed (and flushed) on stdout once the engine runs; supervisors and tests wait for it."""


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(level: str = "warning") -> None:
    """Log to stderr at `level`, one line a record, unless logging has a handler already
    (the application's module, imported first, configured its own)."""
    if level not in LOG_LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level.upper(), format=LOG_FORMAT)


async def serve(engine: Engine, *, drain_timeout: float = 30.0) -> None:
    """Run `engine` until SIGTERM/SIGINT, then stop it gracefully within `drain_timeout`."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        async with engine:
            print(READY, flush=True)
            await stopping.wait()
            print("gendurable worker draining", flush=True)
            await engine.stop(timeout=drain_timeout)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    print("gendurable worker stopped", flush=True)
