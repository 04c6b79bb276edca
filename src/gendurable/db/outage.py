"""Database outages in the log: a few lines however long they last and however many wait.

While the server is down, every loop of an engine (claims, heartbeats, the reaper, the
poller, the listener) retries on its own. Reported one line per retry of each, a stopped
server fills the log (hundreds of lines a minute, with tracebacks). An `Outage` is shared by
everything that retries on one pool (or one connection): it reports the first failure, then
a reminder as the outage passes 1, 2, 4, 8, 16, 32 and 60 seconds, and every minute after
that, each in one line naming the error and the wait before the next try, and one line when
the database answers again. Every other failed attempt is logged at DEBUG, and tracebacks
only at DEBUG.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .connect import DATABASE_ERRORS

REMINDERS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0)
"""Seconds into an outage at which it is reported again; then every `REMINDERS[-1]`."""


def one_line(exc: BaseException) -> str:
    """`Type: message` on one line (asyncpg's messages may span several)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def log_failure(logger: logging.Logger, exc: BaseException, message: str, *args: Any) -> None:
    """Log that a loop's round failed with `exc` (`message % args` says which and what next).

    A database failure (unreachable, refused, an error of the server) is one WARNING line
    naming it, its traceback only at DEBUG; anything else is a bug, logged with its traceback.
    """
    if isinstance(exc, DATABASE_ERRORS):
        logger.warning(
            message + " (%s)",
            *args,
            one_line(exc),
            exc_info=exc if logger.isEnabledFor(logging.DEBUG) else None,
        )
    else:
        logger.error(message, *args, exc_info=exc)


class Outage:
    """The outage of one database connection (or pool), as its users see it."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str = "database",
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what
        self.clock = clock
        self.since: float | None = None
        self.failures = 0
        """Failed tries reported so far, over every outage."""
        self._reported = 0

    @property
    def active(self) -> bool:
        """True from a failure until the next success."""
        return self.since is not None

    def failed(self, exc: BaseException, retry_in: float) -> None:
        """A try failed with `exc`; the next one comes after `retry_in` seconds."""
        now = self.clock()
        self.failures += 1
        debug = self.logger.isEnabledFor(logging.DEBUG)
        if self.since is None:
            self.since, self._reported = now, 0
            level, lasted = logging.WARNING, ""
        else:
            elapsed = now - self.since
            due = (
                REMINDERS[self._reported]
                if self._reported < len(REMINDERS)
                else REMINDERS[-1] * (self._reported - len(REMINDERS) + 2)
            )
            if elapsed >= due:
                self._reported += 1
                while self._reported < len(REMINDERS) and elapsed >= REMINDERS[self._reported]:
                    self._reported += 1  # a long first retry may pass several reminders
                level = logging.WARNING
            else:
                level = logging.DEBUG
            lasted = f" for {elapsed:.0f}s"
        if self.logger.isEnabledFor(level):
            self.logger.log(
                level,
                "%s unavailable%s (%s); retrying in %.2fs",
                self.what,
                lasted,
                one_line(exc),
                retry_in,
                exc_info=exc if debug else None,
            )

    def recovered(self) -> None:
        """A try succeeded: report the end of the outage, if there was one."""
        if self.since is None:
            return
        elapsed = self.clock() - self.since
        self.since = None
        self.logger.warning("%s reachable again after %.1fs", self.what, elapsed)
