"""Shared by the schedule tests: the workflow they schedule and SQL views of the rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec

import gendurable as gd


@gd.workflow(name="sched.nightly")
class Nightly:
    """Records the tick it was started for, and ends."""

    class State(msgspec.Struct):
        day: str = ""

    @gd.step(start=True)
    async def run(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done({"day": state.day, "key": ctx.key})


def day_of(tick: datetime) -> Nightly.State:
    """The state of a tick's instance: its date."""
    return Nightly.State(day=tick.date().isoformat())


class Rows:
    """Plain-SQL views of the test schema's instances and schedules."""

    def __init__(self, db: asyncpg.Connection, schema: str) -> None:
        self.db = db
        self.schema = schema

    async def keys(self, workflow: str = "sched.nightly") -> list[str]:
        """The keys of the workflow's instances, in id order."""
        rows = await self.db.fetch(
            f'SELECT key FROM "{self.schema}".instances WHERE workflow = $1 ORDER BY id',
            workflow,
        )
        return [r["key"] for r in rows]

    async def instances(self, workflow: str = "sched.nightly") -> list[dict[str, Any]]:
        """id, key, status and state of the workflow's instances, in id order."""
        rows = await self.db.fetch(
            f"SELECT id, key, status::text AS status, state::text AS state "
            f'FROM "{self.schema}".instances WHERE workflow = $1 ORDER BY id',
            workflow,
        )
        return [dict(r) for r in rows]

    async def schedule(self, name: str) -> dict[str, Any]:
        """The schedule's row."""
        row = await self.db.fetchrow(
            f'SELECT * FROM "{self.schema}".schedules WHERE name = $1', name
        )
        assert row is not None, f"no schedule {name!r}"
        return dict(row)
