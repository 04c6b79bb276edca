"""Database access for queue pauses (`sql/queues.sql`), over the Store's pool.

One typed method per named statement, as in the Store. Each is safe to repeat through a
connection failure: a pause repeated finds the queue paused (and keeps the first pause), a
resume repeated finds nothing to resume (and says it was not paused).
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from .store import Store


class QueueStore:
    """The paused queues of one schema, through `store`'s pool and retry policy."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def queue_pause(self, queue: str, by: str, now: datetime | None) -> asyncpg.Record:
        """Pause `queue` for every engine; the pause (`paused`: False if it was paused
        already, then with its first `paused_at` and `paused_by`). Returns once no
        statement that missed the pause is still starting steps of the queue."""
        row: asyncpg.Record | None = await self.store._run(
            "fetchrow", "queue_pause", queue, by, now, self.store.channel
        )
        assert row is not None
        return row

    async def queue_resume(self, queue: str) -> asyncpg.Record | None:
        """Resume `queue`; the pause it ended, or None when it was not paused."""
        row: asyncpg.Record | None = await self.store._run(
            "fetchrow", "queue_resume", queue, self.store.channel
        )
        return row

    async def queue_pauses(self) -> list[asyncpg.Record]:
        """Every paused queue (`queue`, `paused_at`, `paused_by`), in name order."""
        return list(await self.store._run("fetch", "queue_pauses"))
