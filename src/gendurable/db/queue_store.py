"""The queue pauses' statements (`sql/queues.sql`).

One method per named statement, with keyword arguments and typed rows (`db/rows.py`). Each
is safe to repeat through a connection failure: a pause repeated finds the queue paused (and
keeps the first pause), a resume repeated finds nothing to resume (and says it was not
paused).
"""

from __future__ import annotations

from datetime import datetime

from .pool import Database
from .rows import QueuePaused, QueueResumed, StoredPause


class QueueStore:
    """The paused queues of one schema, through `db`'s pool and retry policy."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def queue_pause(self, *, queue: str, by: str, now: datetime | None) -> QueuePaused:
        """Pause `queue` for every engine; the pause (`paused`: False if it was paused
        already, then with its first `paused_at` and `paused_by`). Returns once no
        statement that missed the pause is still starting steps of the queue."""
        row = await self.db.row(QueuePaused, "queue_pause", queue=queue, by=by, now=now)
        assert row is not None
        return row

    async def queue_resume(self, *, queue: str) -> QueueResumed | None:
        """Resume `queue`; the pause it ended, or None when it was not paused."""
        return await self.db.row(QueueResumed, "queue_resume", queue=queue)

    async def queue_pauses(self) -> list[StoredPause]:
        """Every paused queue, in name order."""
        return await self.db.rows(StoredPause, "queue_pauses")
