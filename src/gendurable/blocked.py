"""`BlockedBy`: why an instance that is not running waits.

The database decides (the SQL function `<schema>.blocked_by(instance, at)`, also behind the
view `<schema>.instances_explained`); this module only carries and words its answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast, get_args

Reason = Literal[
    "scheduled",
    "backoff",
    "awaiting",
    "children",
    "rate_limit",
    "concurrency",
    "unknown",
    "queue",
    "paused",
]
"""Every reason `BlockedBy.reason` may hold."""

REASONS: tuple[str, ...] = get_args(Reason)

WAITING_STATUSES: tuple[str, ...] = ("available", "awaiting", "waiting")
"""The statuses in which an instance waits for something: the only ones with a `BlockedBy`."""

_LEAD = {
    "scheduled": "scheduled",
    "backoff": "backing off:",
    "awaiting": "awaiting",
    "children": "waiting for children:",
    "rate_limit": "rate-limited:",
    "concurrency": "serialized:",
    "unknown": "unknown:",
    "queue": "queued:",
    "paused": "paused:",
}


@dataclass(frozen=True, slots=True)
class BlockedBy:
    """Why a live instance that is not executing waits, as of the moment it was read.

    `reason` is one of:

    - `"scheduled"`: `run_at` is in the future (`until` is `run_at`).
    - `"backoff"`: a retry waits out its delay after a failure (`until` is `run_at`).
    - `"awaiting"`: parked until one of the signals in `detail` arrives (`until` is the
      await's deadline, or `None`).
    - `"children"`: waiting for spawned children, `detail` "K of N pending".
    - `"rate_limit"`: the step's token bucket (named in `detail`) is short of tokens;
      `until` is when enough come, `None` for a limit no engine configured.
    - `"concurrency"`: another instance holding the same concurrency key is executing
      (`detail` names the key and that instance).
    - `"unknown"`: no live engine knows the workflow or step (a deploy is missing).
    - `"queue"`: due, and either no live engine runs its queue, or it waits for a free slot.
    - `"paused"`: its queue is paused (`Engine.pause`), due or not: `detail` says since when
      and by whom; nothing of the queue starts until it is resumed.

    `str(blocked_by)` reads as one sentence, for example
    "awaiting approved or rejected until 2026-12-02 10:00 UTC".
    """

    reason: Reason
    until: datetime | None
    detail: str

    def __str__(self) -> str:
        words = [_LEAD.get(self.reason, self.reason)]
        if self.detail:
            words.append(self.detail)
        if self.until is not None:
            words.append(f"until {format_utc(self.until)}")
        return " ".join(words)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> BlockedBy | None:
        """The value of a row (a mapping) carrying `blocked_reason/_until/_detail`; None
        when unblocked."""
        return cls.from_columns(
            row.get("blocked_reason"), row.get("blocked_until"), row.get("blocked_detail")
        )

    @classmethod
    def from_columns(
        cls, reason: str | None, until: datetime | None, detail: str | None
    ) -> BlockedBy | None:
        """The value of the `blocked_by` function's columns; None when unblocked."""
        if reason is None:
            return None
        return cls(cast(Reason, reason), until, detail or "")


def format_utc(moment: datetime) -> str:
    """`2026-12-02 10:00 UTC`; with seconds when the time is not on a whole minute."""
    utc = moment.astimezone(UTC)
    if utc.second or utc.microsecond:
        return utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    return utc.strftime("%Y-%m-%d %H:%M UTC")
