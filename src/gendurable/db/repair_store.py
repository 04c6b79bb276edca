"""Database access for the repairs of many instances and for rewinds (`sql/bulk.sql`,
`sql/rewind.sql`), over the Store's pool.

One typed method per named statement, as in the Store. None of the writers is repeated
through a connection failure once sent (a repeat would report rows it changed the first
time as no longer matching); a page chosen as a deadlock's victim, rolled back whole, is
run again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from .store import Store

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

    def args(self) -> tuple[Any, ...]:
        """The filter as the statements' first seven parameters."""
        return (
            self.workflow,
            list(self.statuses),
            self.step,
            self.error_contains,
            self.since,
            self.key_prefix,
            self.queue,
        )


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


@dataclass(frozen=True, slots=True)
class Rewound:
    """The answer of `instance_rewind`: `rewound` (the id) when it went back to `step`;
    otherwise `status` (None: no such row), `holder` and `parent_id` say why not."""

    status: str | None
    holder: int | None
    parent_id: int | None
    rewound: int | None
    step: str | None


class RepairStore:
    """Bulk repairs and rewinds of one schema, through `store`'s pool."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def instances_matching(
        self, match: Match, *, after: int, limit: int, now: datetime | None
    ) -> list[int]:
        """The next `limit` ids above `after`, ascending, of the instances `match` selects."""
        rows = await self.store._run(
            "fetch", "instances_matching", *match.args(), after, limit, now
        )
        return [int(r["id"]) for r in rows]

    async def instances_matching_count(
        self, match: Match, *, limit: int | None, now: datetime | None
    ) -> int:
        """How many instances `match` selects, counting up to `limit` (None: all)."""
        row = await self.store._run(
            "fetchrow", "instances_matching_count", *match.args(), limit, now
        )
        return int(row["n"])

    async def instances_retry_many(self, ids: Sequence[int], now: datetime | None) -> list[Verdict]:
        """`instance_retry` for each of `ids`, in one statement that waits for no row lock."""
        rows = await self._page("instances_retry_many", ids, now)
        return [
            Verdict(r["id"], r["verdict"], r["status"], r["holder"], r["parent_id"]) for r in rows
        ]

    async def instances_cancel_many(self, ids: Sequence[int], now: datetime | None) -> CancelPage:
        """`instance_cancel` for each of `ids`, in one statement that waits for no row lock
        of theirs (the cascade waits for descendants, as a single cancel's does)."""
        rows = await self._page("instances_cancel_many", ids, now)
        return CancelPage(
            [Verdict(r["id"], r["verdict"], r["status"]) for r in rows],
            max((int(r["cascaded"]) for r in rows), default=0),
        )

    async def instance_rewind(
        self,
        id: int,
        *,
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
        args = (
            id,
            now,
            self.store.channel,
            step,
            state,
            state_version,
            max_attempts,
            rate_limit,
            rate_partition,
            weight,
        )
        try:
            row = await self._write("fetchrow", "instance_rewind", *args)
        except asyncpg.UniqueViolationError:
            # A start took the key after this statement's snapshot (the unique index waited
            # for it to commit); run again, so the statement sees and names the holder.
            row = await self._write("fetchrow", "instance_rewind", *args)
        assert row is not None
        return Rewound(row["status"], row["holder"], row["parent_id"], row["rewound"], row["step"])

    async def _page(
        self, name: str, ids: Sequence[int], now: datetime | None
    ) -> list[asyncpg.Record]:
        """Run a page statement, again when it was a deadlock's victim (rolled back whole)
        or when a start took the key of a row it put back after its snapshot (the unique
        index refused the page: the next run sees the holder)."""
        for attempt in range(DEADLOCK_RETRIES + 1):
            try:
                rows: list[asyncpg.Record] = await self._write(
                    "fetch", name, list(ids), now, self.store.channel
                )
                return rows
            except (asyncpg.DeadlockDetectedError, asyncpg.UniqueViolationError):
                if attempt == DEADLOCK_RETRIES:
                    raise
        raise AssertionError("unreachable")

    async def _write(self, method: str, name: str, *args: Any) -> Any:
        """Run writer `name`, repeated through a connection failure only when it was never
        sent."""
        sql, timeout = self.store.sql[name], self.store.timeout

        async def once(conn: Any) -> Any:
            return await getattr(conn, method)(sql, *args, timeout=timeout)

        return await self.store._retrying(once, idempotent=False)
