"""Rate-limit and retry-policy values users pass to the DSL and the engine."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class Limit:
    """A token bucket: `allowed` tokens refill every `per`, holding at most `burst`.

    `burst` defaults to `allowed`. A step with `weight=w` takes `w` tokens.
    """

    allowed: int
    per: timedelta = timedelta(seconds=1)
    burst: int | None = None

    def __post_init__(self) -> None:
        if self.allowed <= 0:
            raise ValueError(f"Limit.allowed must be positive, got {self.allowed}")
        if self.per <= timedelta(0):
            raise ValueError(f"Limit.per must be a positive duration, got {self.per}")
        if self.burst is not None and self.burst <= 0:
            raise ValueError(f"Limit.burst must be positive, got {self.burst}")

    @property
    def capacity(self) -> int:
        """The most tokens the bucket holds (`burst`, or `allowed` when unset)."""
        return self.allowed if self.burst is None else self.burst


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: retry n waits `base * factor**(n-1)`, capped at `max`, then
    spread by up to +/- `jitter` (a fraction) so that retries of many instances scatter."""

    base: timedelta = timedelta(seconds=1)
    factor: float = 2.0
    max: timedelta = timedelta(minutes=10)
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.base < timedelta(0) or self.max < timedelta(0):
            raise ValueError("Backoff durations must not be negative")
        if self.factor < 1.0:
            raise ValueError(f"Backoff.factor must be at least 1, got {self.factor}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"Backoff.jitter must be within [0, 1], got {self.jitter}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> timedelta:
        """The wait before retry number `attempt` (1-based), jittered by +/- `jitter`."""
        seconds = min(
            self.base.total_seconds() * self.factor ** max(attempt - 1, 0),
            self.max.total_seconds(),
        )
        if self.jitter:
            spread = (rng or random).uniform(-self.jitter, self.jitter)
            seconds *= 1.0 + spread
        return timedelta(seconds=max(seconds, 0.0))
