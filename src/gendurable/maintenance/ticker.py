"""The ticker: starts the instances of due schedule ticks, once each across all engines.

Every engine with queues runs one. At start it declares its schedules (`declare()`); each
`run_once()` then, in order:

1. refreshes its schedules (at most once per `REFRESH`), so that they count as declared;
2. disables the schedules no running engine refreshed for `GRACE` (never one that some
   engine declares: that one is refreshed many times within the grace period);
3. in one transaction per batch, locks its due schedules (ordered `FOR UPDATE SKIP LOCKED`),
   inserts one instance per tick to start (keyed `"<name>@<tick>"`, the key reserved in
   every status) and moves each schedule past now.

Which ticks start follows each schedule's `missed`: `"skip"` the latest due tick if it came
due no more than `ON_TIME` ago, `"latest"` the latest due tick, `"all"` the latest
`catch_up` due ticks. A tick whose state cannot be made (the `state=` callable raised, or
its value does not fit the workflow's `State`) is skipped, logged and reported as
`schedule.failed`; the schedule goes on with its next tick.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec

from ..clock import Clock
from ..codec import check_size
from ..db.rows import DueSchedule
from ..db.schedule_store import Advance, ScheduleStore, TickPlan
from ..entries import NewRow, columns, new_row
from ..errors import NoTarget
from ..events import SCHEDULE_DISABLED, SCHEDULE_FAILED, SCHEDULE_SKIPPED, SCHEDULE_STARTED
from ..outcome import ChildEntry
from ..records import ALL_STATUSES
from ..schedule import ON_TIME, Schedule
from ..telemetry import Telemetry
from .loop import observed

GRACE = timedelta(minutes=10)
"""A schedule no running engine refreshed for this long is disabled: no engine declares it."""

REFRESH = GRACE / 10
"""How often engines mark the schedules they declare as still declared."""

SKIPPED_COUNT_CAP = 1000
"""`schedule.skipped` counts the ticks it skipped up to this many."""

_log = logging.getLogger("gendurable.schedules")


@dataclass(frozen=True, slots=True)
class TickReport:
    """What one `run_once()` did."""

    started: int
    skipped: int
    failed: int
    disabled: int

    @property
    def rows(self) -> int:
        """Instances it started and schedules it disabled."""
        return self.started + self.disabled


@dataclass(slots=True)
class _Counts:
    started: int = 0
    skipped: int = 0
    failed: int = 0


class Ticker:
    """Declares one engine's schedules and starts their due ticks."""

    def __init__(
        self,
        store: ScheduleStore,
        clock: Clock,
        telemetry: Telemetry,
        schedules: Sequence[Schedule],
        *,
        node: str,
        max_payload_bytes: int,
        batch: int = 100,
    ) -> None:
        self.store = store
        self.clock = clock
        self.telemetry = telemetry
        self.schedules: Mapping[str, Schedule] = {s.name: s for s in schedules}
        self.node = node
        self.max_payload_bytes = max_payload_bytes
        self.batch = batch
        self.started_total = 0
        self._names = list(self.schedules)
        self._specs = [msgspec.json.encode(s.definition()) for s in self.schedules.values()]

    async def declare(self) -> None:
        """Record this engine's schedules (at start); log the ones it changed or revived."""
        if not self.schedules:
            return
        rows = await self.store.schedule_declare(
            names=self._names,
            workflows=[s.workflow for s in self.schedules.values()],
            specs=self._specs,
            node=self.node,
            now=self.clock.now(),
        )
        fresh = [r for r in rows if r.fresh]
        if fresh:
            await self.store.schedule_first(
                names=[r.name for r in fresh],
                declared=[r.next_at for r in fresh],
                first_ats=[self.schedules[r.name].next_after(r.now) for r in fresh],
            )
        for row in rows:
            schedule = self.schedules[row.name]
            previous = row.previous
            if previous is None:
                _log.info("schedule %r declared: %s", schedule.name, schedule.describe())
            elif msgspec.json.decode(previous) != schedule.definition() or (
                row.previous_workflow != schedule.workflow
            ):
                _log.warning(
                    "schedule %r changed to %s, starting %s; it starts from now",
                    schedule.name,
                    schedule.describe(),
                    schedule.workflow,
                )
            elif row.was_disabled_at is not None:
                _log.info(
                    "schedule %r is declared again (disabled since %s)",
                    schedule.name,
                    row.was_disabled_at,
                )

    async def set_paused(self, name: str, paused: bool) -> None:
        """Pause (or resume, from now) schedule `name` for every engine, durably; `NoTarget`
        when no engine ever declared such a schedule."""
        row = await self.store.schedule_pause(name=name, paused=paused, now=self.clock.now())
        if row is None:
            raise NoTarget(f"no schedule named {name!r} in schema {self.store.db.schema!r}")

    async def run_once(self, *, upkeep: bool = True) -> TickReport:
        """Refresh and disable (with `upkeep`), then start every due tick, batch by batch.

        Reported as the `maintenance.run` (or `.exception`) of task `schedules`.
        """
        with observed(self.telemetry, "schedules") as run:
            disabled = await self._upkeep() if upkeep else 0
            counts = _Counts()
            while self.schedules:
                work = await self._tick_batch(counts)
                if len(work.advances) < self.batch:
                    break
            report = TickReport(counts.started, counts.skipped, counts.failed, disabled)
            run.rows = report.rows
            return report

    async def _upkeep(self) -> int:
        now = self.clock.now()
        if self.schedules:
            await self.store.schedule_refresh(
                names=self._names, node=self.node, every=REFRESH, now=now
            )
        disabled = 0
        while True:
            rows = await self.store.schedule_disable(now=now, grace=GRACE, limit=self.batch)
            for row in rows:
                _log.warning(
                    "schedule %r (workflow %s) is disabled: no running engine declared it since %s",
                    row.name,
                    row.workflow,
                    row.refreshed_at,
                )
                self.telemetry.emit(
                    SCHEDULE_DISABLED,
                    {},
                    {
                        "schedule": row.name,
                        "workflow": row.workflow,
                        "refreshed_at": row.refreshed_at,
                    },
                )
            disabled += len(rows)
            if len(rows) < self.batch:
                return disabled

    async def _tick_batch(self, counts: _Counts) -> TickPlan:
        planned = _Planned()

        def plan(due: list[DueSchedule]) -> TickPlan:
            planned.clear()  # a transaction retried after a lost connection plans again
            rows: list[NewRow] = []
            advances: list[Advance] = []
            for item in due:
                advance, made = self._plan_one(item, planned)
                advances.append(advance)
                rows += made
            return TickPlan(columns=columns(rows), advances=advances)

        work, started = await self.store.tick(
            names=self._names, specs=self._specs, now=self.clock.now(), limit=self.batch, plan=plan
        )
        for count, metadata in planned.skipped:
            counts.skipped += count
            self.telemetry.emit(SCHEDULE_SKIPPED, {"count": count}, metadata)
        for metadata in planned.failed:
            counts.failed += 1
            self.telemetry.emit(SCHEDULE_FAILED, {}, metadata)
        for late, metadata in planned.started:
            made = started.get((metadata["workflow"], metadata["key"]))
            if made is None or not made.created:  # the tick's key was held already
                continue
            counts.started += 1
            self.started_total += 1
            self.telemetry.emit(SCHEDULE_STARTED, {"late": late}, {**metadata, "id": made.id})
        return work

    def _plan_one(self, due: DueSchedule, planned: _Planned) -> tuple[Advance, list[NewRow]]:
        """The ticks of one held schedule to start, as rows, and where it goes next."""
        schedule = self.schedules[due.name]
        now = due.now
        limit = schedule.catch_up if schedule.missed == "all" else 1
        ticks = schedule.due(due.next_at, now, limit)
        if schedule.missed == "skip" and ticks and now - ticks[-1] > ON_TIME:
            ticks = []
        skipped_until = ticks[0] - timedelta(microseconds=1) if ticks else now
        skipped = schedule.count_between(due.next_at, skipped_until, SKIPPED_COUNT_CAP)
        if skipped:
            planned.skipped.append(
                (
                    skipped,
                    {
                        "schedule": schedule.name,
                        "workflow": schedule.workflow,
                        "since": due.next_at,
                        "until": skipped_until,
                        "missed": schedule.missed,
                    },
                )
            )
        rows: list[NewRow] = []
        last: tuple[datetime, tuple[str, str]] | None = None
        for tick in ticks:
            key = schedule.key(tick)
            meta = {
                "schedule": schedule.name,
                "workflow": schedule.workflow,
                "tick": tick,
                "key": key,
            }
            try:
                row = new_row(
                    schedule.spec,
                    ChildEntry(
                        schedule.workflow, key, schedule.state_for(tick), scope=ALL_STATUSES
                    ),
                )
                check_size(row.state, self.max_payload_bytes, f"{schedule.workflow} state")
            except Exception as exc:
                _log.error(
                    "schedule %r: no instance for tick %s: its state could not be made: %s: %s",
                    schedule.name,
                    tick.isoformat(),
                    type(exc).__name__,
                    exc,
                )
                planned.failed.append({**meta, "error": exc})
                continue
            rows.append(row)
            last = (tick, (schedule.workflow, key))
            planned.started.append(((now - tick).total_seconds(), meta))
        advance = Advance(
            schedule.name,
            schedule.next_after(now),
            last[0] if last else None,
            last[1] if last else None,
        )
        return advance, rows


@dataclass(slots=True)
class _Planned:
    """The events a tick transaction will report once it committed."""

    started: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    skipped: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)

    def clear(self) -> None:
        self.started.clear()
        self.skipped.clear()
        self.failed.clear()
