"""Time, injected: PostgreSQL owns time in production, tests move a manual clock.

Every statement takes `coalesce($now, now())`. `SystemClock.now()` returns None so the
database decides, and nodes with skewed clocks agree. `ManualClock.now()` returns its own
time, which a test moves with `advance()`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Where the engine gets `now` for its statements."""

    def now(self) -> datetime | None:
        """The time to pass to SQL, or None to let PostgreSQL use its own `now()`."""
        ...

    @property
    def manual(self) -> bool:
        """True when time only moves by hand (background loops then wait for `drain`)."""
        ...


class SystemClock:
    """The production clock: the database's `now()` is the time."""

    manual = False

    def now(self) -> datetime | None:
        """Always None: PostgreSQL decides."""
        return None


class ManualClock:
    """A clock that only moves when told; pass it to `Engine(clock=...)` in tests."""

    manual = True

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start time")

    def now(self) -> datetime:
        """The clock's current time."""
        return self._now

    def advance(self, by: timedelta) -> datetime:
        """Move the clock forward by `by` and return the new time."""
        if by < timedelta(0):
            raise ValueError("a ManualClock only moves forward")
        self._now += by
        return self._now

    def set(self, to: datetime) -> None:
        """Jump to `to` (not earlier than now)."""
        if to < self._now:
            raise ValueError("a ManualClock only moves forward")
        self._now = to
