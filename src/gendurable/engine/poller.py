"""The safety net under notifications: one statement per poll interval for all queues.

Schedulers claim when woken: by a notification, by a freed slot while their queue holds more,
by a timer for rows they deferred. What no notification announces (a row whose `run_at` or
backoff came due, work announced while the listener was reconnecting, or every row when the
engine does not listen) is found here: every `poll_interval` one statement asks which of the
engine's queues hold due rows, and wakes their schedulers. An idle engine so sends one
statement a poll interval, however many queues it runs.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..clock import Clock
from ..db.store import Store
from .scheduler import Scheduler


class Poller:
    """Wakes the schedulers whose queue holds due rows."""

    def __init__(self, store: Store, clock: Clock, schedulers: Mapping[str, Scheduler]) -> None:
        self.store = store
        self.clock = clock
        self.schedulers = schedulers

    async def run_once(self) -> list[str]:
        """Ask once which queues hold due rows; wake their schedulers; those queues."""
        queues = [q for q, s in self.schedulers.items() if s.claiming]
        if not queues:
            return []
        due = await self.store.queues_due(queues, self.clock.now())
        for queue in due:
            self.schedulers[queue].wake()
        return due
