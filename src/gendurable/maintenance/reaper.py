"""The reaper: returns expired claims and wakes awaits past their deadline.

It runs on every node; its statements take rows with ordered `FOR UPDATE SKIP LOCKED` in
bounded batches, so any number of reapers run at once without blocking one another.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..clock import Clock
from ..db.maintenance_store import MaintenanceStore
from ..events import AWAIT_TIMEOUT, REAPER_RESCUED
from ..telemetry import Telemetry
from .loop import observed


@dataclass(frozen=True, slots=True)
class ReapReport:
    """What one `run_once()` did."""

    rescued: int
    failed: int
    timed_out: int

    @property
    def rows(self) -> int:
        """Instances it changed."""
        return self.rescued + self.failed + self.timed_out


class Reaper:
    """Rescues expired claims and resolves await timeouts for one schema."""

    def __init__(
        self, store: MaintenanceStore, clock: Clock, telemetry: Telemetry, batch: int = 500
    ) -> None:
        self.store = store
        self.clock = clock
        self.telemetry = telemetry
        self.batch = batch

    async def run_once(self) -> ReapReport:
        """Process every expired claim and passed deadline, one bounded batch at a time.

        Reported as the `maintenance.run` (or `.exception`) of task `reaper`.
        """
        with observed(self.telemetry, "reaper") as run:
            report = await self._reap()
            run.rows = report.rows
            return report

    async def _reap(self) -> ReapReport:
        rescued = failed = timed_out = 0
        while True:
            rescues = await self.store.lease_rescue(now=self.clock.now(), limit=self.batch)
            for row in rescues:
                status = row.status
                failed += status == "failed"
                rescued += status != "failed"
                self.telemetry.emit(
                    REAPER_RESCUED,
                    {"attempt": row.attempt},
                    {
                        "id": row.id,
                        "workflow": row.workflow,
                        "step": row.step,
                        "queue": row.queue,
                        "status": status,
                    },
                )
            if len(rescues) < self.batch:
                break
        while True:
            expired = await self.store.await_expire(now=self.clock.now(), limit=self.batch)
            for woken in expired:
                timed_out += 1
                self.telemetry.emit(
                    AWAIT_TIMEOUT,
                    {},
                    {
                        "id": woken.id,
                        "workflow": woken.workflow,
                        "step": woken.step,
                        "key": woken.key,
                        "queue": woken.queue,
                    },
                )
            if len(expired) < self.batch:
                break
        return ReapReport(rescued, failed, timed_out)
