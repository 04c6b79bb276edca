"""Database access for schedules (`sql/schedules.sql`), over the Store's pool.

One typed method per named statement, as in the Store, and `tick`: the one transaction that
claims due schedules, starts their ticks' instances (through `instance_insert_many`, the
path every batch start takes) and advances them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from .store import Store


@dataclass(frozen=True, slots=True)
class Due:
    """A schedule the tick transaction holds: its first unhandled instant, and the
    database's `now` (ticks are computed against it)."""

    name: str
    next_at: datetime
    now: datetime


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
    """What the tick transaction writes: the instances (as `instance_insert_many`'s
    columns with each row's workflow version) and each schedule's advance."""

    columns: list[list[Any]]
    versions: list[int]
    advances: list[Advance]
    trace_context: str | None = None


@dataclass(frozen=True, slots=True)
class Started:
    """One tick's instance: its id, and whether this transaction created it (False: an
    instance with the tick's key existed already)."""

    id: int
    created: bool


class ScheduleStore:
    """The schedules of one schema, through `store`'s pool and retry policy."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def schedule_declare(
        self,
        names: Sequence[str],
        workflows: Sequence[str],
        specs: Sequence[bytes],
        node: str,
        now: datetime | None,
    ) -> list[asyncpg.Record]:
        """Insert or update the schedules of an engine; each with the definition it held."""
        return list(
            await self.store._run(
                "fetch",
                "schedule_declare",
                list(names),
                list(workflows),
                list(specs),
                node,
                now,
            )
        )

    async def schedule_first(
        self, names: Sequence[str], declared: Sequence[datetime], first: Sequence[datetime]
    ) -> None:
        """Set the first tick of schedules still as their declaration left them."""
        await self.store._run("execute", "schedule_first", list(names), list(declared), list(first))

    async def schedule_refresh(
        self, names: Sequence[str], node: str, every: timedelta, now: datetime | None
    ) -> list[str]:
        """Mark `names` still declared (at most once per `every`); the names refreshed."""
        rows = await self.store._run("fetch", "schedule_refresh", list(names), node, every, now)
        return [r["name"] for r in rows]

    async def schedule_disable(
        self, now: datetime | None, grace: timedelta, limit: int
    ) -> list[asyncpg.Record]:
        """Disable up to `limit` schedules nobody refreshed for `grace`; the rows disabled."""
        return list(await self.store._run("fetch", "schedule_disable", now, grace, limit))

    async def schedule_pause(
        self, name: str, paused: bool, now: datetime | None
    ) -> asyncpg.Record | None:
        """Pause or resume one schedule; None when there is no schedule `name`."""
        row: asyncpg.Record | None = await self.store._run(
            "fetchrow", "schedule_pause", name, paused, now
        )
        return row

    async def schedules_list(self, workflow: str | None = None) -> list[asyncpg.Record]:
        """Every schedule (of `workflow`), with its last tick's instance key and status."""
        return list(await self.store._run("fetch", "schedules_list", workflow))

    async def tick(
        self,
        names: Sequence[str],
        specs: Sequence[bytes],
        now: datetime | None,
        limit: int,
        plan: Callable[[list[Due]], TickPlan],
    ) -> tuple[TickPlan, dict[tuple[str, str], Started]]:
        """In one transaction: lock up to `limit` due schedules among `names` (whose stored
        definitions are `specs`), ask `plan` what to write, insert the instances and advance
        the schedules. The plan, and each of its instances by (workflow, key).

        Retried whole through connection failures: a transaction that committed (its answer
        lost) left its schedules advanced, so the repeat finds them no longer due, and the
        ticks' keys are reserved for good, so no repeat can start a tick twice.
        """
        sql, timeout, channel = self.store.sql, self.store.timeout, self.store.channel

        async def run(conn: Any) -> tuple[TickPlan, dict[tuple[str, str], Started]]:
            async with conn.transaction():
                rows = await conn.fetch(
                    sql["schedule_claim_due"],
                    now,
                    list(names),
                    list(specs),
                    limit,
                    timeout=timeout,
                )
                work = plan([Due(r["name"], r["next_at"], r["now"]) for r in rows])
                started: dict[tuple[str, str], Started] = {}
                if work.versions:
                    inserted = await conn.fetch(
                        sql["instance_insert_many"],
                        *work.columns,
                        None,
                        now,
                        channel,
                        work.trace_context,
                        work.versions,
                        timeout=timeout,
                    )
                    for r in inserted:
                        started[(r["workflow"], r["key"])] = Started(int(r["id"]), True)
                held = [
                    a.last_key
                    for a in work.advances
                    if a.last_key is not None and a.last_key not in started
                ]
                if held:
                    holders = await conn.fetch(
                        sql["instances_holding_keys"],
                        [w for w, _ in held],
                        [k for _, k in held],
                        timeout=timeout,
                    )
                    for r in holders:
                        started[(r["workflow"], r["key"])] = Started(int(r["id"]), False)
                if work.advances:
                    await conn.execute(
                        sql["schedule_advance"],
                        [a.name for a in work.advances],
                        [a.next_at for a in work.advances],
                        [a.last_at for a in work.advances],
                        [
                            started[a.last_key].id
                            if a.last_key is not None and a.last_key in started
                            else None
                            for a in work.advances
                        ],
                        now,
                        timeout=timeout,
                    )
                return work, started

        result: tuple[TickPlan, dict[tuple[str, str], Started]] = await self.store._retrying(
            run, idempotent=True
        )
        return result
