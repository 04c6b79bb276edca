"""The collector (GC): deletes what no one will read again.

- Terminal instances (`done`, `failed`, `cancelled`) that finished more than `retention` ago,
  with their inbox, except children whose parent is still live (its next step reads them).
- Rate buckets that are full again by now (the claim recreates a missing bucket full, so
  such a row holds no information) and buckets of limits no longer configured.
- Rate configs no running engine refreshed for `CONFIG_TTL`: each run first refreshes the
  configs of this engine, so a config some running engine holds is never removed.

It runs on every engine that has queues. Every statement reads one bounded batch through an
index and deletes with ordered `FOR UPDATE SKIP LOCKED`, so collectors on many nodes neither
wait on one another nor delete a row twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ..clock import Clock
from ..db.maintenance_store import MaintenanceStore
from ..events import GC_SWEPT
from ..rate_configs import RateConfigs
from ..telemetry import Telemetry
from .loop import observed

CONFIG_TTL = timedelta(days=1)
"""A rate config that no running engine refreshed for this long belongs to a limit nobody
configures any longer: the collector removes it, then its buckets."""


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one `run_once()` deleted."""

    instances: int
    buckets: int
    configs: int

    @property
    def rows(self) -> int:
        """Rows it deleted."""
        return self.instances + self.buckets + self.configs


class Collector:
    """Garbage-collects one schema; `run_once()` sweeps everything due, batch by batch."""

    def __init__(
        self,
        store: MaintenanceStore,
        clock: Clock,
        telemetry: Telemetry,
        *,
        retention: timedelta | None,
        batch: int,
        configs: RateConfigs,
    ) -> None:
        self.store = store
        self.clock = clock
        self.telemetry = telemetry
        self.retention = retention
        self.batch = batch
        self.configs = configs

    async def run_once(self) -> SweepReport:
        """Refresh this engine's configs, then sweep instances, configs and buckets.

        Emits `gc.swept` with the counts when anything was deleted; reported as the
        `maintenance.run` (or `.exception`) of task `collector`.
        """
        with observed(self.telemetry, "collector") as run:
            report = await self._collect()
            run.rows = report.rows
            return report

    async def _collect(self) -> SweepReport:
        if self.configs.limits:
            await self.store.rate_config_refresh(**self.configs.columns(), now=self.clock.now())
        instances = await self._sweep_instances() if self.retention is not None else 0
        configs = await self._sweep_configs()
        buckets = await self._sweep_buckets()  # after the configs: their buckets go now
        report = SweepReport(instances, buckets, configs)
        if instances or buckets or configs:
            self.telemetry.emit(
                GC_SWEPT,
                {"instances": instances, "buckets": buckets, "configs": configs},
                {},
            )
        return report

    async def _sweep_instances(self) -> int:
        assert self.retention is not None
        deleted = 0
        after_finished_at: datetime | None = None
        after_id: int | None = None
        while True:
            swept = await self.store.terminal_sweep(
                now=self.clock.now(),
                retention=self.retention,
                after_finished_at=after_finished_at,
                after_id=after_id,
                limit=self.batch,
            )
            deleted += swept.deleted
            if swept.scanned < self.batch:
                return deleted
            after_finished_at, after_id = swept.last_finished_at, swept.last_id

    async def _sweep_configs(self) -> int:
        deleted = 0
        while True:
            n = await self.store.rate_config_sweep(
                now=self.clock.now(), ttl=CONFIG_TTL, limit=self.batch
            )
            deleted += n
            if n < self.batch:
                return deleted

    async def _sweep_buckets(self) -> int:
        deleted = 0
        after_name: str | None = None
        after_partition: str | None = None
        while True:
            swept = await self.store.bucket_sweep(
                now=self.clock.now(),
                after_name=after_name,
                after_partition=after_partition,
                limit=self.batch,
            )
            deleted += swept.deleted
            if swept.scanned < self.batch:
                return deleted
            after_name, after_partition = swept.last_name, swept.last_partition
