"""The schedules' statements (`sql/schedules.sql`): declared by engines, advanced by their
tickers, listed and paused by operators.

One method per named statement, with keyword arguments and typed rows (`db/rows.py`), and
`tick`: the one transaction that claims due schedules, starts their ticks' instances (through
`instance_insert_many`, the path every batch start takes) and advances them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..entries import InstanceColumns
from .pool import Database
from .rows import (
    CreatedInstance,
    DeclaredSchedule,
    DisabledSchedule,
    DueSchedule,
    KeyHolder,
    PausedSchedule,
    StoredSchedule,
)


@dataclass(frozen=True, slots=True)
class Advance:
    """Where one held schedule goes: its next tick, and the last tick started (if any)
    with the (workflow, key) of that tick's instance."""

    name: str
    next_at: datetime
    last_at: datetime | None = None
    last_key: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class TickPlan:
    """What the tick transaction writes: the instances (`instance_insert_many`'s columns)
    and each schedule's advance."""

    columns: InstanceColumns
    advances: list[Advance]
    trace_context: str | None = None


@dataclass(frozen=True, slots=True)
class Started:
    """One tick's instance: its id, and whether this transaction created it (False: an
    instance with the tick's key existed already)."""

    id: int
    created: bool


class ScheduleStore:
    """The schedules of one schema, through `db`'s pool and retry policy."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def schedule_declare(
        self,
        *,
        names: Sequence[str],
        workflows: Sequence[str],
        specs: Sequence[bytes],
        node: str,
        now: datetime | None,
    ) -> list[DeclaredSchedule]:
        """Insert or update the schedules of an engine; each with the definition it held."""
        return await self.db.rows(
            DeclaredSchedule,
            "schedule_declare",
            names=list(names),
            workflows=list(workflows),
            specs=list(specs),
            node=node,
            now=now,
        )

    async def schedule_first(
        self,
        *,
        names: Sequence[str],
        declared: Sequence[datetime],
        first_ats: Sequence[datetime],
    ) -> None:
        """Set the first tick of schedules still as their declaration left them."""
        await self.db.execute(
            "schedule_first",
            names=list(names),
            declared=list(declared),
            first_ats=list(first_ats),
        )

    async def schedule_refresh(
        self, *, names: Sequence[str], node: str, every: timedelta, now: datetime | None
    ) -> list[str]:
        """Mark `names` still declared (at most once per `every`); the names refreshed."""
        return await self.db.column(
            "schedule_refresh", names=list(names), node=node, every=every, now=now
        )

    async def schedule_disable(
        self, *, now: datetime | None, grace: timedelta, limit: int
    ) -> list[DisabledSchedule]:
        """Disable up to `limit` schedules nobody refreshed for `grace`; the rows disabled."""
        return await self.db.rows(
            DisabledSchedule, "schedule_disable", now=now, grace=grace, limit=limit
        )

    async def schedule_pause(
        self, *, name: str, paused: bool, now: datetime | None
    ) -> PausedSchedule | None:
        """Pause or resume one schedule; None when there is no schedule `name`."""
        return await self.db.row(
            PausedSchedule, "schedule_pause", name=name, paused=paused, now=now
        )

    async def schedules_list(self, *, workflow: str | None = None) -> list[StoredSchedule]:
        """Every schedule (of `workflow`), with its last tick's instance key and status."""
        return await self.db.rows(StoredSchedule, "schedules_list", workflow=workflow)

    async def tick(
        self,
        *,
        names: Sequence[str],
        specs: Sequence[bytes],
        now: datetime | None,
        limit: int,
        plan: Callable[[list[DueSchedule]], TickPlan],
    ) -> tuple[TickPlan, dict[tuple[str, str], Started]]:
        """In one transaction: lock up to `limit` due schedules among `names` (whose stored
        definitions are `specs`), ask `plan` what to write, insert the instances and advance
        the schedules. The plan, and each of its instances by (workflow, key).

        Retried whole through connection failures: a transaction that committed (its answer
        lost) left its schedules advanced, so the repeat finds them no longer due, and the
        ticks' keys are reserved for good, so no repeat can start a tick twice.
        """
        sql, timeout = self.db.sql, self.db.timeout
        claim, insert, holding, advance = (
            sql["schedule_claim_due"],
            sql["instance_insert_many"],
            sql["instances_holding_keys"],
            sql["schedule_advance"],
        )

        async def run(conn: Any) -> tuple[TickPlan, dict[tuple[str, str], Started]]:
            async with conn.transaction():
                due = [
                    DueSchedule(*r)
                    for r in await conn.fetch(
                        claim.sql,
                        *claim.args(names=list(names), specs=list(specs), limit=limit, now=now),
                        timeout=timeout,
                    )
                ]
                work = plan(due)
                started: dict[tuple[str, str], Started] = {}
                if work.columns["states"]:
                    for r in await conn.fetch(
                        insert.sql,
                        *insert.args(
                            **work.columns,
                            parent_id=None,
                            now=now,
                            trace_context=work.trace_context,
                        ),
                        timeout=timeout,
                    ):
                        created = CreatedInstance(*r)
                        assert created.key is not None  # every tick's instance is keyed
                        started[(created.workflow, created.key)] = Started(created.id, True)
                held = [
                    a.last_key
                    for a in work.advances
                    if a.last_key is not None and a.last_key not in started
                ]
                if held:
                    for r in await conn.fetch(
                        holding.sql,
                        *holding.args(workflows=[w for w, _ in held], keys=[k for _, k in held]),
                        timeout=timeout,
                    ):
                        holder = KeyHolder(*r)
                        started[(holder.workflow, holder.key)] = Started(holder.id, False)
                if work.advances:
                    await conn.execute(
                        advance.sql,
                        *advance.args(
                            names=[a.name for a in work.advances],
                            next_ats=[a.next_at for a in work.advances],
                            last_ats=[a.last_at for a in work.advances],
                            instance_ids=[
                                started[a.last_key].id
                                if a.last_key is not None and a.last_key in started
                                else None
                                for a in work.advances
                            ],
                            now=now,
                        ),
                        timeout=timeout,
                    )
                return work, started

        result: tuple[TickPlan, dict[tuple[str, str], Started]] = await self.db.retrying(
            run, idempotent=True
        )
        return result
