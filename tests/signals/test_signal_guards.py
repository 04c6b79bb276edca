"""The guards of signal delivery and await deadlines, each pinned by the case it exists for.

Statements are played by hand on a client-only engine, in transactions the test opens, so
that each interleaving happens exactly as written (DESIGN §8, lost wake-up).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from gendurable.engine.entries import NO_LIMIT
from gendurable.testing import MakeEngine

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


@gd.workflow(name="sigguards.flow")
class Flow:
    @gd.step(start=True)
    async def first(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.wait)

    @gd.step
    @gd.await_signals("go", timeout=HOUR)
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.later)

    @gd.step
    @gd.await_signals("later")
    async def later(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


class Rig:
    def __init__(self, engine: gd.Engine, db: asyncpg.Connection, schema: str) -> None:
        self.engine = engine
        self.store = engine.store
        self.db = db
        self.schema = schema

    @property
    def now(self) -> Any:
        return self.engine.clock.now()

    async def claim(self, locked_by: str, step: str, lease: timedelta = DAY) -> list[int]:
        rows = await self.store.instance_claim(
            "default", 10, locked_by, [lease], self.now, ["sigguards.flow"], [step]
        )
        return [r["id"] for r in rows if r["go"]]

    def park_args(self, id: int, locked_by: str) -> list[Any]:
        return [id, locked_by, "wait", b"null", ["go"], HOUR, 0, [], False, self.now,
                None, None, 1, False]  # fmt: skip

    async def parked(self) -> int:
        """A fresh instance parked in `wait` (by the worker "w1")."""
        id = (await Flow.start()).id
        assert await self.claim("w1", "first") == [id]
        async with self.store.pool.acquire() as conn, conn.transaction():
            assert await conn.fetchrow(self.store.sql["outcome_park"], *self.park_args(id, "w1"))
        return id

    async def deliver(self, conn: Any, id: int, name: str) -> Any:
        return await conn.fetchrow(
            self.store.sql["signal_deliver"], "sigguards.flow", id, None, name, b"null",
            self.now, self.store.channel, None,
        )  # fmt: skip

    async def row(self, id: int) -> asyncpg.Record:
        found = await self.db.fetchrow(
            "SELECT status::text AS status, step, locked_by, timed_out "
            f'FROM "{self.schema}".instances WHERE id = $1',
            id,
        )
        assert found is not None
        return found

    async def inbox(self, id: int) -> list[str]:
        rows = await self.db.fetch(
            f'SELECT name FROM "{self.schema}".signals WHERE instance_id = $1 ORDER BY id', id
        )
        return [r["name"] for r in rows]


@pytest.fixture
async def rig(make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str) -> Rig:
    return Rig(await make_engine(workflows=[Flow], queues=None), db, gendurable_schema)


async def test_a_signal_committing_after_the_parks_recheck_still_wakes_it(rig: Rig) -> None:
    # The park holds the row lock between its two statements; a delivery in a transaction
    # that commits only after the park's recheck must still wake the instance: it waits for
    # the park's lock and then sees the row awaiting.
    id = (await Flow.start()).id
    assert await rig.claim("w1", "first") == [id]
    async with rig.store.pool.acquire() as park, rig.store.pool.acquire() as send:
        park_tx, send_tx = park.transaction(), send.transaction()
        await park_tx.start()
        assert await park.fetchrow(rig.store.sql["outcome_park"], *rig.park_args(id, "w1"))
        await send_tx.start()
        delivery = asyncio.create_task(rig.deliver(send, id, "go"))
        async with asyncio.timeout(10):  # the delivery waits for the park's lock, or is done
            while not delivery.done() and not await rig.db.fetchval(  # noqa: ASYNC110 (no event for a lock wait)
                "SELECT count(*) FROM pg_locks WHERE NOT granted"
            ):
                await asyncio.sleep(0.01)
        assert await park.fetchrow(rig.store.sql["park_recheck"], id, rig.now, "x") is None
        await park_tx.commit()
        async with asyncio.timeout(10):
            delivered = await delivery
        await send_tx.commit()

    assert delivered["woke"] is True
    assert (await rig.row(id))["status"] == "available"


async def test_a_signal_never_wakes_an_executing_instance(rig: Rig) -> None:
    id = await rig.parked()
    async with rig.store.pool.acquire() as conn:
        assert (await rig.deliver(conn, id, "go"))["woke"] is True
        assert await rig.claim("w2", "wait") == [id]  # running `wait`: its awaits still set

        again = await rig.deliver(conn, id, "go")

    assert again["woke"] is False
    after = await rig.row(id)
    assert (after["status"], after["locked_by"]) == ("executing", "w2")
    assert await rig.inbox(id) == ["go", "go"]


async def test_a_signal_of_a_name_the_step_does_not_await_is_kept_without_waking(
    rig: Rig,
) -> None:
    id = await rig.parked()
    async with rig.store.pool.acquire() as conn:
        later = await rig.deliver(conn, id, "later")

    assert later["woke"] is False
    assert (await rig.row(id))["status"] == "awaiting"
    assert await rig.inbox(id) == ["later"]


async def test_an_await_deadline_never_wakes_an_instance_running_again(rig: Rig) -> None:
    id = await rig.parked()
    async with rig.store.pool.acquire() as conn:
        assert (await rig.deliver(conn, id, "go"))["woke"] is True
    assert await rig.claim("w2", "wait") == [id]
    rig.engine.clock.advance(2 * HOUR)  # type: ignore[attr-defined]
    assert rig.engine.reaper is not None

    report = await rig.engine.reaper.run_once()

    assert report.timed_out == 0
    after = await rig.row(id)
    assert (after["status"], after["locked_by"], after["timed_out"]) == ("executing", "w2", False)


async def test_a_reawait_past_its_deadline_wakes_at_once_as_timed_out(rig: Rig) -> None:
    # The deadline passed while the step ran: parking again with it wakes in the same
    # transaction, without waiting for the reaper.
    id = await rig.parked()
    async with rig.store.pool.acquire() as conn:
        seen = (await rig.deliver(conn, id, "go"))["signal_id"]
    assert await rig.claim("w2", "wait") == [id]
    rig.engine.clock.advance(2 * HOUR)  # type: ignore[attr-defined]

    parked = await rig.store.outcome_park(
        id, "w2", "wait", None, ["go"], HOUR, seen, [], True, rig.now, NO_LIMIT, True
    )

    assert parked == (True, True)  # committed, and woken by the deadline
    after = await rig.row(id)
    assert (after["status"], after["timed_out"]) == ("available", True)
