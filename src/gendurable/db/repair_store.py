"""The repairs of many instances and rewinds (`sql/bulk.sql`, `sql/rewind.sql`).

`RepairStore` is an `OperatorStore` (a bulk run falls back on the single-row cancel and
retry for a row a page found held) with these statements on top, one method each, keyword
arguments, typed rows. None of the writers is repeated through a connection failure once
sent (a repeat would report rows it changed the first time as no longer matching; see
`pool.NOT_IDEMPOTENT`); a page chosen as a deadlock's victim, rolled back whole, is run
again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from .operator_store import OperatorStore
from .rows import CancelVerdict, MatchCount, RetryVerdict, Rewound

R = TypeVar("R")

DEADLOCK_RETRIES = 3
"""Times a page rolled back as a deadlock's victim is run again before the error is raised."""


@dataclass(frozen=True, slots=True)
class Match:
    """Which instances a bulk operation is about: `statuses` (at least one), and each
    optional filter (None: any)."""

    statuses: tuple[str, ...]
    workflow: str | None = None
    step: str | None = None
    error_contains: str | None = None
    """A text the error's type or message contains, in any case."""
    since: timedelta | None = None
    """Ended within this long before now."""
    key_prefix: str | None = None
    queue: str | None = None

    def values(self) -> dict[str, Any]:
        """The filter as the statements' parameters, by name."""
        return {
            "workflow": self.workflow,
            "statuses": list(self.statuses),
            "step": self.step,
            "error_contains": self.error_contains,
            "since": self.since,
            "key_prefix": self.key_prefix,
            "queue": self.queue,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a page did to one of its ids: `verdict` is `retried` / `cancelled`, or why not
    (`not_failed`, `not_live`, `key_held`, `parent_not_waiting`, `busy`, `gone`). `status`
    is the row's status when it was judged, `holder` the live instance holding its key."""

    id: int
    verdict: str
    status: str | None = None
    holder: int | None = None
    parent_id: int | None = None


@dataclass(frozen=True, slots=True)
class CancelPage:
    """What `instances_cancel_many` did: a verdict per id, and the live descendants it
    cancelled with them."""

    verdicts: list[Verdict]
    cascaded: int


class RepairStore(OperatorStore):
    """Bulk repairs and rewinds of one schema, with the operators' statements."""

    async def instances_matching(
        self, match: Match, *, after: int, limit: int, now: datetime | None
    ) -> list[int]:
        """The next `limit` ids above `after`, ascending, of the instances `match` selects."""
        return await self.db.column(
            "instances_matching", **match.values(), after_id=after, limit=limit, now=now
        )

    async def instances_matching_count(
        self, match: Match, *, limit: int | None, now: datetime | None
    ) -> int:
        """How many instances `match` selects, counting up to `limit` (None: all)."""
        found = await self.db.row(
            MatchCount, "instances_matching_count", **match.values(), limit=limit, now=now
        )
        assert found is not None
        return found.n

    async def instances_retry_many(
        self, *, ids: Sequence[int], now: datetime | None
    ) -> list[Verdict]:
        """`instance_retry` for each of `ids`, in one statement that waits for no row lock."""
        rows = await _page(
            lambda: self.db.rows(RetryVerdict, "instances_retry_many", ids=list(ids), now=now)
        )
        return [Verdict(r.id, r.verdict, r.status, r.holder, r.parent_id) for r in rows]

    async def instances_cancel_many(
        self, *, ids: Sequence[int], now: datetime | None
    ) -> CancelPage:
        """`instance_cancel` for each of `ids`, in one statement that waits for no row lock
        of theirs (the cascade waits for descendants, as a single cancel's does)."""
        rows = await _page(
            lambda: self.db.rows(CancelVerdict, "instances_cancel_many", ids=list(ids), now=now)
        )
        return CancelPage(
            [Verdict(r.id, r.verdict, r.status) for r in rows],
            max((r.cascaded for r in rows), default=0),
        )

    async def instance_rewind(
        self,
        *,
        id: int,
        step: str,
        state: bytes | None,
        state_version: int | None,
        max_attempts: int,
        rate_limit: str | None,
        rate_partition: str | None,
        weight: int,
        now: datetime | None,
    ) -> Rewound:
        """Restart a failed or cancelled instance at `step` (see the statement for refusals);
        `state` None keeps its stored state."""
        values = {
            "id": id,
            "step": step,
            "state": state,
            "state_version": state_version,
            "max_attempts": max_attempts,
            "rate_limit": rate_limit,
            "rate_partition": rate_partition,
            "weight": weight,
            "now": now,
        }
        try:
            row = await self.db.row(Rewound, "instance_rewind", **values)
        except asyncpg.UniqueViolationError:
            # A start took the key after this statement's snapshot (the unique index waited
            # for it to commit); run again, so the statement sees and names the holder.
            row = await self.db.row(Rewound, "instance_rewind", **values)
        assert row is not None
        return row


async def _page(run: Callable[[], Awaitable[list[R]]]) -> list[R]:
    """Run a page statement, again when it was a deadlock's victim (rolled back whole) or
    when a start took the key of a row it put back after its snapshot (the unique index
    refused the page: the next run sees the holder)."""
    for attempt in range(DEADLOCK_RETRIES + 1):
        try:
            return await run()
        except (asyncpg.DeadlockDetectedError, asyncpg.UniqueViolationError):
            if attempt == DEADLOCK_RETRIES:
                raise
    raise AssertionError("unreachable")
