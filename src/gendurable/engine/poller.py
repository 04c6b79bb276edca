"""The safety net under notifications: one statement per poll interval for all queues.

Schedulers claim when woken: by a notification, by a freed slot while their queue holds more,
by a timer for rows they deferred. What no notification announces (a row whose `run_at` or
backoff came due, work announced while the listener was reconnecting, or every row when the
engine does not listen) is found here: every `poll_interval` one statement asks which of the
engine's queues hold due rows, and wakes their schedulers. An idle engine so sends one
statement a poll interval, however many queues it runs. The same statement says which of
them are paused (`Pauses.sync`): a pause or resume whose notification did not reach the
engine is known within a poll interval.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..clock import Clock
from ..db.engine_store import EngineStore
from ..maintenance.loop import observed
from ..telemetry import Telemetry
from .pauses import Pauses
from .scheduler import Scheduler


class Poller:
    """Wakes the schedulers whose queue holds due rows."""

    def __init__(
        self,
        store: EngineStore,
        clock: Clock,
        schedulers: Mapping[str, Scheduler],
        telemetry: Telemetry | None = None,
        pauses: Pauses | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.schedulers = schedulers
        self.telemetry = telemetry or Telemetry()
        self.pauses = pauses

    async def run_once(self) -> list[str]:
        """Ask once which queues hold due rows; wake their schedulers; those queues.

        Reported as the `maintenance.run` (or `.exception`) of task `poller`, whose `rows`
        counts the queues it woke.
        """
        with observed(self.telemetry, "poller") as run:
            due = await self._poll()
            run.rows = len(due)
            return due

    async def _poll(self) -> list[str]:
        queues = [q for q, s in self.schedulers.items() if s.claiming]
        if not queues:
            return []
        due, paused = await self.store.queues_due(queues=queues, now=self.clock.now())
        if self.pauses is not None:
            self.pauses.sync(paused, queues)
        for queue in due:
            self.schedulers[queue].wake()
        return due
